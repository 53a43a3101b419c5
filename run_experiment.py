#!/usr/bin/env python3
"""Train a truly sparse MLP (SET, All-ReLU, Importance Pruning) from the command line.

    python run_experiment.py                       # demo: digits, offline, ~1 minute
    python run_experiment.py --dataset madelon --data-dir ../shared/data/madelon
    python run_experiment.py --dataset higgs --activation relu --importance-pruning

Each --dataset starts from its preset (the paper's Table 7 for the paper
datasets); every flag below overrides it.  The CLI only parses: the work is
sparse_mlp.experiment.run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sparse_mlp.errors import ConfigError, SparseMLPError

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
3 training diverged, 130 interrupted."""


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths, got {text!r}")
    return vals


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run_experiment.py", description=__doc__.split("\n\n")[0],
        epilog=PRESET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False)
    d = p.add_argument_group("data")
    d.add_argument("--dataset", default="digits",
                   help="paper dataset (leukemia, higgs, madelon, fashionmnist, cifar10), "
                        "'synthetic', 'digits', or a path to .npz/.csv/.tsv/libsvm "
                        "(default: digits)")
    d.add_argument("--data-dir", help="folder holding the dataset files (default: "
                   "$SPARSE_MLP_DATA_DIR, else ./data)")
    d.add_argument("--n-train", type=int, help="training samples to use (default: all / the "
                   "paper's split)")
    d.add_argument("--n-samples", type=int, help="synthetic: training samples (same as --n-train)")
    d.add_argument("--n-test", type=int, help="test samples to use (default: the dataset's)")
    d.add_argument("--n-features", type=int, help="synthetic: features (default 65536)")
    d.add_argument("--n-classes", type=int, help="synthetic: classes (default 2)")
    d.add_argument("--label-column", help="CSV/TSV: label column name or index (default: last)")
    d.add_argument("--test-fraction", type=float, help="user files without a test set: "
                   "stratified test fraction (default 0.2)")

    a = p.add_argument_group("architecture (defaults: the dataset preset)")
    a.add_argument("--hidden", type=_int_list, help="hidden layer widths, e.g. 1000,1000,1000")
    a.add_argument("--epsilon", type=float, help="Erdos-Renyi density: ~eps*(n_in+n_out) "
                   "weights per layer")
    a.add_argument("--activation", choices=["relu", "allrelu", "leaky", "srelu", "tanh",
                                            "sigmoid"], help="hidden activation (preset: allrelu)")
    a.add_argument("--alpha", type=float, help="All-ReLU slope (sign alternates by layer); "
                   "leaky: negative slope (default 0.01)")
    a.add_argument("--output", choices=["softmax", "sigmoid"],
                   help="output + loss: softmax+cross-entropy (default) or sigmoid+MSE")
    a.add_argument("--weight-init", choices=["normal", "xavier", "he_uniform"],
                   help="initial values: normal N(0,1)/10, xavier or he_uniform")

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
    r.add_argument("--threads", type=int, help="kernel threads (default: all cores available)")
    r.add_argument("--eval-every", type=int, help="evaluate the test set every N epochs "
                   "(default 1)")
    r.add_argument("--eval-batch-size", type=int, help="samples per inference block "
                   "(default 1024)")
    r.add_argument("--out", help="output folder (default: runs/<dataset>_<time>_seed<seed>)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bar: one log line per epoch (automatic when not a terminal)")
    r.add_argument("--quiet", action="store_true", help="warnings and the result only")

    x = p.add_argument_group("reproduce the paper")
    x.add_argument("--reproduce", choices=["table2"],
                   help="table2: the sparse rows of Table 2 (ReLU / All-ReLU, with and "
                        "without Importance Pruning) for --dataset, over --seeds seeds, next "
                        "to the paper's numbers; resumes finished runs")
    x.add_argument("--seeds", type=int, default=5, help="seeds per row for --reproduce "
                   "(default 5)")
    return p


# flags that only mean something together with another setting
def _check_contradictions(args: argparse.Namespace, cfg_activation: str, dataset: str) -> None:
    problems = []
    if args.alpha is not None and cfg_activation not in ("allrelu", "leaky"):
        problems.append(f"--alpha has no effect with --activation {cfg_activation} "
                        "(it sets the All-ReLU or leaky slope)")
    if not args.importance_pruning:
        given = [f for f in ("ip_start", "ip_every", "ip_percentile")
                 if getattr(args, f) is not None]
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


def config_from_args(args: argparse.Namespace):
    """Preset of --dataset, then every flag the user gave."""
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.presets import preset_for

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
               "eval_every": "eval_every", "eval_batch_size": "eval_batch_size", "out": "out"}
    changes = {field: getattr(args, flag) for flag, field in mapping.items()
               if getattr(args, flag) is not None}
    if args.n_samples is not None:
        changes["n_train"] = args.n_samples
    if args.no_evolution:
        changes["evolution"] = False
    activation = changes.get("activation", cfg.activation)
    if activation not in ("allrelu", "leaky") and "alpha" not in changes:
        changes["alpha"] = None  # the preset's All-ReLU slope does not apply
    _check_contradictions(args, activation, args.dataset)
    cfg = cfg.replace(**changes)
    cfg.validate()
    return cfg


def _reproduce(args: argparse.Namespace) -> int:
    from sparse_mlp.reproduce import reproduce_table2

    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    allowed = {"data_dir", "epochs", "threads", "eval_every", "eval_batch_size"}
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in {"dataset", "reproduce", "seeds", "out",
                                             "no_progress", "quiet"}}
    extra = sorted(set(given) - allowed)
    if extra:
        raise ConfigError("--reproduce uses the paper's settings; it only takes --dataset, "
                          "--data-dir, --epochs, --seeds, --threads, --out (got "
                          + ", ".join("--" + e.replace("_", "-") for e in extra) + ")")
    overrides = {k: v for k, v in given.items() if k in allowed and k != "epochs"}
    out = args.out or f"results/{args.dataset}_table2"
    text = reproduce_table2(args.dataset, seeds=args.seeds, epochs=args.epochs, out=out,
                            overrides=overrides, progress=False)
    print(text)
    print(f"written: {out}/table2.md, {out}/table2.csv (one folder per row and seed)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    try:
        if args.reproduce:
            return _reproduce(args)
        cfg = config_from_args(args)
        from sparse_mlp.experiment import run

        if not args.quiet:
            print(f"sparse_mlp: {cfg.dataset} (preset {cfg.preset}), hidden "
                  f"{','.join(map(str, cfg.hidden))}, eps {cfg.epsilon}, {cfg.activation}"
                  f"{f' alpha {cfg.alpha}' if cfg.alpha is not None else ''}"
                  f"{', importance pruning' if cfg.importance_pruning else ''}, "
                  f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr}, seed {cfg.seed}",
                  flush=True)
        summary = run(cfg, progress=False if args.no_progress else None)
    except SparseMLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"done: best test accuracy {100 * summary['best_test_acc']:.2f}% "
          f"(epoch {summary['best_epoch'] + 1}), final {100 * summary['final_test_acc']:.2f}%, "
          f"nnz {summary['nnz_start']:,} -> {summary['nnz_end']:,}, "
          f"{summary['train_s']:.1f}s training")
    for row in summary["post_pruning"][1:]:
        print(f"  post-training pruning at the {row['percentile']:g}th percentile: "
              f"test accuracy {100 * row['test_acc']:.2f}%, nnz {row['nnz']:,}")
    print(f"results: {summary['out']}/ (config.json, metrics.csv, summary.json, "
          f"learning_curves.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
