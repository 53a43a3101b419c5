"""Table 4: the extreme-scale architectures on synthetic data, each in its
own process, after the memory planner decided how it fits."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import ConfigError, MemoryBudgetError, SparseMLPError
from ..experiment import dataset_shape, plan_memory, run
from ..memory import GiB, estimate
from ..presets import PRESETS
from ..report import write_json
from ..training import PREEMPTED_EXIT_CODE, PreemptedError
from .common import _finished, _fmt, _write_csv, _write_text
from .paper import paper_table4

log = logging.getLogger(__name__)

# architecture: the paper's neurons, parameters, workers, and minutes per epoch
# (weight initialisation, training, testing, weight evolution); paper_numbers.json
PAPER_TABLE4: dict[str, dict[str, Any]] = paper_table4()
# (name, hidden widths, epsilon, paper: neurons, parameters, workers, and minutes
# per epoch: weight initialisation, training, testing, weight evolution)
TABLE4_ARCHS: tuple[tuple[str, list[int], float, dict[str, Any]], ...] = tuple(
    (name, hidden, eps, PAPER_TABLE4[name]) for name, hidden, eps in (
        ("65536-0.5M-0.5M-2", [500_000] * 2, 10),
        ("65536-2.5M-2.5M-2", [2_500_000] * 2, 5),
        ("65536-5M-5M-2", [5_000_000] * 2, 5),
        ("65536-5Mx4-2", [5_000_000] * 4, 1),
        ("65536-5Mx10-2", [5_000_000] * 10, 1),
    ))
# beyond the table: the paper's stated aim, "more than 125 million neurons",
# which it did not reach; run only when named (--rows 65536-5Mx25-2)
NOT_IN_PAPER = "—"
TABLE4_EXTRA_ARCHS: tuple[tuple[str, list[int], float, dict[str, Any]], ...] = (
    ("65536-5Mx25-2", [5_000_000] * 25, 1,
     {"neurons": "125 M", "params": "the paper's aim, not reached", "workers": None,
      "init": NOT_IN_PAPER, "train": NOT_IN_PAPER, "test": NOT_IN_PAPER,
      "evolution": NOT_IN_PAPER}),
)
TABLE4_FEATURES = 65_536
TABLE4_EPOCHS = 2  # evolution runs after every epoch but the last: 2 epochs time it once
TABLE4_DROPOUT = 0.4


def table4_configs(epochs: int = TABLE4_EPOCHS, threads: int | None = None,
                   width_scale: float = 1.0, n_features: int | None = None,
                   n_samples: int | None = None, out: str | Path = "runs/table4",
                   archs=None, weight_init: str | None = None,
                   output_init: str | None = None, lr_fan_in_cap: float | None = None,
                   dropout: float | None = None, train_eval: int | None = None,
                   zeta: float | None = None,
                   regrow_init: str | None = None) -> list[tuple[str, TrainConfig, dict]]:
    """(name, configuration, paper figures) of every Table 4 architecture
    (``archs``: only these, which may name :data:`TABLE4_EXTRA_ARCHS`).
    ``width_scale`` multiplies every hidden width (trying the pipeline on a
    small machine); ``n_features`` / ``n_samples`` replace 65536 / 10000;
    ``weight_init`` replaces the preset's he_uniform, ``dropout`` Table 4's
    0.4, ``zeta`` SET's 0.3, ``output_init``, ``lr_fan_in_cap`` and
    ``regrow_init`` add those options (not the paper's: such runs get
    folders of their own,
    ``<architecture>_<init>_out-<init>_cap<F>_drop<p>_zeta<z>_regrow-zero``);
    ``train_eval`` measures the loss without dropout on that many training
    samples after every epoch (a measurement only: same folder).  The runs
    go in ``out/<folder>`` (default ``runs/table4``, never the tracked
    ``results/``)."""
    fields = dict(PRESETS["synthetic"])
    suffix = ""
    if weight_init is not None and weight_init != fields["weight_init"]:
        fields["weight_init"], suffix = weight_init, f"_{weight_init}"
    if output_init is not None:
        fields["output_init"] = output_init
        suffix += f"_out-{output_init}"
    if lr_fan_in_cap is not None:
        fields["lr_fan_in_cap"] = float(lr_fan_in_cap)
        suffix += f"_cap{lr_fan_in_cap:g}"
    drop = TABLE4_DROPOUT if dropout is None else float(dropout)
    if drop != TABLE4_DROPOUT:
        suffix += f"_drop{drop:g}"
    if zeta is not None and zeta != fields["zeta"]:
        fields["zeta"] = float(zeta)
        suffix += f"_zeta{zeta:g}"
    if regrow_init is not None and regrow_init != "init":
        fields["regrow_init"] = regrow_init
        suffix += f"_regrow-{regrow_init}"
    if train_eval is not None:
        fields["train_eval"] = int(train_eval)
    out = Path(out)
    every = TABLE4_ARCHS + TABLE4_EXTRA_ARCHS
    names = [a[0] for a in every]
    unknown = sorted(set(archs or ()) - set(names))
    if unknown:
        raise ConfigError(f"unknown Table 4 architecture(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(names)}")
    wanted = TABLE4_ARCHS if archs is None else [a for a in every if a[0] in archs]
    configs = []
    for name, hidden, eps, paper in wanted:
        widths = [max(1, int(round(h * width_scale))) for h in hidden]
        # a scaled run gets a folder of its own size, never the paper's name
        # (a finished run in a folder is reused)
        scaled = width_scale != 1.0 or (n_features or TABLE4_FEATURES) != TABLE4_FEATURES
        folder = ("-".join(map(str, [n_features or TABLE4_FEATURES, *widths, 2])) if scaled
                  else name)
        data = {"n_features": n_features or TABLE4_FEATURES}
        if n_samples is not None:
            data.update(n_train=int(round(0.7 * n_samples)),
                        n_test=n_samples - int(round(0.7 * n_samples)))
        cfg = TrainConfig(**{**fields, **data, "dataset": "synthetic", "preset": "synthetic",
                             "hidden": widths, "epsilon": eps, "epochs": epochs,
                             "batch_size": 128, "lr": 0.01, "dropout": drop, "threads": threads,
                             "out": str(out / (folder + suffix))})
        cfg.validate()
        configs.append((name, cfg, paper))
    return configs


def _table4_child(config_json: str) -> int:
    """Entry point of one Table 4 architecture in its own process (so that its
    peak memory is its own): run or continue it; exit 0, 75 (preempted) or
    the error's exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)

    cfg = TrainConfig.from_dict(json.loads(Path(config_json).read_text()))
    try:
        run(cfg, progress=False, resume="auto", overrides={"threads": cfg.threads})
    except SparseMLPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _run_child(cfg: TrainConfig, run_dir: Path) -> int:
    """Run one architecture in a child process, forwarding SIGTERM/SIGUSR1 to
    it (it checkpoints and exits 75); output in ``run.log``."""

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "table4_config.json"
    write_json(cfg_path, cfg.to_dict())
    code = ("import sys; from sparse_mlp.reproduce.table4 import _table4_child; "
            "sys.exit(_table4_child(sys.argv[1]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    with open(run_dir / "run.log", "a") as logf:
        child = subprocess.Popen([sys.executable, "-c", code, str(cfg_path)], stdout=logf,
                                 stderr=subprocess.STDOUT, env=env)
        previous = {}

        def forward(signum, frame):
            child.send_signal(signum)

        for name in ("SIGTERM", "SIGUSR1"):
            sig = getattr(signal, name, None)
            if sig is not None:
                try:
                    previous[sig] = signal.signal(sig, forward)
                except ValueError:  # not the main thread
                    pass
        try:
            return child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _epoch_losses(run_dir: Path, column: str = "train_loss") -> list[float]:
    """The training (or ``column``) loss of every epoch of a run (its
    metrics.csv); NaN for an epoch without one, [] without the column."""
    try:
        with open(run_dir / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or column not in rows[0]:
            return []
        return [float(r[column]) if r[column] else float("nan") for r in rows]
    except (OSError, ValueError):
        return []


def _plan_used(row: dict, run_dir: Path, cfg: TrainConfig, sizes: list[int],
               n_samples: int) -> None:
    """The plan the run itself used, in place of the one made here.  The run
    plans again with the memory free in its own process (with the dataset
    loaded, the parent's plan can be a larger micro-batch than fits there):
    its config.json says what it chose, and the estimate is that plan's."""
    try:
        used = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return
    mode = used.get("activation_memory") or row.get("plan")
    mb = int(used.get("micro_batch") or cfg.batch_size)
    if (mode, mb) == (row.get("plan"), row.get("micro_batch")):
        return
    est = estimate(sizes, cfg.epsilon, cfg.batch_size,
                   int(used.get("eval_batch_size") or cfg.eval_batch_size), n_samples,
                   srelu=cfg.activation == "srelu", activation_memory=mode, micro_batch=mb)
    log.info("Table 4: %s ran with %s activations, micro-batch %d (planned here: %s, %s)",
             run_dir.name, mode, mb, row.get("plan"), row.get("micro_batch"))
    row.update(plan=mode, micro_batch=mb, estimated_gib=est.total / GiB)


def reproduce_table4(out: str | Path, epochs: int = TABLE4_EPOCHS,
                     threads: int | None = None, width_scale: float = 1.0,
                     n_features: int | None = None, n_samples: int | None = None,
                     archs=None, isolate: bool = True, dry_run: bool = False,
                     weight_init: str | None = None, output_init: str | None = None,
                     lr_fan_in_cap: float | None = None, dropout: float | None = None,
                     train_eval: int | None = None, zeta: float | None = None,
                     regrow_init: str | None = None) -> str:
    """The extreme-scale rows of Table 4 on synthetic data; returns the markdown.

    For every architecture the memory planner (``experiment.plan_memory``)
    first decides how a batch is held (fast or lean activations,
    micro-batches) or refuses it (reported, not run).  Each run goes in its
    own process (``isolate``) so the peak RSS is that architecture's; a
    finished run (summary.json) is reused, an unfinished one continues from
    its checkpoint.  ``dry_run``: the plans only, nothing is trained.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, cfg, paper in table4_configs(epochs, threads, width_scale, n_features,
                                           n_samples, out, archs, weight_init,
                                           output_init, lr_fan_in_cap, dropout,
                                           train_eval, zeta, regrow_init):
        f, c, n = dataset_shape(cfg)
        arch = "-".join(map(str, [f, *cfg.hidden, c]))
        scaled = width_scale != 1.0 or f != TABLE4_FEATURES
        row: dict[str, Any] = {"architecture": arch, "name": arch if scaled else name,
                               "paper_architecture": name, "epsilon": cfg.epsilon,
                               "neurons": int(sum(cfg.hidden) + f + c), **{
                                   f"paper_{k}": v for k, v in paper.items()}}
        try:
            planned, est = plan_memory(cfg, f, c, n)
            row.update(plan=est.activation_memory, micro_batch=est.micro_batch,
                       estimated_gib=est.total / GiB, nnz_expected=est.nnz, status="planned")
        except MemoryBudgetError as exc:
            row.update(status="does not fit", message=str(exc).split("\n")[0])
            rows.append(row)
            continue
        run_dir = Path(cfg.out)
        summary_path = run_dir / "summary.json"
        if not dry_run:
            if _finished(summary_path, cfg) is None:
                log.info("Table 4: %s -> %s", name, run_dir)
                if isolate:
                    rc = _run_child(cfg, run_dir)
                    if rc == PREEMPTED_EXIT_CODE:
                        raise PreemptedError(f"{name} was preempted (checkpoint in {run_dir}); "
                                             f"run the same command again to continue")
                    if rc != 0:
                        row.update(status=f"failed (exit {rc}, see {run_dir / 'run.log'})")
                        rows.append(row)
                        continue
                else:
                    run(cfg, progress=False, resume="auto", overrides={"threads": cfg.threads})
            _plan_used(row, run_dir, cfg, [f, *cfg.hidden, c], n)
            s = json.loads(summary_path.read_text())
            e = int(s["epochs"])
            row.update(status="ok", epochs=e, nnz=s["nnz_start"], threads=s["threads"],
                       init_min=s["init_s"] / 60, train_min_epoch=s["train_s"] / e / 60,
                       test_min_epoch=s["test_s"] / e / 60,
                       evolution_min_epoch=(s["evolution_s"] / (e - 1) / 60 if e > 1 else None),
                       peak_rss_gib=s["peak_rss_bytes"] / GiB,
                       weight_init=cfg.weight_init, output_init=cfg.output_init,
                       lr_fan_in_cap=cfg.lr_fan_in_cap, dropout=cfg.dropout, zeta=cfg.zeta,
                       regrow_init=cfg.regrow_init,
                       train_loss=_epoch_losses(run_dir),
                       train_eval_loss=_epoch_losses(run_dir, "train_eval_loss"),
                       test_loss=_epoch_losses(run_dir, "test_loss"),
                       best_test_acc=s["best_test_acc"])
        rows.append(row)
    return write_table4(rows, out, epochs, width_scale, isolate, dry_run)


def _table4_recipe(row: dict) -> str:
    """How a Table 4 row was initialised and stepped, in words."""
    init, out_init = row.get("weight_init", "he_uniform"), row.get("output_init")
    cap = row.get("lr_fan_in_cap")
    drop = row.get("dropout", TABLE4_DROPOUT)
    zeta = row.get("zeta", PRESETS["synthetic"]["zeta"])
    regrow = row.get("regrow_init", "init")
    if (init == "he_uniform" and out_init is None and cap is None and drop == TABLE4_DROPOUT
            and zeta == PRESETS["synthetic"]["zeta"] and regrow == "init"):
        return "the paper's (he_uniform, lr 0.01 in every layer)"
    words = [f"weights {init}"]
    if out_init is not None:
        words.append(f"output layer {out_init}")
    if cap is not None:
        words.append(f"step lr x min(1, {cap:g} / fan-in) (--lr-fan-in-cap {cap:g})")
    if drop != TABLE4_DROPOUT:
        words.append(f"dropout {drop:g}")
    if zeta != PRESETS["synthetic"]["zeta"]:
        words.append(f"SET zeta {zeta:g}")
    if regrow != "init":
        words.append(f"SET regrows at {regrow} (--regrow-init {regrow})")
    return ", ".join(words) + " (not the paper's)"


def _losses(values) -> str:
    """Losses by epoch as 'a → b → c' (epochs without one, e.g. not evaluated, left out)."""
    return " → ".join(f"{v:.4f}" for v in values or [] if v == v)


def write_table4(rows: list[dict], out: Path, epochs: int, width_scale: float,
                 isolate: bool, dry_run: bool) -> str:
    lines = [f"# Table 4: extreme-scale sparse MLPs on synthetic data, {epochs} epochs"
             f"{' (memory plans only: --dry-run)' if dry_run else ''}", ""]
    if width_scale != 1.0:
        lines += [f"Every hidden width scaled by {width_scale:g}: NOT the paper's sizes.", ""]
    lines += ["| architecture | eps | weights | plan (est. GiB) | init [min] (paper) | "
              "train [min/epoch] (paper) | test [min/epoch] (paper) | evolution [min/epoch] "
              "(paper) | peak RSS [GiB] | train loss by epoch | ... without dropout | "
              "test loss by epoch | best test acc [%] |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "does not fit" or r["status"].startswith("failed"):
            lines.append(f"| {r['name']} | {r['epsilon']:g} | | {r['status']}: "
                         f"{r.get('message', '')} | ({r['paper_init']}) | ({r['paper_train']}) "
                         f"| ({r['paper_test']}) | ({r['paper_evolution']}) | | | | | |")
            continue
        plan = r["plan"] + (f", micro-batch {r['micro_batch']}" if r["micro_batch"] < 128
                            else "")
        plan += f" ({r['estimated_gib']:.1f})"
        if r["status"] != "ok":
            lines.append(f"| {r['name']} | {r['epsilon']:g} | {r['nnz_expected'] / 1e6:.1f} M "
                         f"expected ({r['paper_params']}) | {plan} | ({r['paper_init']}) | "
                         f"({r['paper_train']}) | ({r['paper_test']}) | "
                         f"({r['paper_evolution']}) | | | | | |")
            continue
        lines.append(
            f"| {r['name']} | {r['epsilon']:g} | {r['nnz'] / 1e6:.1f} M "
            f"({r['paper_params']}) | {plan} | {r['init_min']:.2f} ({r['paper_init']}) | "
            f"{r['train_min_epoch']:.2f} ({r['paper_train']}) | {r['test_min_epoch']:.2f} "
            f"({r['paper_test']}) | {_fmt(r['evolution_min_epoch'], '.2f')} "
            f"({r['paper_evolution']}) | {r['peak_rss_gib']:.2f} | "
            f"{_losses(r.get('train_loss'))} | {_losses(r.get('train_eval_loss'))} | "
            f"{_losses(r.get('test_loss'))} | "
            f"{100 * r['best_test_acc']:.2f} |")
    threads = sorted({r["threads"] for r in rows if "threads" in r})
    recipes = sorted({_table4_recipe(r) for r in rows if r["status"] == "ok"})
    if recipes and recipes != ["the paper's (he_uniform, lr 0.01 in every layer)"]:
        lines += ["", "Initial values and step sizes: " + "; ".join(recipes) + "."]
    lines += ["", "This engine: sequential training (one process, "
                  f"{'/'.join(map(str, threads)) or 'the given'} kernel threads), each "
                  f"architecture {'in its own process' if isolate else 'in this process'}; "
                  "the paper: WASAP-SGD with 16 (8) workers on a 96-core machine. Test: the "
                  "3000-sample test set once per epoch. Loss without dropout: on the "
                  "first N training samples after every epoch (--train-eval N; blank when "
                  "not asked). Peak RSS: the whole process, data "
                  "included. The plan is the memory planner's (--dry-run): fast or lean "
                  "activations, micro-batches. Weights: ours are Erdos-Renyi with the "
                  "probability capped at 1, so a 0.5M x 2 output layer holds at most 1 M "
                  "(the paper's counts take eps x (n_in + n_out) = 5 M there)."]
    text = "\n".join(lines) + "\n"
    # a dry run never overwrites a measured table
    stem = "table4_plan" if dry_run else "table4"
    _write_text(out / f"{stem}.md", text)
    _write_csv(out / f"{stem}.csv", rows)
    return text

