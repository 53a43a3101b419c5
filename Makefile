# sparse_mlp -- build, test, benchmark.
#   make            install the Python dependencies and compile the kernels in place
#   make test       the fast test suite (what CI runs)
#   make test-slow  the slow tests too
#   make bench      kernel + epoch benchmarks with in-run baselines
# Switches: NATIVE=1 (-march=native), DEBUG=1 (Cython checks on), NO_OPENMP=1,
#           PYTHON=python3.11, NO_DEPS=1 (skip pip install)

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
BUILD_ENV = SPARSE_MLP_NATIVE=$(NATIVE) SPARSE_MLP_DEBUG=$(DEBUG) SPARSE_MLP_NO_OPENMP=$(NO_OPENMP)

.PHONY: all build deps test test-slow bench lint annotate clean

all: deps build

deps:
ifneq ($(NO_DEPS),1)
	$(PIP) install --quiet --disable-pip-version-check -r requirements.txt
endif

build:
	$(BUILD_ENV) $(PYTHON) setup.py --quiet build_ext --inplace

test: build
	$(PYTHON) -m pytest -q

test-slow: build
	$(PYTHON) -m pytest -q -m "slow or not slow"

bench: build
	$(PYTHON) bench/bench_layers.py
	$(PYTHON) bench/bench_epoch.py
	$(PYTHON) bench/bench_prefetch.py

lint:
	$(PYTHON) -m ruff check sparse_mlp tests bench run_experiment.py setup.py
	cython-lint pyx/*.pyx pyx/*.pxd

annotate:
	SPARSE_MLP_ANNOTATE=1 $(PYTHON) setup.py --quiet build_ext --inplace --force
	@echo "annotated HTML written next to each pyx/*.pyx"

clean:
	rm -rf build *.egg-info sparse_mlp/*.so pyx/*.c pyx/*.html
