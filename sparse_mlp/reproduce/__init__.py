"""Reproduce the paper's tables and figures, side by side with the paper's numbers.

One function per table; each writes ``table<N>.md`` and ``table<N>.csv``
(and the figures, ``sparse_mlp.figures``) into its output folder, and
returns the markdown:

``reproduce_table2(dataset, seeds, epochs, out=...)`` (``table2.py``)
    Every row of Table 2: SET-MLP with ReLU and All-ReLU, each with and
    without Importance Pruning, and the dense MLP with both activations
    (``sparse_mlp.dense``, BLAS), over ``seeds`` seeds with the dataset's
    paper preset: mean +- std of the best test accuracy, start and end nnz,
    training minutes.  ``synthetic=True`` trains on synthetic data of the
    dataset's shape (features, classes, train/test sizes): for timing only.
``reproduce_table6(...)`` (``table6.py``)
    Importance Pruning once after training (5th ... 25th percentile) of the
    All-ReLU models without IP: the Table-2 runs of the same folder are
    pruned from their final checkpoints, missing ones are trained.
``reproduce_table4(out, epochs, ...)`` (``table4.py``)
    The extreme-scale rows on synthetic data (65536 features): per
    architecture init, train, test and evolution time and peak memory, each
    in its own process, after the memory planner decided how it fits.
``reproduce_table3(dataset, ...)`` (``table3.py``)
    The parallel rows (WASAP-SGD / WASSP-SGD, with and without IP) through
    ``sparse_mlp.parallel``, next to the sequential rows; needs mpiexec.

Resuming: each (row, seed) run lives in ``<out>/<row>/seed<k>``.  A run
whose ``summary.json`` exists is reused; an unfinished one continues from
its newest checkpoint (``experiment.run(..., resume="auto")``, the dense
twin likewise), so a killed reproduction goes on where it stopped.  A
finished run made with another number of epochs is refused (use another
``out``), never mixed in.  A row whose model does not fit in memory (the
dense Leukemia MLP) is reported as a memory error, not trained.

The shared pieces (a dataset's paper preset, running or reusing one
(row, seed), collecting finished runs, formatting, writing ``.md`` and
``.csv``) live in ``common.py``.  The paper's numbers are data:
``paper_numbers.json``, each under its table, dataset or architecture, row
and column, read by ``paper.py``.  ``out`` is always the caller's: no
function here writes into the repository's ``results/`` by default.
"""

from .common import (
    DENSE_ALPHA,
    DENSE_INIT,
    PAPER_EPOCHS,
    PAPER_SHAPES,
    PAPER_TABLE2,
    _row_config,
    collect_rows,
    is_dense,
    run_rows,
    table2_base,
)
from .paper import (
    load_paper_numbers,
    paper_table2,
    paper_table3,
    paper_table4,
    paper_table6,
)
from .table2 import (
    DENSE_ROWS,
    IMAGE_SHAPES,
    ROW_LABELS,
    TABLE2_ALL_ROWS,
    TABLE2_ROWS,
    _minutes_500,
    reproduce_table2,
    table2_rows,
    write_table2,
)
from .table3 import (
    MPI_LAUNCHER_VARS,
    PAPER_TABLE3,
    TABLE3_LABELS,
    TABLE3_ROWS,
    TABLE3_WORKERS,
    mpi_world,
    mpiexec_command,
    reproduce_table3,
    torch_cpu_reference,
    write_table3,
)
from .table4 import (
    PAPER_TABLE4,
    TABLE4_ARCHS,
    TABLE4_DROPOUT,
    TABLE4_EPOCHS,
    TABLE4_EXTRA_ARCHS,
    TABLE4_FEATURES,
    _run_child,
    _table4_child,
    _table4_recipe,
    reproduce_table4,
    table4_configs,
    write_table4,
)
from .table6 import (
    PAPER_TABLE6,
    POST_PRUNE_PERCENTILES,
    post_prune_rows,
    reproduce_table6,
    table6_rows,
    write_table6,
)

__all__ = [
    # common
    "DENSE_ALPHA", "DENSE_INIT", "PAPER_EPOCHS", "PAPER_SHAPES", "PAPER_TABLE2",
    "_row_config", "collect_rows", "is_dense", "run_rows", "table2_base",
    # the paper's numbers (paper_numbers.json)
    "load_paper_numbers", "paper_table2", "paper_table3", "paper_table4", "paper_table6",
    # Table 2
    "DENSE_ROWS", "IMAGE_SHAPES", "ROW_LABELS", "TABLE2_ALL_ROWS", "TABLE2_ROWS",
    "_minutes_500", "reproduce_table2", "table2_rows", "write_table2",
    # Table 3
    "MPI_LAUNCHER_VARS", "PAPER_TABLE3", "TABLE3_LABELS", "TABLE3_ROWS", "TABLE3_WORKERS",
    "mpi_world", "mpiexec_command", "reproduce_table3", "torch_cpu_reference", "write_table3",
    # Table 4
    "PAPER_TABLE4", "TABLE4_ARCHS", "TABLE4_DROPOUT", "TABLE4_EPOCHS", "TABLE4_EXTRA_ARCHS",
    "TABLE4_FEATURES",
    "_run_child", "_table4_child", "_table4_recipe", "reproduce_table4", "table4_configs",
    "write_table4",
    # Table 6
    "PAPER_TABLE6", "POST_PRUNE_PERCENTILES", "post_prune_rows", "reproduce_table6",
    "table6_rows", "write_table6",
]
