"""The paper's numbers, read from ``paper_numbers.json`` (shipped with the package).

The data file holds every number the reproduced tables print next to ours,
each under its table, dataset (or architecture), row and column, with a
note of the paper's table it comes from.  The functions below turn it into
the shapes the table writers index (tuples in the paper's column order).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

DATA_FILE = "paper_numbers.json"
TABLE2_COLUMNS = ("accuracy", "start_nnz", "end_nnz", "minutes")
TABLE3_COLUMNS = ("framework", "ip", "cpu_cores", "gpu", "accuracy", "minutes", "cpu_percent",
                  "memory_mb")


@lru_cache(maxsize=1)
def _read() -> str:
    return files(__package__).joinpath(DATA_FILE).read_text(encoding="utf-8")


def load_paper_numbers() -> dict[str, Any]:
    """The whole data file: ``{"table2": {"source", "columns", "rows"}, ...}``
    (a fresh copy on every call)."""
    return json.loads(_read())


def paper_table2() -> dict[str, dict[str, tuple]]:
    """dataset: {row key: (accuracy %, start nnz, end nnz, minutes)}."""
    rows = load_paper_numbers()["table2"]["rows"]
    return {ds: {key: tuple(r[c] for c in TABLE2_COLUMNS) for key, r in by_row.items()}
            for ds, by_row in rows.items()}


def paper_table3() -> dict[str, list[tuple]]:
    """dataset: [(framework, IP, CPU cores, GPU, accuracy % or None, minutes, CPU %, MB)]."""
    rows = load_paper_numbers()["table3"]["rows"]
    return {ds: [tuple(r[c] for c in TABLE3_COLUMNS) for r in records]
            for ds, records in rows.items()}


def paper_table4() -> dict[str, dict[str, Any]]:
    """architecture: {neurons, params, workers, and minutes (per epoch): init,
    train, test, evolution}, in the paper's column order."""
    return load_paper_numbers()["table4"]["rows"]


def paper_table6() -> dict[str, tuple[float, int, dict[float, tuple[float, int]]]]:
    """dataset: (model accuracy %, its parameters, {percentile: (accuracy %, end nnz)})."""
    rows = load_paper_numbers()["table6"]["rows"]
    return {ds: (r["accuracy"], r["params"],
                 {float(p): (v["accuracy"], v["end_nnz"]) for p, v in r["percentiles"].items()})
            for ds, r in rows.items()}
