"""Train a truly sparse MLP (SET, All-ReLU, Importance Pruning) from the command line.

    sparse-mlp                                     # demo: digits, offline, ~15 seconds
    sparse-mlp --dataset madelon --data-dir ../shared/data/madelon
    sparse-mlp predict new.csv --model runs/RUN    # = --predict new.csv --model runs/RUN
    sparse-mlp evaluate runs/RUN/checkpoints/X.h5  # = --evaluate ...
    sparse-mlp reproduce table2 --dataset madelon  # = --reproduce table2 ...

The same command is ``python -m sparse_mlp`` and, in a checkout,
``python run_experiment.py``.  Each --dataset starts from its preset (the
paper's Table 7 for the paper datasets); every flag below overrides it.  The
CLI only parses: the work is sparse_mlp.experiment.run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sparse_mlp.errors import ConfigError, SparseMLPError

# the "parallel (MPI)" flags, named as their TrainConfig fields
PARALLEL_FLAGS = ("parallel", "phase1_epochs", "warmup_epochs", "parallel_semantics",
                  "phase2_sync_every", "phase1_decay", "parallel_ip_every",
                  "parallel_ip_percentile", "mpi_wait", "mpi_chunk_bytes")

PRESET_HELP = """presets (--dataset NAME; paper Table 7, all: momentum 0.9, weight decay 2e-4,
dropout 0.3, zeta 0.3, 500 epochs, All-ReLU, IP from epoch 200 every 10 at the 20th pct):
  leukemia      54675-27500-27500-18     eps 10  lr 0.005  batch 5    normal      alpha 0.75
  higgs         28-1000-1000-1000-2      eps 10  lr 0.01   batch 128  xavier      alpha 0.05
  madelon       500-400-100-400-2        eps 10  lr 0.01   batch 32   normal      alpha 0.5
  fashionmnist  784-1000-1000-1000-10    eps 20  lr 0.01   batch 128  he_uniform  alpha 0.6
  cifar10       3072-4000-1000-4000-10   eps 20  lr 0.01   batch 128  he_uniform  alpha 0.75
  synthetic     F-1000-1000-1000-C       eps 10  lr 0.01   batch 128  he_uniform  alpha 0.6
                (dropout 0.4, as Table 4)
  digits (demo) 64-1000-1000-1000-10     eps 20  lr 0.01   batch 32   he_uniform  alpha 0.6
                (100 epochs)
  a file path   the fashionmnist recipe, 100 epochs

exit status: 0 done, 2 bad input or settings (the message says what to change),
3 training diverged (the last good checkpoint is kept), 75 preempted: SIGTERM or
SIGUSR1 stopped the run after a batch and a checkpoint (continue it exactly with
--resume auto --out DIR), 130 SIGINT (Ctrl-C) and 129 SIGHUP: stopped the same way
with a checkpoint (a second Ctrl-C stops at once, without one)."""


def _int_list(text: str) -> list[int]:
    """Comma-separated positive integers; ``WxN`` stands for N times W
    (``--hidden 5000000x25``, ``--hidden 1000x3,10``)."""
    vals: list[int] = []
    try:
        for v in text.replace(" ", "").lower().split(","):
            if not v:
                continue
            width, _, times = v.partition("x")
            n = int(times) if times else 1
            if n < 1:
                raise ValueError
            vals += [int(width)] * n
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers (WxN: N times W), got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return vals


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def _alpha_value(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or 'auto', got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse with a short answer to an unknown flag: the closest known flag
    ("did you mean --epochs?") and the usual usage line, not 50 lines of usage."""

    def error(self, message: str):
        import difflib

        if message.startswith("unrecognized arguments:"):
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            hints = []
            for word in message.split(":", 1)[1].split():
                if word.startswith("-"):
                    close = difflib.get_close_matches(word.split("=")[0], known, n=1, cutoff=0.7)
                    if close:
                        hints.append(f"{word}: did you mean {close[0]}?")
            if hints:
                message = f"{message} ({'; '.join(hints)})"
        self.exit(2, f"{self.prog}: error: {message}\n(--help lists every flag)\n")


# subcommand -> the flag it stands for (``sparse-mlp predict FILE`` = ``--predict FILE``);
# "train" stands for no flag: the flat form (flags only) trains
SUBCOMMANDS = {"train": None, "predict": "--predict", "evaluate": "--evaluate",
               "reproduce": "--reproduce"}


def expand_subcommand(argv: list[str]) -> list[str]:
    """The flat form of a command line that starts with a subcommand:
    ``train ...`` -> ``...``; ``predict FILE ...`` -> ``--predict FILE ...``
    (and so for evaluate CHECKPOINT, reproduce TABLE).  A line that starts
    with a flag is returned as it is."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return list(argv)
    name, rest = argv[0], list(argv[1:])
    flag = SUBCOMMANDS[name]
    if flag is None:
        return rest
    if not rest or rest[0].startswith("-"):
        what = {"predict": "FILE", "evaluate": "CHECKPOINT", "reproduce": "TABLE"}[name]
        if rest and rest[0] in ("-h", "--help"):
            return rest
        print(f"{_prog()}: error: {name} needs {what} first: {_prog()} {name} {what} "
              f"[flags]\n(--help lists every flag)", file=sys.stderr)
        raise SystemExit(2)  # (a usage error, as argparse's)
    return [flag, rest[0], *rest[1:]]


def _prog() -> str:
    """How this command was called, for usage lines."""
    import os

    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if name in ("", "-c") or name == "__main__.py":
        return "python -m sparse_mlp"
    return name


def _dirs_help() -> str:
    from sparse_mlp.datasets import default_data_dir

    return (f"\nsubcommands: {_prog()} train|predict FILE|evaluate CHECKPOINT|reproduce TABLE "
            f"[flags]\n(the flat form, flags only, is the same: train = no flag, predict FILE = "
            f"--predict FILE, ...)\n\ndirectories: datasets in {default_data_dir()} "
            f"($SPARSE_MLP_DATA_DIR, else the user cache directory; --data-dir), runs under "
            f"./runs (--out)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=_prog(), description=__doc__.split("\n\n")[0],
        epilog=PRESET_HELP + _dirs_help(), formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    d = p.add_argument_group("data")
    d.add_argument("--dataset",
                   help="paper dataset (leukemia, higgs, madelon, fashionmnist, cifar10), "
                        "'synthetic', 'digits', or a path to .npz/.csv/.tsv/libsvm "
                        "(default: digits)")
    d.add_argument("--data-dir", help="folder holding the dataset files (default: "
                   "$SPARSE_MLP_DATA_DIR, else the user cache directory; see the end of "
                   "--help)")
    d.add_argument("--n-train", type=int, help="training samples to use (default: all / the "
                   "paper's split)")
    d.add_argument("--n-samples", type=int, help="synthetic: training samples (same as --n-train)")
    d.add_argument("--n-test", type=int, help="test samples to use (default: the dataset's)")
    d.add_argument("--n-features", type=int, help="synthetic: features (default 65536)")
    d.add_argument("--n-classes", type=int, help="synthetic: classes (default 2)")
    d.add_argument("--label-column", help="CSV/TSV: label column name or index (default: last)")
    d.add_argument("--test-fraction", type=float, help="user files without a test set: "
                   "stratified test fraction (default 0.2)")
    d.add_argument("--task", choices=["classification", "regression"],
                   help="regression: a user file's numeric label column as float targets "
                        "(standardised with the training mean/std), linear output + squared "
                        "error, R^2 / RMSE / MAE, best epoch by R^2, plain shuffle split "
                        "(default: classification; the named datasets are classification data)")
    d.add_argument("--val-fraction", type=float, metavar="F",
                   help="hold out F of the training set (after --n-train) as a stratified "
                        "validation set, seeded by --seed, before the standardisation "
                        "statistics; the best epoch is then chosen on it (metrics.csv val_*, "
                        "summary.json test_acc_at_best_epoch, checkpoints/best.h5). Default: "
                        "none, the paper's protocol (best test accuracy). Sequential runs only")
    d.add_argument("--augment", choices=["cifar"],
                   help="cifar: random shifts (up to 3 pixels, fill 'nearest') and horizontal "
                        "flips (p 0.5) of the training images, drawn per (seed, step, sample), "
                        "as the authors' parallel script on CIFAR10 (without its rotations); "
                        "32x32x3 channel-planar images only (3072 features). Default: none")

    a = p.add_argument_group("architecture (defaults: the dataset preset)")
    a.add_argument("--hidden", type=_int_list, help="hidden layer widths, e.g. 1000,1000,1000 "
                   "(WxN: N layers of W, e.g. 5000000x25)")
    a.add_argument("--epsilon", type=float, help="Erdos-Renyi density: ~eps*(n_in+n_out) "
                   "weights per layer")
    a.add_argument("--er-sampling", choices=["exact", "paper"],
                   help="exact (default): every connection exists with probability "
                        "eps*(n_in+n_out)/(n_in*n_out); paper: eps*(n_in+n_out) positions drawn "
                        "with replacement, duplicates merged (the authors' code: Madelon "
                        "~19,000 weights, Higgs ~50,200)")
    a.add_argument("--activation", choices=["relu", "allrelu", "leaky", "srelu", "tanh",
                                            "sigmoid"], help="hidden activation (preset: allrelu)")
    a.add_argument("--alpha", type=_alpha_value, help="All-ReLU slope (sign alternates by "
                   "layer), or 'auto': chosen from the input skewness (sparse_mlp/alpha.py); "
                   "leaky: negative slope (default 0.01)")
    a.add_argument("--output", choices=["softmax", "sigmoid", "linear"],
                   help="output + loss: softmax+cross-entropy (default) or sigmoid+MSE; "
                        "linear+squared error is --task regression's (and its default)")
    a.add_argument("--weight-init", choices=["normal", "xavier", "he_uniform", "xavier_sparse",
                                             "he_uniform_sparse", "kaiming_uniform_sparse"],
                   help="initial values: normal N(0,1)/10, xavier or he_uniform (the paper's, "
                        "scaled by the dense fan-in/out); *_sparse: scaled by the expected "
                        "fan-in/out of the sparse layer (for very wide layers, not the paper's); "
                        "kaiming_uniform_sparse: he_uniform_sparse with the gain of the "
                        "activation (2/(1+alpha^2) for All-ReLU), so that deep networks "
                        "keep their signal's scale")

    o = p.add_argument_group("optimisation (reference momentum SGD; defaults: the preset)")
    o.add_argument("--epochs", type=int, help="epochs (paper: 500)")
    o.add_argument("--batch-size", type=int, help="mini-batch size (the tail is dropped)")
    o.add_argument("--lr", type=float, help="learning rate")
    o.add_argument("--momentum", type=float, help="momentum (default 0.9)")
    o.add_argument("--weight-decay", type=float, help="weight decay (default 2e-4)")
    o.add_argument("--decay-mode", choices=["paper", "decoupled"],
                   help="paper: w -= wd*w each step (default); decoupled: w -= lr*wd*w")
    o.add_argument("--nesterov", action="store_true", default=None,
                   help="Nesterov momentum (not the paper's)")
    o.add_argument("--dropout", type=float, help="dropout rate on hidden layers (default 0.3)")
    o.add_argument("--class-weight", choices=["balanced"],
                   help="balanced: each training sample's loss and gradient times n_samples / "
                        "(n_classes * its class count), as scikit-learn's class_weight="
                        "'balanced' (default: unweighted)")
    o.add_argument("--lr-schedule", choices=["constant", "step", "cosine"],
                   help="learning rate by epoch e (sparse_mlp/schedule.py): constant (the "
                        "paper's, default); step: lr * gamma^(e // N); cosine: from lr down "
                        "to --lr-min over --epochs. Sequential runs only")
    o.add_argument("--lr-step-every", type=int, metavar="N",
                   help="step: multiply the learning rate by --lr-step-gamma every N epochs")
    o.add_argument("--lr-step-gamma", type=float, metavar="G",
                   help="step: the factor (default 0.1)")
    o.add_argument("--lr-min", type=float, help="cosine: the floor (default 0)")

    e = p.add_argument_group("topology evolution and Importance Pruning")
    e.add_argument("--zeta", type=float, help="SET: fraction of positive and of negative "
                   "weights replaced after each epoch (default 0.3)")
    e.add_argument("--no-evolution", action="store_true", default=None,
                   help="static sparse topology (no SET)")
    e.add_argument("--importance-pruning", action="store_true", default=None,
                   help="Importance Pruning during training (paper Algorithm 2)")
    e.add_argument("--ip-start", type=int, help="prune after epoch e when e > this "
                   "(default 200)")
    e.add_argument("--ip-every", type=int, help="... and e %% this == 0 (default 10)")
    e.add_argument("--ip-percentile", type=float, help="importance percentile threshold "
                   "(default 20)")
    e.add_argument("--post-prune", type=_float_list, help="after training, prune once at "
                   "each of these percentiles and report (paper Table 6), e.g. 5,10,15,20,25")

    r = p.add_argument_group("run")
    r.add_argument("--seed", type=int, help="random seed (default 0)")
    r.add_argument("--threads", type=int,
                   help="kernel threads (default: $SPARSE_MLP_THREADS, else $OMP_NUM_THREADS, "
                        "else the CPUs this process may use: its affinity mask, capped by "
                        "$SLURM_CPUS_PER_TASK); more than those, or than the CPUs other "
                        "processes leave free, warns")
    r.add_argument("--eval-every", type=int, help="evaluate the test set every N epochs "
                   "(default 1)")
    r.add_argument("--eval-batch-size", type=int, help="samples per inference block "
                   "(default 1024)")
    r.add_argument("--train-eval", type=int, metavar="N",
                   help="with every test evaluation, also the loss and accuracy without "
                        "dropout on the first N training samples (metrics.csv columns "
                        "train_eval_*; the running training loss is taken with dropout on "
                        "moving weights). Default 0: off")
    r.add_argument("--out", help="output folder (default: runs/<dataset>_<time>_seed<seed>); "
                   "a folder that holds another run's results is refused (see --overwrite)")
    r.add_argument("--config", metavar="RUN/config.json",
                   help="re-run a run: start from the settings in its config.json instead of "
                        "a preset. Flags given with --config override the file's values; the "
                        "file's --out is not reused (a new runs/... folder unless --out) nor "
                        "its --threads. Not with --resume (which continues a run), "
                        "--evaluate or --reproduce")
    r.add_argument("--overwrite", action="store_true", default=None,
                   help="start a new run in --out even though it holds an earlier run's "
                        "results, deleting them (without it: refused, so that nothing is "
                        "lost; continue that run with --resume auto)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one log line per epoch (automatic when not a terminal)")
    r.add_argument("--quiet", action="store_true", help="warnings and the result only")

    m = p.add_argument_group("memory (large models)")
    m.add_argument("--activation-memory", choices=["auto", "fast", "lean"],
                   help="fast: keep Z and A of every hidden layer during a step; lean: Z only, "
                        "A recomputed in the backward pass (same results, about half the "
                        "activation memory with 3+ hidden layers); auto (default): fast if "
                        "it fits")
    m.add_argument("--micro-batch", type=int,
                   help="process each batch in blocks of this many samples and accumulate the "
                        "gradient (same update; rounded down to a divisor of the batch); "
                        "default: the whole batch if it fits, else the largest block that does")
    m.add_argument("--dry-run", action="store_true", default=None,
                   help="print the memory estimate (weights, optimiser state, activations, "
                        "dataset), the largest batch that fits and the plan, then exit")

    c = p.add_argument_group("checkpoints and faults")
    c.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="checkpoint every N epochs into OUT/checkpoints, and after the last "
                        "(default: every 10 minutes of training and after the last epoch; "
                        "0: none)")
    c.add_argument("--keep-checkpoints", type=int, metavar="K",
                   help="keep the K newest checkpoints (default 3)")
    c.add_argument("--keep-best", choices=["test"],
                   help="test: keep the model of the best test-accuracy epoch as "
                        "OUT/checkpoints/best.h5 (the paper's protocol, which Table 6 prunes; "
                        "the epoch is picked on the test set). Default: none (--val-fraction "
                        "keeps the best validation epoch instead). Sequential runs only")
    c.add_argument("--resume", metavar="PATH|auto",
                   help="continue a run exactly: from a checkpoint file, a run folder, or "
                        "'auto' = the newest valid checkpoint in --out (a new run if there is "
                        "none yet, so one command line serves every requeue). The saved "
                        "settings apply; only --epochs, --lr, --threads, --eval-every, "
                        "--eval-batch-size, --out, --data-dir, --post-prune and these "
                        "checkpoint flags may change")
    c.add_argument("--diagnostics", action="store_true", default=None,
                   help="per epoch: gradient flow on a fixed training batch (no dropout, no "
                        "update), nnz per layer, connections per input, into "
                        "OUT/diagnostics.json (training itself is unchanged)")
    c.add_argument("--save-topology", action="store_true", default=None,
                   help="store every epoch's connectivity in OUT/topology.h5 (about 1-1.5 "
                        "bytes per weight and epoch; read it with "
                        "sparse_mlp.topology_log.load_topology)")
    c.add_argument("--evaluate", metavar="CHECKPOINT",
                   help="evaluate a saved model (a checkpoint file or a run folder) on "
                        "--dataset (default: the one it was trained on); prints the "
                        "accuracy and writes JSON (to --out, else beside the checkpoint)")
    c.add_argument("--predict", metavar="FILE",
                   help="predict every sample of FILE (.csv/.tsv, .npz or libsvm, raw "
                        "features as in the training file) with --model, into --out (.csv, "
                        "or .npz; default FILE_NAME.predictions.csv): the predicted label, "
                        "then the probability of each class. A label column in FILE is not "
                        "a feature; its accuracy is printed")
    c.add_argument("--model", metavar="RUN_OR_CHECKPOINT",
                   help="--predict: the model, a checkpoint file or a run folder (its "
                        "checkpoints/best.h5 if any, else its newest checkpoint)")

    b = p.add_argument_group("beyond the paper (defaults: the paper's SET and ER)")
    b.add_argument("--growth", choices=["random", "gradient", "momentum"],
                   help="regrowth after SET's removal: random (SET, default), gradient "
                        "(RigL: largest |gradient| at empty positions) or momentum (sparse "
                        "momentum: largest |momentum|, regrowth redistributed over layers by "
                        "their mean |momentum|)")
    b.add_argument("--growth-batches", type=int, help="probe mini-batches per evolution step "
                   "for gradient/momentum growth (default 1 / 10)")
    b.add_argument("--growth-init", choices=["zero", "init"], help="values of weights grown "
                   "by gradient/momentum: zero (default, as RigL) or the init distribution")
    b.add_argument("--regrow-init", choices=["init", "zero"], help="values of the weights "
                   "SET regrows at random: init (the paper's: drawn like the initial "
                   "weights) or zero (keeps deep eps-1 stacks such as 65536-5Mx10-2 from "
                   "growing their weights at every evolution step)")
    b.add_argument("--growth-candidates", type=float, help="search only C x (weights to "
                   "regrow) random empty positions per layer instead of all of them "
                   "(for layers too large to scan)")
    b.add_argument("--density-allocation", choices=["er", "erk"], help="er: eps*(n_in+n_out) "
                   "weights per layer (paper, default); erk: RigL's ERK split of the same "
                   "budget, capped layers' excess handed to the others")
    b.add_argument("--erk-power", type=float, help="erk: density ~ ((n_in+n_out)/(n_in*n_out))"
                   "**power (default 1; 0 = uniform density)")
    b.add_argument("--output-init", choices=["normal", "xavier", "he_uniform", "xavier_sparse",
                                             "he_uniform_sparse", "kaiming_uniform_sparse",
                                             "zero"],
                   help="the output layer's initial values (default: --weight-init); zero: "
                        "start at 0 (logits 0, loss ln C)")
    b.add_argument("--lr-fan-in-cap", type=float, metavar="F",
                   help="a layer's step size is lr*min(1, F/its mean fan-in): for output "
                        "layers with millions of inputs per class (Table 4), where lr 0.01 "
                        "diverges (sequential only; default: lr everywhere, the paper's)")

    mp = p.add_argument_group(
        "parallel (MPI)", "start with `mpiexec -n K+1 python run_experiment.py --parallel "
        "wasap ...`: rank 0 is the parameter server, ranks 1..K the workers (sparse_mlp/"
        "parallel). Threads per rank default to the node's cores / its ranks")
    mp.add_argument("--parallel", choices=["wasap", "wassp"],
                    help="WASAP-SGD (phase 1 asynchronous) or WASSP-SGD (phase 1 synchronous, "
                         "lr x K after a warm-up), then local training and averaging")
    mp.add_argument("--phase1-epochs", type=int, metavar="TAU1",
                    help="epochs of phase 1 (parameter server); the rest of --epochs is "
                         "phase 2 (each worker trains and evolves alone, then the models are "
                         "averaged). Default: 70%% of --epochs, as the authors' code")
    mp.add_argument("--warmup-epochs", type=float,
                    help="wassp: epochs over which the lr rises from --lr to K x --lr (default "
                         "5, Goyal et al. 2017): code semantics by PS epoch, lr x (1 + (K-1) "
                         "e/W) in epoch e < W (W = this), momentum corrected when it changes; "
                         "text: linearly by step")
    mp.add_argument("--parallel-semantics", choices=["code", "text"],
                    help="code (default): the authors' code, which produced the paper's Table "
                         "3 numbers: phase-2 workers take the PS's model every round(0.3 x "
                         "epochs) steps, no weight decay in phase 1, Importance Pruning every "
                         "20 epochs at the 10th percentile, final average thresholded per sign "
                         "back to the PS's nnz, WASSP warm-up by epoch. text: the paper's text "
                         "(independent phase 2, --weight-decay in phase 1, --ip-every / "
                         "--ip-percentile, average pruned by |w| to the workers' mean nnz, "
                         "warm-up by step). The four flags below override single choices")
    mp.add_argument("--phase2-sync-every", type=int, metavar="N",
                    help="phase 2: every N of its own steps a worker replaces its model by "
                         "the PS's (its model at the switch); 0: fully independent workers. "
                         "Default: code round(0.3 x --epochs), 150 for 500 epochs; text 0")
    mp.add_argument("--phase1-decay", choices=["paper", "none"],
                    help="weight decay in phase 1 (WASAP and WASSP): paper (--weight-decay) or "
                         "none. Default: code none, text paper")
    mp.add_argument("--parallel-ip-every", type=int, metavar="N",
                    help="with --importance-pruning under --parallel: prune every N epochs "
                         "(after --ip-start). Default: code 20, text --ip-every")
    mp.add_argument("--parallel-ip-percentile", type=float, metavar="P",
                    help="... at this importance percentile. Default: code 10, text "
                         "--ip-percentile")
    mp.add_argument("--mpi-wait", choices=["auto", "spin", "sleep"],
                    help="how a rank waits for messages: spin (lowest latency, one busy core "
                         "each), sleep (polls with a back-off: for ranks that share cores), "
                         "auto (default: sleep when a node's ranks x threads exceed its cores)")
    mp.add_argument("--mpi-chunk-bytes", type=int, metavar="N",
                    help="largest single MPI message (default 2^30); larger arrays are sent "
                         "in pieces, so no message reaches the 2^31 limit")

    x = p.add_argument_group("reproduce the paper")
    x.add_argument("--reproduce", choices=["table2", "table3", "table4", "table6"],
                   help="table2: every row of Table 2 for --dataset (SET-MLP ReLU / All-ReLU, "
                        "with and without Importance Pruning, and the dense MLP with both), "
                        "over --seeds seeds, next to the paper's numbers, with the figures "
                        "(default --out runs/DATASET_table2; the committed tables are under "
                        "results/, written there only when --out says so); table6: post-training "
                        "Importance Pruning at the 5th-25th percentiles of Table 2's All-ReLU "
                        "models (same default --out: it prunes those runs, training the "
                        "missing ones); table3: the parallel rows (WASAP/WASSP-SGD, needs "
                        "mpiexec); table4: the extreme-scale rows on synthetic data (default "
                        "2 epochs; --dry-run: memory plans only). Finished runs are reused, "
                        "unfinished ones continue from their checkpoints")
    x.add_argument("--seeds", type=int, help="seeds per row for --reproduce (default 5)")
    x.add_argument("--synthetic-shape", action="store_true", default=None,
                   help="table2/table6: synthetic data of the dataset's shape (features, "
                        "classes, train/test sizes) instead of its files: timing only")
    x.add_argument("--rows", type=lambda t: [r for r in t.replace(" ", "").split(",") if r],
                   help="table2: run only these rows (relu, relu_ip, allrelu, allrelu_ip, "
                        "dense_relu, dense_allrelu), e.g. for a SLURM array task; the table is "
                        "written from every finished run found. table4: only these "
                        "architectures (65536-0.5M-0.5M-2, 65536-2.5M-2.5M-2, 65536-5M-5M-2, "
                        "65536-5Mx4-2, 65536-5Mx10-2; and, only when named, 65536-5Mx25-2: "
                        "125 M neurons, the paper's aim)")
    x.add_argument("--only-seed", type=int, metavar="K",
                   help="table2: run only seed K (0-based) of the selected rows")
    x.add_argument("--width-scale", type=float,
                   help="table4: multiply every hidden width by this (try the pipeline on a "
                        "small machine; not the paper's sizes)")
    return p


# flags that only mean something together with another setting
def _check_contradictions(args: argparse.Namespace, cfg_activation: str, dataset: str,
                          importance_pruning: bool = False, lr_schedule: str = "constant"
                          ) -> None:
    problems = []
    if args.lr_step_gamma is not None and lr_schedule != "step":
        problems.append("--lr-step-gamma needs --lr-schedule step")
    if args.lr_min is not None and lr_schedule != "cosine":
        problems.append("--lr-min needs --lr-schedule cosine")
    if args.alpha is not None and cfg_activation not in ("allrelu", "leaky"):
        problems.append(f"--alpha has no effect with --activation {cfg_activation} "
                        "(it sets the All-ReLU or leaky slope)")
    if not (args.importance_pruning or importance_pruning):
        given = [f for f in ("ip_start", "ip_every", "ip_percentile", "parallel_ip_every",
                             "parallel_ip_percentile") if getattr(args, f) is not None]
        if given:
            problems.append(", ".join("--" + g.replace("_", "-") for g in given)
                            + " need --importance-pruning")
    if args.no_evolution and args.zeta is not None:
        problems.append("--zeta has no effect with --no-evolution")
    if args.n_samples is not None and args.n_train is not None and args.n_samples != args.n_train:
        problems.append("--n-samples and --n-train disagree (they are the same setting)")
    if dataset != "synthetic":
        given = [f for f in ("n_features", "n_classes", "n_samples")
                 if getattr(args, f) is not None]
        if given:
            problems.append(", ".join("--" + g.replace("_", "-") for g in given)
                            + " only apply to --dataset synthetic")
    if problems:
        raise ConfigError("contradictory flags:\n  - " + "\n  - ".join(problems))


def config_from_args(args: argparse.Namespace, base=None):
    """Preset of --dataset (or ``base``: the configuration of --config, a
    run's config.json), then every flag the user gave."""
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.presets import preset_for

    if base is not None:  # --config: the run's settings, --dataset (if given) on top
        cfg = base.replace(dataset=args.dataset or base.dataset)
        args.dataset = cfg.dataset
    else:
        args.dataset = args.dataset or "digits"
        name, fields = preset_for(args.dataset)
        cfg = TrainConfig(**{**fields, "dataset": args.dataset, "preset": name})
    mapping = {"data_dir": "data_dir", "n_train": "n_train", "n_test": "n_test",
               "n_features": "n_features", "n_classes": "n_classes",
               "label_column": "label_column", "test_fraction": "test_fraction",
               "hidden": "hidden", "epsilon": "epsilon", "activation": "activation",
               "alpha": "alpha", "output": "output", "weight_init": "weight_init",
               "epochs": "epochs", "batch_size": "batch_size", "lr": "lr",
               "momentum": "momentum", "weight_decay": "weight_decay",
               "decay_mode": "decay_mode", "nesterov": "nesterov", "dropout": "dropout",
               "zeta": "zeta", "importance_pruning": "importance_pruning",
               "ip_start": "ip_start", "ip_every": "ip_every", "ip_percentile": "ip_percentile",
               "post_prune": "post_prune", "seed": "seed", "threads": "threads",
               "eval_every": "eval_every", "eval_batch_size": "eval_batch_size",
               "train_eval": "train_eval", "out": "out",
               "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints",
               "save_topology": "save_topology", "activation_memory": "activation_memory",
               "diagnostics": "diagnostics",
               "micro_batch": "micro_batch", "task": "task", "class_weight": "class_weight"}
    changes = {field: getattr(args, flag) for flag, field in mapping.items()
               if getattr(args, flag) is not None}
    if args.n_samples is not None:
        changes["n_train"] = args.n_samples
    if args.no_evolution:
        changes["evolution"] = False
    if changes.get("alpha") == "auto":  # resolved from the training data at run start
        del changes["alpha"]
        changes["alpha_auto"] = True
    beyond = ("growth", "growth_batches", "growth_init", "regrow_init", "growth_candidates",
              "density_allocation", "erk_power", "output_init", "lr_fan_in_cap")
    changes.update({f: getattr(args, f) for f in beyond if getattr(args, f) is not None})
    changes.update({f: getattr(args, f) for f in PARALLEL_FLAGS if getattr(args, f) is not None})
    protocol = ("val_fraction", "lr_schedule", "lr_step_every", "lr_step_gamma", "lr_min",
                "augment", "er_sampling", "keep_best")
    changes.update({f: getattr(args, f) for f in protocol if getattr(args, f) is not None})
    if "alpha" in changes:  # a given slope replaces --config's --alpha auto
        changes.setdefault("alpha_auto", False)
    activation = changes.get("activation", cfg.activation)
    if activation not in ("allrelu", "leaky") and "alpha" not in changes:
        changes["alpha"] = None  # the preset's All-ReLU slope does not apply
    _check_contradictions(args, activation, args.dataset,
                          changes.get("importance_pruning", cfg.importance_pruning),
                          changes.get("lr_schedule", cfg.lr_schedule))
    if changes.get("task") == "regression":
        if name != "user-data":  # a paper preset / the digits demo: classification data
            raise ConfigError(f"--task regression: --dataset {args.dataset} is a "
                              f"classification dataset (preset {name!r}); give a data file whose "
                              f"label column is the numeric target (--label-column), or drop "
                              f"--task regression")
        changes.setdefault("output", "linear")  # linear output + squared error
    cfg = cfg.replace(**changes)
    cfg.validate()
    from sparse_mlp.run import check_supported  # (refused before any MPI rank starts)
    check_supported(cfg, "parallel" if cfg.parallel else "sparse")
    return cfg


# the flags each --reproduce table takes besides --dataset, --seeds, --out
REPRODUCE_FLAGS = {
    "table2": {"data_dir", "epochs", "threads", "eval_every", "eval_batch_size",
               "synthetic_shape", "rows", "only_seed", "er_sampling"},
    "table6": {"data_dir", "epochs", "threads", "eval_every", "eval_batch_size",
               "synthetic_shape", "er_sampling"},
    "table3": {"data_dir", "epochs", "threads", "synthetic_shape", "er_sampling",
               "parallel_semantics"},
    "table4": {"epochs", "threads", "width_scale", "n_features", "dry_run", "weight_init",
               "output_init", "lr_fan_in_cap", "dropout", "rows", "train_eval", "zeta",
               "regrow_init"},
}


# flags that only --reproduce reads
REPRODUCE_ONLY = ("seeds", "synthetic_shape", "rows", "only_seed", "width_scale")


def _reproduce(args: argparse.Namespace) -> int:
    from sparse_mlp import reproduce as rep

    table = args.reproduce
    if args.seeds is None:
        args.seeds = 5
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in {"dataset", "reproduce", "seeds", "out",
                                             "no_progress", "quiet", "overwrite"}}
    extra = sorted(set(given) - REPRODUCE_FLAGS[table])
    if extra:
        raise ConfigError(f"--reproduce {table} uses the paper's settings; besides --dataset, "
                          f"--seeds and --out it only takes "
                          + ", ".join("--" + f.replace("_", "-")
                                      for f in sorted(REPRODUCE_FLAGS[table]))
                          + " (got " + ", ".join("--" + e.replace("_", "-") for e in extra)
                          + ")")
    overrides = {k: v for k, v in given.items()
                 if k in {"data_dir", "threads", "eval_every", "eval_batch_size",
                          "er_sampling", "parallel_semantics"}}
    synthetic = bool(args.synthetic_shape)
    tag = f"{args.dataset}{'_synthetic' if synthetic else ''}"
    if table == "table2":
        out = args.out or f"runs/{tag}_table2"
        text = rep.reproduce_table2(args.dataset, seeds=args.seeds, epochs=args.epochs, out=out,
                                    overrides=overrides, synthetic=synthetic, rows=args.rows,
                                    only_seed=args.only_seed)
        files = "table2.md, table2.csv, fig_*.png (one folder per row and seed)"
    elif table == "table6":
        out = args.out or f"runs/{tag}_table2"
        text = rep.reproduce_table6(args.dataset, seeds=args.seeds, epochs=args.epochs,
                                    out=out, overrides=overrides, synthetic=synthetic)
        files = "table6.md, table6.csv"
    elif table == "table3":
        out = args.out or f"runs/{tag}_table3"
        text = rep.reproduce_table3(args.dataset, seeds=args.seeds, epochs=args.epochs,
                                    out=out, overrides=overrides, synthetic=synthetic,
                                    sequential_from=f"{Path(out).parent}/{tag}_table2")
        files = "table3.md, table3.csv"
    else:
        out = args.out or "runs/table4"
        text = rep.reproduce_table4(out, epochs=args.epochs or rep.TABLE4_EPOCHS,
                                    threads=args.threads, width_scale=args.width_scale or 1.0,
                                    n_features=args.n_features, dry_run=bool(args.dry_run),
                                    weight_init=args.weight_init,
                                    output_init=args.output_init,
                                    lr_fan_in_cap=args.lr_fan_in_cap,
                                    dropout=args.dropout, archs=args.rows,
                                    train_eval=args.train_eval, zeta=args.zeta,
                                    regrow_init=args.regrow_init)
        files = ("table4_plan.md, table4_plan.csv (a measured table4.md is left as it is)"
                 if args.dry_run else "table4.md, table4.csv (one folder per architecture)")
    if text:  # (under MPI only rank 0 has the table)
        print(text)
        print(f"written: {out}/ {files}")
    return 0


def _explicit_settings(args: argparse.Namespace, cfg, dataset_given: bool) -> dict:
    """The configuration fields the user set on the command line: on
    --resume they are checked against (or change) the checkpoint's."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cfg)} - {"dataset", "preset"}
    given = {n: getattr(cfg, n) for n in names if getattr(args, n, None) is not None}
    if dataset_given:
        given["dataset"] = cfg.dataset
    if args.n_samples is not None:
        given["n_train"] = cfg.n_train
    if args.no_evolution:
        given["evolution"] = False
    if args.alpha == "auto":
        given.pop("alpha", None)
        given["alpha_auto"] = True
    return given


EVALUATE_FLAGS = ("data_dir", "n_train", "n_test", "n_features", "n_classes", "label_column",
                  "test_fraction", "seed", "threads", "eval_batch_size")


def _evaluate(args: argparse.Namespace, dataset_given: bool) -> int:
    from sparse_mlp.experiment import evaluate_checkpoint

    skip = {"evaluate", "dataset", "out", "quiet", "no_progress", "seeds", *EVALUATE_FLAGS}
    other = sorted(k for k, v in vars(args).items() if v is not None and k not in skip)
    if other:
        raise ConfigError("--evaluate takes --dataset, --out and the data flags ("
                          + ", ".join("--" + f.replace("_", "-") for f in EVALUATE_FLAGS)
                          + "); got " + ", ".join("--" + o.replace("_", "-") for o in other))
    res = evaluate_checkpoint(args.evaluate, dataset=args.dataset if dataset_given else None,
                              overrides={k: getattr(args, k) for k in EVALUATE_FLAGS
                                         if getattr(args, k) is not None}, out=args.out)
    print(f"{res['checkpoint']} ({res['architecture']}, {res['nnz']:,} weights, "
          f"{res['epochs_trained']} epochs) on {res['dataset']}: test accuracy "
          f"{100 * res['test_acc']:.2f}% (loss {res['test_loss']:.4f}, {res['n_test']} "
          f"samples), training set {100 * res['train_acc']:.2f}% (loss "
          f"{res['train_loss']:.4f})")
    if res["json"]:
        print(f"written: {res['json']}")
    return 0


PREDICT_FLAGS = ("model", "out", "label_column", "threads", "eval_batch_size")


def _predict(args: argparse.Namespace, dataset_given: bool) -> int:
    from sparse_mlp.predict import predict_file

    skip = {"predict", "quiet", "no_progress", *PREDICT_FLAGS}
    other = sorted(k for k, v in vars(args).items()
                   if v is not None and k not in skip and (k != "dataset" or dataset_given))
    if other:
        raise ConfigError("--predict takes --model, --out and "
                          + ", ".join("--" + f.replace("_", "-") for f in PREDICT_FLAGS[2:])
                          + "; got " + ", ".join("--" + o.replace("_", "-") for o in other))
    if not args.model:
        raise ConfigError("--predict needs --model RUN_OR_CHECKPOINT: the run folder or the "
                          "checkpoint of the model to predict with")
    res = predict_file(args.predict, args.model, args.out, label_column=args.label_column,
                       threads=args.threads, batch_size=args.eval_batch_size)
    print(f"{res['checkpoint']} ({res['architecture']}) predicted {res['n_samples']} samples "
          f"of {res['data']}")
    if "accuracy" in res:
        unknown = (f"; {res['n_unknown_labels']} labels the model never saw count as wrong"
                   if res["n_unknown_labels"] else "")
        print(f"accuracy {100 * res['accuracy']:.2f}% on {res['n_labelled']} labelled samples "
              f"(label column {res['label_column']!r}){unknown}")
    print(f"written: {res['out']} (column {res['prediction_column']!r}, then the probability "
          f"of each class)")
    return 0


def _mpi_rank() -> int:
    """This process's MPI rank (--parallel); 0 when mpi4py is missing (the
    parallel runner then explains how to install it)."""
    try:
        from mpi4py import MPI
    except ImportError:
        return 0
    return MPI.COMM_WORLD.Get_rank()


def main(argv: list[str] | None = None) -> int:
    prog = _prog() if argv is None else "run_experiment.py"  # (main([...]) from Python)
    argv = expand_subcommand(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    dataset_given = args.dataset is not None
    if args.dataset is not None:  # one name per dataset ('cifar-10' is cifar10's preset too)
        from sparse_mlp.datasets import canonical_name
        args.dataset = canonical_name(args.dataset)
    if args.config is None:  # (--config: the run's own dataset unless --dataset is given)
        args.dataset = args.dataset or "digits"
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    try:
        from sparse_mlp.run import record_command_line  # summary.json: how to run it again
        record_command_line([prog, *argv])
        base, record = None, {}
        if args.config is not None:  # re-run a run from its config.json
            other = [f for f in ("resume", "evaluate", "reproduce") if getattr(args, f)]
            if other:
                raise ConfigError("--config starts a new run from a run's settings; it does not "
                                  "go with " + ", ".join("--" + o for o in other)
                                  + " (--resume continues a run from its own checkpoint)")
            from sparse_mlp.config import read_run_config
            base, record = read_run_config(args.config)
        if args.reproduce:
            return _reproduce(args)
        if args.evaluate:
            return _evaluate(args, dataset_given)
        if args.predict:
            return _predict(args, dataset_given)
        if args.model:
            raise ConfigError("--model names the model for --predict FILE; add --predict, or "
                              "use --evaluate CHECKPOINT / --resume CHECKPOINT")
        stray = [f for f in REPRODUCE_ONLY if getattr(args, f) is not None]
        if stray:
            them = "it" if len(stray) == 1 else "them"
            raise ConfigError(", ".join("--" + f.replace("_", "-") for f in stray)
                              + f": only --reproduce TABLE reads {them}; drop {them} or add "
                                "--reproduce")
        cfg = config_from_args(args, base)
        from sparse_mlp.experiment import dry_run, run, run_dense

        if args.dry_run:
            if args.resume:
                raise ConfigError("--dry-run plans a new run; a resumed run keeps the plan it "
                                  "was started with (its config.json): drop --dry-run or "
                                  "--resume")
            print(dry_run(cfg))
            return 0
        rank = _mpi_rank() if cfg.parallel else 0  # --parallel: only rank 0 reports
        if rank:
            logging.getLogger().setLevel(logging.WARNING)
        if not cfg.parallel:  # (--parallel: the driver splits the node's cores among ranks)
            from sparse_mlp.kernels import thread_warnings
            for line in thread_warnings(cfg.threads):
                print(f"warning: {line}", file=sys.stderr, flush=True)
        if not args.quiet and not args.resume and not rank:
            print(f"sparse_mlp: {cfg.dataset} (preset {cfg.preset}), hidden "
                  f"{','.join(map(str, cfg.hidden))}, eps {cfg.epsilon}, {cfg.activation}"
                  f"{' alpha auto' if cfg.alpha_auto else ''}"
                  f"{f' alpha {cfg.alpha}' if cfg.alpha is not None and not cfg.alpha_auto else ''}"
                  f"{', importance pruning' if cfg.importance_pruning else ''}"
                  f"{f', {cfg.growth} growth' if cfg.growth != 'random' else ''}"
                  f"{f', {cfg.density_allocation}' if cfg.density_allocation != 'er' else ''}, "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}",
                  flush=True)
        overrides = _explicit_settings(args, cfg, dataset_given) if args.resume else None
        if cfg.parallel:
            from sparse_mlp.parallel import run_parallel

            summary = run_parallel(cfg, progress=False if args.no_progress else None,
                                   resume=args.resume, overrides=overrides,
                                   overwrite=bool(args.overwrite))
            if summary is None:  # a worker rank: rank 0 reports
                return 0
        elif record.get("model") == "dense":  # --config of a dense run (Table 2's dense rows)
            summary = run_dense(cfg, progress=False if args.no_progress else None,
                                overwrite=bool(args.overwrite))
        else:
            summary = run(cfg, progress=False if args.no_progress else None,
                          resume=args.resume, overrides=overrides,
                          overwrite=bool(args.overwrite))
    except SparseMLPError as exc:
        if getattr(exc, "quiet", False):  # a --parallel worker told to stop: rank 0 reports
            return exc.exit_code
        preempted = exc.exit_code in (75, 129, 130)  # stopped by a signal, checkpoint saved
        print(f"{'preempted' if preempted else 'error'}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    score = (f"best test R^2 {summary['best_test_r2']:.4f} (epoch {summary['best_epoch'] + 1}"
             f", RMSE {summary['best_test_rmse']:.4g}), final R^2 {summary['final_test_r2']:.4f}"
             if summary.get("task") == "regression" else
             f"best test accuracy {100 * summary['best_test_acc']:.2f}% "
             f"(epoch {summary['best_epoch'] + 1}), final {100 * summary['final_test_acc']:.2f}%")
    if summary.get("val_acc_at_best_epoch") is not None:  # --val-fraction: chosen on validation
        score = (f"best epoch {summary['best_epoch'] + 1} by validation accuracy "
                 f"{100 * summary['val_acc_at_best_epoch']:.2f}%: test accuracy there "
                 f"{100 * (summary.get('test_acc_at_best_epoch') or float('nan')):.2f}% (the best "
                 f"test accuracy over all epochs, optimistic: "
                 f"{100 * summary['best_test_acc']:.2f}%), final "
                 f"{100 * summary['final_test_acc']:.2f}%")
    print(f"done: {score}, "
          f"nnz {summary['nnz_start']:,} -> {summary['nnz_end']:,}, "
          f"{summary['train_s']:.1f}s training")
    for row in summary["post_pruning"][1:]:
        print(f"  post-training pruning at the {row['percentile']:g}th percentile: "
              f"test accuracy {100 * row['test_acc']:.2f}%, nnz {row['nnz']:,}")
    print(f"results: {summary['out']}/ (config.json, metrics.csv, summary.json, "
          f"learning_curves.png)")
    if summary.get("checkpoint"):
        print(f"model: {summary['checkpoint']} (sparse_mlp.load, --evaluate, --resume)")
    if summary.get("best_checkpoint"):
        how = "validation" if summary.get("val_acc_at_best_epoch") is not None else "test"
        print(f"best model (chosen on {how}): {summary['best_checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
