# cython: language_level=3
# The serial build of _activation.pyx: the same source, compiled without
# OpenMP (setup.py, SERIAL_TWINS; see _spmm_serial.pyx).
include "_activation.pyx"
