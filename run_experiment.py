#!/usr/bin/env python3
"""Train a truly sparse MLP from a checkout: the same command as the
installed ``sparse-mlp`` and ``python -m sparse_mlp`` (sparse_mlp/cli.py).

    python run_experiment.py                       # demo: digits, offline, ~15 seconds
    python run_experiment.py --dataset madelon --data-dir ../shared/data/madelon
    python run_experiment.py --help
"""

import sys

from sparse_mlp.cli import build_parser, config_from_args, main

__all__ = ["build_parser", "config_from_args", "main"]

if __name__ == "__main__":
    sys.exit(main())
