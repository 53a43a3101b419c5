"""Where a benchmark writes its JSON: the path given (``--json``), or
``bench/results/<stem>_<date>_<time>.json`` (not committed)."""

from __future__ import annotations

import json
import time
from pathlib import Path


def write_results(out: dict, path: str | None, stem: str, default=None) -> Path:
    """Write ``out`` as indented JSON (``default``: json.dumps's, for values
    it cannot encode) and say where; returns the path."""
    dest = Path(path) if path else (
        Path(__file__).parent / "results" / f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=2, default=default))
    print(f"results written to {dest}")
    return dest
