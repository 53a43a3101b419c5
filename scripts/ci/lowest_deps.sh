#!/usr/bin/env bash
# Do the lower bounds we declare still work? Builds and tests sparse_mlp against the
# lowest supported version of every runtime and build dependency.
#
#   scripts/ci/lowest_deps.sh            (PYTHON=python3.11 to pick the interpreter;
#                                         TESTS="tests/test_x.py ..." to pick the tests)
#
# A fresh virtual environment in a temporary folder gets exactly the lower bounds of
# requirements.txt / pyproject.toml (the newest patch release of each lowest minor), as
# wheels only (--only-binary: a bound without a wheel for this Python fails here, loudly),
# plus the lowest build requirements (Cython 3.0.8, setuptools 68). A copy of the
# checkout (without build outputs, results or data) is built in place with them
# (`setup.py build_ext --inplace`, as `make` does), the package metadata is read by
# setuptools 68, and a subset of the tests runs (kernels, gradients, training,
# checkpoints, estimators, datasets, command line: ~35 s; ~2 min in all on 2 cores).
# Every bound has a cp311 wheel; on Python 3.12+ some of these old releases have none
# (h5py 3.9, for one), and the script says so at its first step.
set -euo pipefail

NAME=lowest_deps
# shellcheck source=scripts/ci/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"  # REPO, PYTHON, WORK, step, fail, new_venv
# the lowest versions we claim to support (keep in step with requirements*.txt)
PINS=(
    "numpy==1.26.*" "scipy==1.11.*" "h5py==3.9.*" "scikit-learn==1.6.*"
    "matplotlib==3.7.*" "tqdm==4.60.*" "psutil==5.9.*" "platformdirs==3.*"
    "Cython==3.0.8" "setuptools==68.*" "pytest==7.4.*"
)
TESTS=${TESTS:-"tests/test_kernels.py tests/test_gradcheck.py tests/test_training.py
    tests/test_checkpoint.py tests/test_layout.py tests/test_estimator.py tests/test_regression.py
    tests/test_datasets.py tests/test_predict.py tests/test_growth.py tests/test_topology.py
    tests/test_weights.py tests/test_schedule.py tests/test_validation.py tests/test_augment.py
    tests/test_cli.py tests/test_run_owner.py tests/test_guards.py"}

echo "lowest_deps: repository $REPO, work folder $WORK, $("$PYTHON" --version 2>&1)"

step "virtual environment with the lower bounds (wheels only)"
new_venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install --quiet --only-binary=:all: "${PINS[@]}" \
    || fail "the lower bounds do not install as wheels on $("$PY" --version 2>&1)"
"$PY" -m pip list --format=freeze \
    | grep -iE '^(numpy|scipy|h5py|scikit-learn|matplotlib|tqdm|psutil|platformdirs|cython|setuptools|pytest)=='

step "copy of the checkout (sources only)"
mkdir -p "$WORK/src"
tar -C "$REPO" -cf - \
    --exclude=./.git --exclude=./results --exclude=./runs --exclude=./data \
    --exclude=./build --exclude=./dist --exclude=./wheelhouse --exclude=./.whl \
    --exclude=./.benchmarks --exclude=./.pytest_cache --exclude=./.ruff_cache \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' --exclude='*.html' \
    --exclude='./pyx/*.c' . | tar -C "$WORK/src" -xf - \
    || fail "cannot copy the checkout"
cd "$WORK/src"

step "metadata read by setuptools $("$PY" -c 'import setuptools; print(setuptools.__version__)')"
"$PY" - <<'EOF' || fail "setuptools cannot read pyproject.toml"
from setuptools.config.pyprojecttoml import read_configuration

project = read_configuration("pyproject.toml")["project"]
print(project["name"], project["version"], project["license"], project["scripts"])
assert project["version"] == __import__("sparse_mlp").__version__
EOF

step "build in place with Cython $("$PY" -c 'import Cython; print(Cython.__version__)') and numpy $("$PY" -c 'import numpy; print(numpy.__version__)')"
"$PY" setup.py --quiet build_ext --inplace > "$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "the in-place build failed (log: $WORK/build.log)"; }
"$PY" -c "from sparse_mlp.kernels import build_info; print(build_info())" \
    || fail "the kernels built with the lower bounds do not import"

step "tests: $(echo $TESTS)"
# shellcheck disable=SC2086  # TESTS is a list of paths
"$PY" -m pytest -q -p no:cacheprovider $TESTS || fail "tests failed with the lower bounds"

STEP="done"
echo
echo "lowest_deps: OK"
