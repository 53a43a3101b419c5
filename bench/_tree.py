"""``--tree``: run a benchmark against another checkout's build (an A/B of
two versions in one session, their runs interleaved)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parents[1])


def tree_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by the first line of ``doc``, with ``--tree``
    (default: this checkout)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--tree", default=HERE,
                    help="checkout (built) whose sparse_mlp to import (default: this one)")
    return ap


def parse_tree_args(ap: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, then put ``--tree`` first on the import path (before any
    sparse_mlp import)."""
    args = ap.parse_args()
    sys.path.insert(0, args.tree)
    return args
