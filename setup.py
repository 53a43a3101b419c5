"""Build the compiled kernels of sparse_mlp.

Every ``pyx/*.pyx`` becomes ``sparse_mlp/<name>.so``; the serial twins
(``pyx/*_serial.pyx``, which include their module's source) are always
compiled without OpenMP, for the calls that run on one thread
(``sparse_mlp.kernels.spmm_for``).  OpenMP is probed
with a tiny test program: when the compiler accepts ``-fopenmp`` the
kernels run their ``prange`` loops in parallel, otherwise the build warns
loudly and compiles the same loops serially (results are identical, because
every output row is always computed by one thread in a fixed order).

Environment switches:
  SPARSE_MLP_DEBUG=1   Cython bounds/wraparound/initialised checks on, -O0 -g
  SPARSE_MLP_NATIVE=1  add -march=native (opt-in: the default build runs on
                       any x86-64 node and picks AVX-512/AVX2 at run time)
  SPARSE_MLP_NO_OPENMP=1  build serially even if OpenMP is available
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
PYX_DIR = HERE / "pyx"
PYX_FILES = sorted(PYX_DIR.glob("*.pyx"))
if not PYX_FILES:
    # never build a package without its kernels (e.g. an sdist that lost pyx/)
    sys.exit(
        f"setup.py: no Cython sources found in {PYX_DIR} (expected pyx/*.pyx next to "
        "setup.py); the compiled kernels cannot be built. Build from a full clone or "
        "from an sdist made with `python -m build --sdist`."
    )


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _compiler() -> str:
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def probe_openmp() -> bool:
    """Compile and link a small OpenMP program; True when it works."""
    if _flag("SPARSE_MLP_NO_OPENMP"):
        return False
    src = (
        "#include <omp.h>\n"
        "int main(void) { int n = 0;\n"
        "#pragma omp parallel reduction(+:n)\n"
        "n += 1; return omp_get_max_threads() > 0 && n > 0 ? 0 : 1; }\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        c_file = Path(tmp) / "probe.c"
        c_file.write_text(src)
        cmd = [_compiler(), "-fopenmp", str(c_file), "-o", str(Path(tmp) / "probe")]
        try:
            res = subprocess.run(cmd, capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0


DEBUG = _flag("SPARSE_MLP_DEBUG")
NATIVE = _flag("SPARSE_MLP_NATIVE")
OPENMP = probe_openmp()

if not OPENMP:
    bar = "!" * 72
    sys.stderr.write(
        f"\n{bar}\nWARNING: OpenMP was not found (or SPARSE_MLP_NO_OPENMP is set).\n"
        "sparse_mlp will be built SERIALLY: results are identical, but every\n"
        "kernel uses one core. Install an OpenMP-capable compiler (gcc, or\n"
        "clang with libomp) and rebuild with `make clean && make`.\n"
        f"{bar}\n\n"
    )

compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]
compile_args += ["-std=c11", "-fno-math-errno", "-Wno-unused-function", "-Wno-unreachable-code"]
link_args = []
if NATIVE:
    compile_args.append("-march=native")
# the serial twins (Cython leaves temporaries of the absent OpenMP clauses unused)
serial_args = compile_args + ["-Wno-unused-but-set-variable"]
if OPENMP:
    compile_args.append("-fopenmp")
    link_args.append("-fopenmp")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}


def _extension(pyx: Path) -> Extension:
    """One module; a serial twin (``*_serial.pyx``) without OpenMP, and it
    depends on the source it includes."""
    serial = pyx.stem.endswith("_serial")
    parallel = OPENMP and not serial
    depends = [str(h.relative_to(HERE)) for h in PYX_DIR.glob("*.h")]
    depends += [str(h.relative_to(HERE)) for h in PYX_DIR.glob("*.pxd")]
    if serial:
        depends.append(str((PYX_DIR / (pyx.stem[: -len("_serial")] + ".pyx")).relative_to(HERE)))
    return Extension(
        f"sparse_mlp.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[str(PYX_DIR), np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                       ("SMLP_HAVE_OPENMP", "1" if parallel else "0")],
        extra_compile_args=compile_args if parallel else serial_args,
        extra_link_args=link_args if parallel else [],
        depends=depends,
    )


extensions = [_extension(pyx) for pyx in PYX_FILES]
JOBS = max(1, min(len(extensions), os.cpu_count() or 1))


class ParallelBuildExt(build_ext):
    """build_ext compiling the modules side by side, one per CPU, unless -j
    says otherwise (make, pip and `python -m build` all ask for none): _spmm,
    the largest, is compiled twice (its serial twin)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = JOBS


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        compile_time_env={"HAVE_OPENMP": OPENMP},
        annotate=_flag("SPARSE_MLP_ANNOTATE"),
        quiet=True,
        nthreads=JOBS,
    ),
)
