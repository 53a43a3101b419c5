"""Compare two checkpoints array by array: the resumed run's final file
against the uninterrupted run's (an exact resume gives identical arrays).

    python bench/compare_checkpoints.py A.h5 B.h5

Every dataset of the two HDF5 files is compared bit for bit (NaN equal to
NaN), in blocks, so files of several GB need little memory.  Datasets whose
path mentions timing (train_s, test_s, ...) are listed apart: wall-clock
times differ between any two runs; so are the run's metadata (the saved
configuration names the run's own --out folder, and the session list each
start's time and command).  Exit status 0 when every other dataset is
identical and both files hold the same datasets, 1 otherwise.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np

TIMING = ("_s", "time", "when", "elapsed", "host", "date")
METADATA = ("config", "extra/run/sessions")
BLOCK = 1 << 24


def datasets(f: h5py.File) -> dict:
    out: dict = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj)
                 if isinstance(obj, h5py.Dataset) else None)
    return out


def same(a: h5py.Dataset, b: h5py.Dataset) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.shape == () or a.dtype.kind not in "fiub" or a.ndim != 1:
        x, y = a[()], b[()]
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            return bool(np.array_equal(x, y, equal_nan=True))
        return bool(np.all(x == y)) if isinstance(x, np.ndarray) else x == y
    for i in range(0, a.shape[0], BLOCK):
        x, y = a[i:i + BLOCK], b[i:i + BLOCK]
        if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
            return False
    return True


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    with h5py.File(argv[0], "r") as fa, h5py.File(argv[1], "r") as fb:
        da, db = datasets(fa), datasets(fb)
        only = sorted(set(da) ^ set(db))
        differ, timing, meta, n_values = [], [], [], 0
        for name in sorted(set(da) & set(db)):
            if not same(da[name], db[name]):
                if name in METADATA:
                    meta.append(name)
                elif any(t in name.lower() for t in TIMING):
                    timing.append(name)
                else:
                    differ.append(name)
            n_values += int(np.prod(da[name].shape))
    print(f"{len(da)} datasets, {n_values:,} values compared")
    for name in only:
        print(f"only in one file: {name}")
    for name in timing:
        print(f"differs (timing, expected): {name}")
    for name in meta:
        print(f"differs (run metadata, expected): {name}")
    for name in differ:
        print(f"DIFFERS: {name}")
    ok = not only and not differ
    print("identical" if ok else "NOT identical")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
