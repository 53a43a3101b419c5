"""One experiment end to end: data -> model -> training -> results on disk.

``run(cfg)`` is what ``run_experiment.py`` calls.  It writes into the
output folder:
  config.json          the fully resolved configuration (and the data's provenance)
  metrics.csv          one row per epoch (written as training goes)
  summary.json         best / final accuracy, nnz, times, peak memory, versions
                       (of the whole run, over all its sessions)
  post_pruning.csv     Table 6 rows, when --post-prune is given
  learning_curves.png  loss, accuracy and nnz over epochs
  diagnostics.json     with cfg.diagnostics: per epoch the gradient flow, nnz per
                       layer and connections per input (sparse_mlp.figures)
  checkpoints/         ckpt_e<epochs done>_s<steps done>.h5, the newest
                       --keep-checkpoints of them (sparse_mlp.checkpoint)
  topology.h5          every epoch's connectivity, with --save-topology
                       (sparse_mlp.topology_log)

``run(cfg, resume=...)`` continues a run from a checkpoint (a path, or
"auto": the newest valid one in ``cfg.out``) exactly where it stopped:
metrics.csv is rewritten with the checkpoint's rows and continued,
checkpoints newer than the one resumed from are renamed ``*.superseded``.
SIGTERM / SIGUSR1 during training stop the run after the current batch
with a checkpoint (:class:`~sparse_mlp.training.PreemptedError`).
``evaluate_checkpoint`` evaluates a saved model on a dataset.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .alpha import resolve_alpha
from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointDir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DivergenceError, MemoryBudgetError
from .evolution import importance_prune
from .growth import initial_layers
from .kernels import build_info, default_threads
from .layers import MAX_NNZ, expected_nnz
from .memory import GiB, MemoryEstimate, available_bytes, estimate, largest_batch, plan
from .model import SparseMLP
from .report import MetricsCSV, plot_learning_curves, write_json
from .topology_log import TOPOLOGY_FILE, TopologyLog
from .training import (
    DIAGNOSTIC_KEYS,
    METRIC_COLUMNS,
    PreemptedError,
    RandomStreams,
    StopRequest,
    Trainer,
    TrainState,
    stop_on_signals,
)

log = logging.getLogger(__name__)

# settings a resumed run may change (the others must match the checkpoint's)
RESUME_OVERRIDABLE = ("epochs", "lr", "threads", "eval_every", "eval_batch_size", "train_eval",
                      "out", "data_dir", "post_prune", "checkpoint_every", "keep_checkpoints",
                      "save_topology")
# ... of which these make the continuation differ from an uninterrupted run
RESUME_INEXACT = ("epochs", "lr")


def resolve_out_dir(cfg: TrainConfig) -> Path:
    """The run's folder: --out, or a new runs/<dataset>_<time> folder."""
    if cfg.out:
        out = Path(cfg.out)
    else:
        name = Path(cfg.dataset).stem if ("/" in cfg.dataset or "." in cfg.dataset) \
            else cfg.dataset
        out = Path("runs") / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}_seed{cfg.seed}"
        k = 1
        while out.exists():
            out = out.with_name(out.name.split("__")[0] + f"__{k}")
            k += 1
    out.mkdir(parents=True, exist_ok=True)
    return out


def load_data(cfg: TrainConfig):
    """The dataset of a configuration (sparse_mlp.datasets)."""
    from .datasets import load_dataset
    return load_dataset(cfg.dataset, cfg.data_dir, n_train=cfg.n_train, n_test=cfg.n_test,
                        n_features=cfg.n_features, n_classes=cfg.n_classes,
                        label_column=cfg.label_column, test_fraction=cfg.test_fraction,
                        seed=cfg.seed)


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def versions() -> dict[str, Any]:
    import scipy
    return {"sparse_mlp": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, **build_info(),
            "machine": platform.machine(), "platform": platform.platform()}


# shapes of the named datasets (features, classes, train + test rows), for
# --dry-run without loading them; synthetic follows its flags
KNOWN_SHAPES = {"madelon": (500, 2, 2600), "higgs": (28, 2, 155_000),
                "fashionmnist": (784, 10, 70_000), "cifar10": (3072, 10, 60_000),
                "leukemia": (54_675, 18, 2096), "digits": (64, 10, 1797)}


def dataset_shape(cfg: TrainConfig) -> tuple[int, int, int] | None:
    """(features, classes, samples) of a configuration's data without
    loading it, or None when only loading tells (a user's file)."""
    name = cfg.dataset.lower().replace("-", "").replace("_", "")
    if name == "synthetic":
        from .datasets import (
            SYNTHETIC_N_CLASSES,
            SYNTHETIC_N_FEATURES,
            SYNTHETIC_N_SAMPLES,
            SYNTHETIC_TEST_FRACTION,
        )
        n_train = cfg.n_train or int(round(SYNTHETIC_N_SAMPLES * (1 - SYNTHETIC_TEST_FRACTION)))
        n_test = cfg.n_test or int(round(SYNTHETIC_N_SAMPLES * SYNTHETIC_TEST_FRACTION))
        return (cfg.n_features or SYNTHETIC_N_FEATURES, cfg.n_classes or SYNTHETIC_N_CLASSES,
                n_train + n_test)
    return KNOWN_SHAPES.get(name)


def plan_memory(cfg: TrainConfig, n_features: int, n_classes: int, n_samples: int,
                available: int | None = None) -> tuple[TrainConfig, MemoryEstimate]:
    """Decide how a batch is held (fast/lean activations, micro-batches,
    evaluation block) so that the run fits in memory, before anything is
    allocated; refuses with the largest batch that fits when nothing does.
    Returns the configuration with those choices resolved."""
    sizes = [n_features, *cfg.hidden, n_classes]
    est = plan(sizes, cfg.epsilon, cfg.batch_size, cfg.eval_batch_size, n_samples,
               srelu=cfg.activation == "srelu", activation_memory=cfg.activation_memory,
               micro_batch=cfg.micro_batch, available=available)
    micro = est.micro_batch if est.micro_batch < cfg.batch_size else None
    return cfg.replace(activation_memory=est.activation_memory, micro_batch=micro,
                       eval_batch_size=est.eval_block), est


def build_model(cfg: TrainConfig, n_features: int, n_classes: int, streams: RandomStreams,
                n_samples: int = 0) -> SparseMLP:
    """Check the memory plan, then draw the sparse network."""
    sizes = [n_features, *cfg.hidden, n_classes]
    if cfg.activation_memory == "auto":
        cfg, _ = plan_memory(cfg, n_features, n_classes, n_samples)
    else:
        plan(sizes, cfg.epsilon, cfg.batch_size, cfg.eval_batch_size, n_samples,
             srelu=cfg.activation == "srelu", activation_memory=cfg.activation_memory,
             micro_batch=cfg.micro_batch or cfg.batch_size)
    # --density-allocation erk draws the layers here (growth.py); None: SparseMLP's ER
    layers = initial_layers(sizes, cfg.epsilon, cfg.weight_init, streams.init,
                            cfg.density_allocation, cfg.erk_power, cfg.output_init)
    return SparseMLP(sizes, epsilon=cfg.epsilon, activation=cfg.activation, alpha=cfg.alpha,
                     init=cfg.weight_init, output=cfg.output, dropout=cfg.dropout,
                     rng=streams.init, n_threads=cfg.threads or default_threads(),
                     layers=layers, activation_memory=cfg.activation_memory,
                     output_init=cfg.output_init, lr_fan_in_cap=cfg.lr_fan_in_cap)


def dry_run(cfg: TrainConfig) -> str:
    """The memory plan of a configuration, as text (nothing is allocated)."""
    shape = dataset_shape(cfg)
    if shape is None:
        data = load_data(cfg)
        shape = (data.n_features, data.n_classes, data.X_train.shape[0] + data.X_test.shape[0])
    n_features, n_classes, n_samples = shape
    sizes = [n_features, *cfg.hidden, n_classes]
    srelu = cfg.activation == "srelu"
    lines = [f"model {'-'.join(map(str, sizes))}, epsilon {cfg.epsilon}, batch "
             f"{cfg.batch_size}; dataset {n_samples:,} samples x {n_features:,} features; "
             f"available memory {available_bytes() / GiB:.2f} GiB"]
    for mode in ("fast", "lean"):
        est = estimate(sizes, cfg.epsilon, cfg.batch_size, cfg.eval_batch_size, n_samples,
                       srelu, mode)
        fits = largest_batch(sizes, cfg.epsilon, cfg.eval_batch_size, n_samples, srelu,
                             activation_memory=mode, already_loaded=False)
        lines.append(f"{mode} activations, whole batch: {est.total / GiB:.2f} GiB; largest "
                     f"batch that fits: {fits:,}")
    try:
        _, est = plan_memory(cfg, n_features, n_classes, n_samples)
        lines.append("plan:")
        lines += ["  " + ln for ln in est.lines()]
    except MemoryBudgetError as exc:
        lines.append(f"plan: does not fit. {exc}")
    return "\n".join(lines)


def post_training_pruning(model: SparseMLP, X_test, y_test, percentiles, batch_size: int
                          ) -> list[dict]:
    """Paper Table 6: prune once at each percentile (on a copy) and evaluate."""
    rows = []
    base_loss, base_acc = model.evaluate(X_test, y_test, batch_size)
    rows.append({"percentile": 0, "test_acc": base_acc, "test_loss": base_loss,
                 "nnz": model.nnz})
    for p in percentiles:
        m = model.copy()
        for layer in m.layers[:-1]:
            importance_prune(layer, p, n_threads=m.n_threads)
        loss, acc = m.evaluate(X_test, y_test, batch_size)
        rows.append({"percentile": p, "test_acc": acc, "test_loss": loss, "nnz": m.nnz})
    return rows


def check_feasible(cfg: TrainConfig, n_features: int, n_classes: int, n_train: int) -> None:
    """Refuse settings that cannot work with this data, before the model is
    allocated: a batch larger than the training set, a layer that would get
    no weights or more than one layer can index.

    A layer for which epsilon asks for more weights than it has positions
    is not refused: the Erdos-Renyi probability is capped at 1
    (REFERENCE.md), so it is fully connected, as the paper's own small
    output layers are (Higgs, Madelon: 1000 x 2 and 400 x 2 at epsilon 10).
    """
    problems = []
    if n_train < cfg.batch_size:
        problems.append(f"--batch-size {cfg.batch_size} is larger than the training set "
                        f"({n_train} samples); use a batch of at most {n_train}")
    sizes = [n_features, *cfg.hidden, n_classes]
    if getattr(cfg, "density_allocation", "er") == "er":
        for li, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            want = cfg.epsilon * (a + b)
            evolves = li < len(sizes) - 2 and cfg.evolution
            if want < 1:
                problems.append(
                    f"layer {li + 1} ({a} -> {b} neurons) would get {want:.2g} weights on "
                    f"average at --epsilon {cfg.epsilon:g}, most likely none; use --epsilon "
                    f"{1 / (a + b):.2g} or more")
            elif want >= a * b:
                log.info("layer %d (%d -> %d) is fully connected: --epsilon %g asks for %.0f "
                         "weights, more than its %d positions (the probability is capped at "
                         "1)%s", li + 1, a, b, cfg.epsilon, want, a * b,
                         "; SET there only re-draws its smallest weights" if evolves else "")
            if expected_nnz(a, b, cfg.epsilon) > MAX_NNZ:
                problems.append(
                    f"layer {li + 1} ({a} -> {b} neurons) would hold about "
                    f"{expected_nnz(a, b, cfg.epsilon):,} weights, more than the {MAX_NNZ:,} "
                    f"one layer can index; lower --epsilon or the layer widths")
    if problems:
        raise ConfigError("impossible settings for this data (refused before building the "
                          "model):\n  - " + "\n  - ".join(problems))


def data_fingerprint(data) -> str:
    """A short hash of a dataset's shapes, labels and 256 evenly spaced rows of
    each split: a resumed run checks that it trains on the same data."""
    h = hashlib.sha256()
    for arr in (data.X_train, data.y_train, data.X_test, data.y_test):
        a = np.asarray(arr)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        if a.shape[0]:
            rows = np.unique(np.linspace(0, a.shape[0] - 1, min(a.shape[0], 256)).astype(int))
            h.update(np.ascontiguousarray(a[rows]).tobytes())
    return h.hexdigest()[:32]


def check_same_data(ckpt: Checkpoint, data, fingerprint: str) -> None:
    """Refuse to resume a run on other data than it trained on."""
    sizes = ckpt.model.sizes
    if [data.n_features, data.n_classes] != [sizes[0], sizes[-1]]:
        raise ConfigError(f"the data have {data.n_features} features and {data.n_classes} "
                          f"classes, the model of {ckpt.path} {sizes[0]} and {sizes[-1]}")
    if ckpt.extra.get("run", {}).get("data_fingerprint", fingerprint) != fingerprint:
        raise ConfigError(f"the data differ from those the run of {ckpt.path} trained on "
                          f"(another file, split or --n-train/--n-test?); resume it with the "
                          f"same data")


def find_resume_checkpoint(resume: str | Path, cfg: TrainConfig) -> Checkpoint | None:
    """The checkpoint to continue: ``resume`` is a checkpoint file, a run
    folder (its newest valid checkpoint) or "auto" (the newest valid
    checkpoint in ``cfg.out``; None when that folder has none yet)."""
    if str(resume) == "auto":
        if not cfg.out:
            raise ConfigError("--resume auto needs --out, the folder of the run to continue")
        folder = Path(cfg.out) / CHECKPOINT_DIR
        n_files = len(list_checkpoints(folder))
        ckpt = latest_checkpoint(folder)
        if ckpt is None and n_files:
            raise CheckpointError(f"none of the {n_files} checkpoints in {folder} loads (they "
                                  f"are renamed *.corrupt); resume from another copy or start "
                                  f"a new run with another --out")
        if ckpt is None:
            log.info("--resume auto: no checkpoint in %s yet, starting a new run", folder)
            return None
    else:
        ckpt = load_checkpoint(resolve_checkpoint(resume))
    if not ckpt.resumable:
        raise CheckpointError(f"{ckpt.path} holds a model only (no configuration, loop state "
                              f"or random streams): it can predict, not resume training")
    log.info("resuming from %s: %d epochs and %d steps done (written %s by sparse_mlp %s)",
             ckpt.path, ckpt.state.epoch, ckpt.state.step, ckpt.created,
             ckpt.sparse_mlp_version)
    return ckpt


def resumed_config(ckpt: Checkpoint, overrides: dict[str, Any] | None,
                   out: str | None = None) -> TrainConfig:
    """The checkpoint's configuration with the settings the user gave again.

    ``overrides`` maps TrainConfig fields to the values the user set
    explicitly.  Equal values are fine; different ones are applied for the
    fields in :data:`RESUME_OVERRIDABLE` and refused for the others (they
    would make a different run).  The run continues in ``out``, else in the
    run folder holding the checkpoint, else in its saved ``out``; with this
    machine's cores unless ``threads`` is given."""
    saved = ckpt.cfg
    changes: dict[str, Any] = {"threads": None}
    if out:
        changes["out"] = str(out)
    elif ckpt.path.parent.name == CHECKPOINT_DIR:
        changes["out"] = str(ckpt.path.parent.parent)
    conflicts = []
    for key, value in (overrides or {}).items():
        if key == "threads":
            changes["threads"] = value
        if key in ("threads", "out"):  # where and how fast, not what, it computes
            continue
        if getattr(saved, key) == value:
            continue
        if key in RESUME_OVERRIDABLE:
            changes[key] = value
            if key in RESUME_INEXACT:
                log.warning("resuming with --%s %s instead of %s: the continuation is no "
                            "longer identical to an uninterrupted run", key.replace("_", "-"),
                            value, getattr(saved, key))
        else:
            conflicts.append(f"--{key.replace('_', '-')} {value} (the run has "
                             f"{getattr(saved, key)})")
    if conflicts:
        raise ConfigError(
            f"--resume continues the run of {ckpt.path} with its saved settings, and these "
            f"flags differ from them:\n  - " + "\n  - ".join(conflicts) + "\nDrop them, or "
            "start a new run in another --out. On resume only "
            + ", ".join("--" + k.replace("_", "-") for k in RESUME_OVERRIDABLE)
            + " may change.")
    cfg = saved.replace(**changes)
    cfg.validate()
    if cfg.epochs < ckpt.state.epoch or (cfg.epochs == ckpt.state.epoch and ckpt.state.batch):
        raise ConfigError(f"--epochs {cfg.epochs}: the run in {ckpt.path} has already done "
                          f"{ckpt.state.epoch} epochs")
    return cfg


def run(cfg: TrainConfig, data=None, progress: bool | None = None,
        resume: str | Path | None = None,
        overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one experiment, or continue one; returns the summary (also in summary.json).

    Parameters
    ----------
    cfg : TrainConfig
        The run's settings (on resume: only ``out``, for "auto", and what
        ``overrides`` names are used; the checkpoint has the rest).
    data : Dataset, optional
        Use this data instead of loading ``cfg.dataset``.
    progress : bool, optional
        Progress bar (default: when stderr is a terminal).
    resume : str or Path, optional
        A checkpoint file, a run folder, or "auto" (the newest valid
        checkpoint in ``cfg.out``; a new run from ``cfg`` when there is none).
    overrides : dict, optional
        On resume, the settings the user gave explicitly (see
        :func:`resumed_config`).

    Raises
    ------
    PreemptedError
        SIGTERM / SIGUSR1 arrived: the run stopped after a batch and saved a
        checkpoint (exit status 75 on the command line).
    DivergenceError
        NaN or inf appeared; the message names the last good checkpoint.
    """
    cfg.validate()
    t_start = time.perf_counter()
    # 1. where to start: a new run, or a checkpoint (its settings win)
    ckpt = find_resume_checkpoint(resume, cfg) if resume is not None else None
    if ckpt is not None:
        out_given = cfg.out if str(resume) == "auto" else (overrides or {}).get("out")
        cfg = resumed_config(ckpt, overrides, out=out_given)
    if cfg.parallel:  # WASAP / WASSP run over MPI: sparse_mlp.parallel.run_parallel
        par = ckpt.extra.get("parallel", {}) if ckpt is not None else {}
        ranks = f"{int(par['workers']) + 1}" if "workers" in par else "K+1"
        raise ConfigError(
            f"--parallel {cfg.parallel}{f' (the run of {ckpt.path})' if ckpt else ''} trains "
            f"over MPI: start it with `mpiexec -n {ranks} python run_experiment.py --parallel "
            f"{cfg.parallel} ...` (sparse_mlp.parallel.run_parallel from Python)")
    # 2. the data, and what cannot work with it, refused before any allocation
    if data is None:
        data = load_data(cfg)
    check_feasible(cfg, data.n_features, data.n_classes, data.X_train.shape[0])
    fingerprint = data_fingerprint(data)
    if ckpt is not None:
        check_same_data(ckpt, data, fingerprint)
    cfg = resolve_alpha(cfg, data.X_train)  # --alpha auto (alpha.py), before config.json
    if ckpt is None:  # how a batch is held in memory, decided before anything is allocated
        model_plan = plan_memory(cfg, data.n_features, data.n_classes,
                                 data.X_train.shape[0] + data.X_test.shape[0])
        cfg = model_plan[0]
    threads = cfg.threads or default_threads()
    cfg = cfg.replace(threads=threads)
    out = resolve_out_dir(cfg)
    cfg = cfg.replace(out=str(out))
    write_json(out / "config.json", {**cfg.to_dict(), "data": data.info,
                                     "n_features": data.n_features,
                                     "n_classes": data.n_classes, "classes": data.classes})
    log.info("dataset %s: %d train / %d test samples, %d features, %d classes", data.name,
             data.X_train.shape[0], data.X_test.shape[0], data.n_features, data.n_classes)

    # 3. model, random streams and loop state: drawn now, or the checkpoint's
    if ckpt is None:
        streams = RandomStreams(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(cfg, data.n_features, data.n_classes, streams,
                            data.X_train.shape[0] + data.X_test.shape[0])
        state = TrainState()
        info = {"init_s": time.perf_counter() - t0,
                "activation_memory": model_plan[1].activation_memory,
                "micro_batch": cfg.micro_batch or cfg.batch_size,
                "nnz_per_layer_start": model.nnz_per_layer(),
                "data_fingerprint": fingerprint, "wall_s": 0.0, "sessions": []}
        log.info("model %s: %s weights (%s per layer), init %.2fs, %d threads",
                 "-".join(map(str, model.sizes)), f"{model.nnz:,}", info["nnz_per_layer_start"],
                 info["init_s"], threads)
    else:
        model, streams, state = ckpt.model, ckpt.streams(), ckpt.state
        model.n_threads = threads
        model.lean = cfg.activation_memory == "lean"
        info = dict(ckpt.extra.get("run", {}))
        # a checkpoint written outside run() (Trainer, estimator) lacks the run's record
        info.setdefault("init_s", 0.0)
        info.setdefault("nnz_per_layer_start", model.nnz_per_layer())
        info.setdefault("data_fingerprint", fingerprint)
    info["sessions"] = [*info.get("sessions", []),
                        {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "resumed_from": None if ckpt is None else str(ckpt.path),
                         "epoch": state.epoch, "step": state.step}]
    wall_before = float(info.get("wall_s", 0.0))

    # 4. training: metrics rows, topology snapshots and checkpoints as it goes
    ckdir = CheckpointDir(out / CHECKPOINT_DIR, keep=cfg.keep_checkpoints)
    if ckpt is not None:
        ckdir.retire_after(state.step, state.epoch)
    csv_out = MetricsCSV(out / "metrics.csv", METRIC_COLUMNS)
    for row in state.history:  # a resumed run: the rows up to its checkpoint
        csv_out(row)
    topo = TopologyLog(out / TOPOLOGY_FILE, model.sizes) if cfg.save_topology else None
    if topo is not None:
        topo.start(model) if ckpt is None else topo.resume(state.epoch, model)

    def on_epoch(row: dict) -> None:
        csv_out(row)
        if topo is not None:
            topo.append(row["epoch"] + 1, model)

    def on_checkpoint(trainer: Trainer, reason: str) -> Path | None:
        info["wall_s"] = wall_before + time.perf_counter() - t_start
        t0 = time.perf_counter()
        try:
            path = ckdir.save(cfg=cfg, model=model, state=trainer.state,
                              streams=trainer.streams_state(), extra={"run": info})
        except CheckpointError as exc:
            if reason == "preempted":
                raise
            log.error("%s Training goes on without this checkpoint.", exc)
            return None
        log.info("%s checkpoint %s (%.1f MB, %.2fs)", reason, path,
                 path.stat().st_size / 1e6, time.perf_counter() - t0)
        return path

    stop = StopRequest()
    trainer = Trainer(cfg, model, data.X_train, data.y_train, data.X_test, data.y_test,
                      streams, on_epoch=on_epoch, state=state, on_checkpoint=on_checkpoint,
                      stop=stop)
    try:
        with stop_on_signals(stop):
            state = trainer.run(progress=progress)
    except PreemptedError as exc:
        raise PreemptedError(f"{exc}. Continue it exactly with --resume auto --out {out}",
                             exc.checkpoint) from None
    except DivergenceError as exc:
        good = ckdir.list()
        raise DivergenceError(
            f"{exc} " + (f"The last good checkpoint is {good[-1]}: continue from it with "
                         f"--resume {good[-1]} and a lower --lr." if good else
                         "No checkpoint of this run was written before it diverged.")
        ) from None
    finally:
        csv_out.close()
    hist = state.history

    post_rows = []
    if cfg.post_prune:
        post_rows = post_training_pruning(model, data.X_test, data.y_test, cfg.post_prune,
                                          cfg.eval_batch_size)
        pp = MetricsCSV(out / "post_pruning.csv", ["percentile", "test_acc", "test_loss", "nnz"])
        for r in post_rows:
            pp(r)
        pp.close()

    latest = ckdir.list()
    summary = summarize_run(
        cfg, data.name, model, state, info, [int(n) for n in info["nnz_per_layer_start"]],
        wall_before + time.perf_counter() - t_start, threads, post_rows,
        latest[-1] if latest else None, str(out / TOPOLOGY_FILE) if topo is not None else None,
        out)
    finish_run(out, cfg, summary, hist, f"{data.name} {summary['architecture']} {cfg.activation}"
                                  f"{' + IP' if cfg.importance_pruning else ''}")
    return summary


def summarize_run(cfg: TrainConfig, data_name: str, model, state, info: dict,
                  nnz_start: list[int], wall_s: float, threads: int, post_rows: list,
                  checkpoint, topology: str | None, out: Path) -> dict[str, Any]:
    """summary.json of a finished run (sparse, dense or parallel): the
    fields every run reports; ``info`` is the run's session record."""
    hist = state.history
    nan = float("nan")
    last = hist[-1] if hist else {"test_acc": nan, "test_loss": nan, "train_loss": nan}
    return {
        "dataset": data_name,
        "architecture": "-".join(map(str, model.sizes)),
        "activation": cfg.activation, "alpha": cfg.alpha,
        "importance_pruning": cfg.importance_pruning,
        "epochs": cfg.epochs, "seed": cfg.seed,
        "best_test_acc": state.best_test_acc, "best_epoch": state.best_epoch,
        "final_test_acc": last["test_acc"], "final_test_loss": last["test_loss"],
        "final_train_loss": last["train_loss"],
        "nnz_start": int(sum(nnz_start)), "nnz_end": model.nnz,
        "nnz_per_layer_start": nnz_start, "nnz_per_layer_end": model.nnz_per_layer(),
        "init_s": info["init_s"],
        "train_s": sum(r["train_s"] for r in hist),
        "test_s": sum(r["test_s"] for r in hist),
        "evolution_s": sum(r.get("evolution_s", 0.0) for r in hist),
        "wall_s": wall_s,
        "mean_epoch_train_s": float(np.mean([r["train_s"] for r in hist])) if hist else 0.0,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": threads,
        "post_pruning": post_rows,
        "sessions": len(info["sessions"]),
        "resumed_from": [x["resumed_from"] for x in info["sessions"] if x["resumed_from"]],
        "checkpoint": str(checkpoint) if checkpoint else None,
        "topology": topology,
        "versions": versions(),
        "out": str(out),
    }


def finish_run(out: Path, cfg: TrainConfig, summary: dict, hist: list[dict], title: str) -> None:
    """The last files of a run: diagnostics.json (with cfg.diagnostics: per
    epoch the gradient flow, nnz per layer, inputs' connections),
    summary.json and learning_curves.png."""
    if cfg.diagnostics:
        write_json(out / "diagnostics.json",
                   {k: [r.get(k) for r in hist] for k in ("epoch", *DIAGNOSTIC_KEYS)})
    write_json(out / "summary.json", summary)
    try:
        plot_learning_curves(hist, out / "learning_curves.png", title=title)
    except Exception as exc:  # a plot must never lose a finished run
        log.warning("could not draw learning_curves.png: %s", exc)


DATA_FIELDS = ("data_dir", "n_train", "n_test", "n_features", "n_classes", "label_column",
               "test_fraction", "seed")


def evaluate_checkpoint(path: str | Path, dataset: str | None = None, data=None,
                        overrides: dict[str, Any] | None = None,
                        out: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a saved model on a dataset's test and training sets.

    Parameters
    ----------
    path : str or Path
        A checkpoint file, or a run folder (its newest valid checkpoint).
    dataset : str, optional
        Dataset name or file (default: the one the model was trained on,
        with the same data settings: split, subsample, seed).
    data : Dataset, optional
        Use this data instead of loading one.
    overrides : dict, optional
        Data settings (:data:`DATA_FIELDS`), ``threads``, ``eval_batch_size``.
    out : str or Path, optional
        Folder for ``evaluation.json`` (default: beside the checkpoint, as
        ``<checkpoint name>.evaluation.json``).

    Returns
    -------
    dict
        What ``evaluation.json`` holds (accuracies, losses, sizes, seconds)
        and its path under ``"json"``.
    """
    overrides = dict(overrides or {})
    path = resolve_checkpoint(path)
    threads = overrides.pop("threads", None) or default_threads()
    ckpt = load_checkpoint(path, n_threads=threads)
    model = ckpt.model
    saved = ckpt.cfg
    if dataset is None and saved is None:
        raise ConfigError(f"{path} holds a model only: name the data to evaluate it on "
                          f"with --dataset")
    if saved is not None and dataset in (None, saved.dataset):
        base = {k: getattr(saved, k) for k in DATA_FIELDS}
        base["dataset"] = saved.dataset
    else:
        base = {"dataset": dataset}
    batch = overrides.pop("eval_batch_size", None) or (saved.eval_batch_size if saved else 1024)
    dcfg = TrainConfig(**{**base, **{k: v for k, v in overrides.items() if k in DATA_FIELDS}})
    if data is None:
        data = load_data(dcfg)
    if [data.n_features, data.n_classes] != [model.sizes[0], model.sizes[-1]]:
        raise ConfigError(f"{data.name} has {data.n_features} features and {data.n_classes} "
                          f"classes; the model of {path} takes {model.sizes[0]} features and "
                          f"predicts {model.sizes[-1]} classes")
    t0 = time.perf_counter()
    test_loss, test_acc = model.evaluate(data.X_test, data.y_test, batch_size=batch)
    test_s = time.perf_counter() - t0
    train_loss, train_acc = model.evaluate(data.X_train, data.y_train, batch_size=batch)
    result = {
        "checkpoint": str(path), "dataset": data.name,
        "architecture": "-".join(map(str, model.sizes)), "nnz": model.nnz,
        "epochs_trained": ckpt.state.epoch if ckpt.state is not None else None,
        "test_acc": test_acc, "test_loss": test_loss, "n_test": int(data.X_test.shape[0]),
        "train_acc": train_acc, "train_loss": train_loss,
        "n_train": int(data.X_train.shape[0]),
        "test_s": test_s, "threads": threads, "data": data.info, "versions": versions(),
    }
    json_path = (Path(out) / "evaluation.json" if out is not None
                 else path.with_name(path.name.removesuffix(".h5") + ".evaluation.json"))
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_json(json_path, result)
    result["json"] = str(json_path)
    log.info("evaluated %s on %s: test accuracy %.2f%%", path, data.name, 100 * test_acc)
    return result
