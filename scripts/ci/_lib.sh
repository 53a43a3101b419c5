# Shared by the CI scripts of scripts/ci (sourced, not run): a temporary work folder
# that is removed on success and kept on failure, named steps, and an environment in
# which nothing from the checkout leaks into the virtual environments they build.
#
#   NAME=roundtrip; source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"
#   step "what comes next"      # the step a failure will name
#   fail "what went wrong"      # exit 1 with that message
#   new_venv DIR                # a fresh virtual environment with an up-to-date pip
# sets REPO (the checkout), PYTHON (default python3) and WORK (the work folder).

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sparse_mlp_${NAME}.XXXXXX")
WORK=$(cd "$WORK" && pwd -P)
STEP="setup"

on_exit() {
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        rm -rf "$WORK"
    else
        echo "$NAME: FAILED at step: $STEP (exit $rc); files kept in $WORK" >&2
    fi
}
trap on_exit EXIT
step() { STEP="$*"; echo; echo "== $NAME: $STEP  [$(date +%T)]"; }
fail() { echo "$NAME: FAILED: $*" >&2; exit 1; }

unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PIP_DISABLE_PIP_VERSION_CHECK=1

new_venv() {
    "$PYTHON" -m venv "$1" || fail "cannot create a virtual environment in $1 with $PYTHON"
    "$1/bin/python" -m pip install --quiet --upgrade pip || fail "cannot upgrade pip in $1"
}
