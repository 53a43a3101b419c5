"""``python -m sparse_mlp``: the ``sparse-mlp`` command (sparse_mlp/cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
