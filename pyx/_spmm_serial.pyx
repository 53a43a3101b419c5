# cython: language_level=3
# The serial build of _spmm.pyx: the same source, compiled without OpenMP
# (setup.py, SERIAL_TWINS).  sparse_mlp.kernels.spmm_for hands it every call
# that runs on one thread, which then skips the OpenMP runtime: each parallel
# region and each barrier of libgomp ends in a futex system call even in a
# team of one (BENCHMARKS.md §2).  Same code, same arithmetic: the same bits.
include "_spmm.pyx"
