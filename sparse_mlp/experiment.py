"""The sequential pipelines: data -> model -> training -> results on disk.

``run(cfg)`` (a sparse MLP) is what ``run_experiment.py`` calls;
``run_dense(cfg)`` trains the dense twin (Table 2's dense rows).  The run folder, resume,
config.json, metrics, checkpoints and the closing files belong to the run
owner (:class:`sparse_mlp.run.Run`, which lists the files); this module
builds the model (memory plan first), runs the
:class:`~sparse_mlp.training.Trainer` and says what to do when a run stops
early.  SIGTERM / SIGUSR1 / SIGINT / SIGHUP during training stop the run
after the current batch with a checkpoint
(:class:`~sparse_mlp.training.PreemptedError`).  Also: ``dry_run`` (the
memory plan as text) and ``evaluate_checkpoint`` (a saved model on a
dataset).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .alpha import resolve_alpha
from .augment import check_augment
from .checkpoint import load_checkpoint, resolve_checkpoint
from .config import TrainConfig
from .datasets import (
    SYNTHETIC_N_CLASSES,
    SYNTHETIC_N_FEATURES,
    SYNTHETIC_N_SAMPLES,
    SYNTHETIC_TEST_FRACTION,
)
from .dense import DenseMLP, blas_threads, check_dense_fits
from .errors import ConfigError, MemoryBudgetError
from .initial_topology import initial_layers
from .kernels import default_threads
from .layers import MAX_NNZ, expected_nnz, layer_gains
from .memory import GiB, MemoryEstimate, available_bytes, estimate, largest_batch, plan
from .model import SparseMLP
from .report import write_json
from .run import Run, load_data, versions
from .topology_log import TOPOLOGY_FILE, TopologyLog
from .training import RandomStreams, TrainState, metric_columns

log = logging.getLogger(__name__)

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
    check_augment(cfg.augment, n_features)  # --augment: 32x32x3 images only
    # --density-allocation erk and --er-sampling paper draw the layers here
    # (initial_topology.py); None: SparseMLP's ER
    layers = initial_layers(sizes, cfg.epsilon, cfg.weight_init, streams.init,
                            cfg.density_allocation, cfg.erk_power, cfg.output_init,
                            sampling=cfg.er_sampling,
                            gains=layer_gains(len(sizes) - 1, cfg.activation, cfg.alpha))
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


def check_feasible(cfg: TrainConfig, n_features: int, n_classes: int, n_train: int) -> None:
    """Refuse settings that cannot work with this data, before the model is
    allocated: a batch larger than the training set, a layer that would get
    no weights or more than one layer can index.

    A layer for which epsilon asks for more weights than it has positions
    is not refused: the Erdos-Renyi probability is capped at 1
    (docs/semantics.md, "Erdos-Renyi initialisation"), so fully connected, as the paper's own small
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


def run(cfg: TrainConfig, data=None, progress: bool | None = None,
        resume: str | Path | None = None, overrides: dict[str, Any] | None = None,
        overwrite: bool = False) -> dict[str, Any]:
    """Run one sequential experiment, or continue one; returns the summary
    (also in summary.json).

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
        On resume, the settings the user gave explicitly
        (:func:`sparse_mlp.run.resumed_config`).
    overwrite : bool
        Replace the results of an earlier run in ``cfg.out``.

    Raises
    ------
    PreemptedError
        A stop signal arrived: the run stopped after a batch and saved a
        checkpoint (exit status 75, or 130 / 129 for SIGINT / SIGHUP).
    DivergenceError
        NaN or inf appeared; the message names the last good checkpoint.
    """
    if cfg.parallel:  # WASAP / WASSP run over MPI: sparse_mlp.parallel.run_parallel
        raise ConfigError(
            f"--parallel {cfg.parallel} trains over MPI: start it with `mpiexec -n K+1 python "
            f"run_experiment.py --parallel {cfg.parallel} ...` (sparse_mlp.parallel.run_parallel "
            f"from Python)")
    with Run(cfg, "sparse", resume=resume, overrides=overrides, overwrite=overwrite) as r:
        return _train(r, data, progress)


def _train(r: Run, data, progress: bool | None) -> dict[str, Any]:
    """The sequential pipeline inside its run folder."""
    cfg, ckpt = r.cfg, r.ckpt
    # the data, and what cannot work with it, refused before any allocation
    data = r.load_data(data)
    check_feasible(cfg, data.n_features, data.n_classes, data.X_train.shape[0])
    cfg = resolve_alpha(cfg, data.X_train)  # --alpha auto (alpha.py), before config.json
    if ckpt is None:  # how a batch is held in memory, decided before anything is allocated
        cfg, est = plan_memory(cfg, data.n_features, data.n_classes,
                               data.X_train.shape[0] + data.X_test.shape[0])
        r.info["activation_memory"] = est.activation_memory
        r.info["micro_batch"] = cfg.micro_batch or cfg.batch_size
    threads = cfg.threads or default_threads()
    cfg = r.cfg = cfg.replace(threads=threads)
    r.write_config(data)
    log.info("dataset %s: %d train / %d test samples, %d features, %d classes", data.name,
             data.X_train.shape[0], data.X_test.shape[0], data.n_features, data.n_classes)

    # model, random streams and loop state: drawn now, or the checkpoint's
    if ckpt is None:
        streams = RandomStreams(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(cfg, data.n_features, data.n_classes, streams,
                            data.X_train.shape[0] + data.X_test.shape[0])
        state = TrainState()
        r.info["init_s"] = time.perf_counter() - t0
        r.info["nnz_per_layer_start"] = model.nnz_per_layer()
        log.info("model %s: %s weights (%s per layer), init %.2fs, %d threads",
                 "-".join(map(str, model.sizes)), f"{model.nnz:,}", model.nnz_per_layer(),
                 r.info["init_s"], threads)
    else:
        model, streams, state = ckpt.model, ckpt.streams(), ckpt.state
        model.n_threads = threads
        model.lean = cfg.activation_memory == "lean"
        # a checkpoint written outside a Run (Trainer, estimator) lacks the run's record
        r.info.setdefault("init_s", 0.0)
        r.info.setdefault("nnz_per_layer_start", model.nnz_per_layer())
    r.begin_session(state)

    # training: metrics rows, topology snapshots and checkpoints as it goes
    r.checkpoints(state)
    csv_out = r.metrics(metric_columns(cfg), state.history)
    topo = TopologyLog(r.out / TOPOLOGY_FILE, model.sizes) if cfg.save_topology else None
    if topo is not None:
        topo.start(model) if ckpt is None else topo.resume(state.epoch, model)

    def on_epoch(row: dict) -> None:
        csv_out(row)
        if topo is not None:
            topo.append(row["epoch"] + 1, model)

    state = r.train(model, data, streams, state, on_epoch=on_epoch, progress=progress)
    post_rows = r.post_prune(model, data.X_test, data.y_test)
    summary = r.summary(data.name, model, state, post_rows,
                        str(r.out / TOPOLOGY_FILE) if topo is not None else None, threads)
    return r.finish(summary, state.history,
                    f"{data.name} {summary['architecture']} {cfg.activation}"
                    f"{' + IP' if cfg.importance_pruning else ''}")


def run_dense(cfg: TrainConfig, data=None, progress: bool | None = None,
              resume: str | Path | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train a dense MLP with ``cfg`` (Table 2's dense rows; the twin of
    :func:`run`, in a run folder owned by :class:`sparse_mlp.run.Run`).

    Parameters
    ----------
    cfg : TrainConfig
        ``hidden``, activation, optimiser, dropout, epochs, seed, ``out`` ...
        (a dense configuration: :func:`sparse_mlp.dense.dense_config`;
        topology settings are refused).
    data : Dataset, optional
        Use this data instead of loading ``cfg.dataset``.
    resume : str or Path, optional
        As :func:`sparse_mlp.experiment.run` ("auto": the newest checkpoint in
        ``cfg.out``, a new run when there is none).

    Raises
    ------
    MemoryBudgetError
        The dense model would not fit in memory (nothing is allocated).
    PreemptedError
        A stop signal arrived: stopped after a batch with a checkpoint.
    """
    with Run(cfg, "dense", resume=resume, overwrite=overwrite) as r:
        cfg, ckpt = r.cfg, r.ckpt
        data = r.load_data(data)
        sizes = [data.n_features, *cfg.hidden, data.n_classes]
        check_dense_fits(sizes, cfg.batch_size, cfg.eval_batch_size,
                         data.X_train.shape[0] + data.X_test.shape[0])
        threads = cfg.threads or default_threads()
        cfg = r.cfg = cfg.replace(threads=threads)
        r.write_config(data, model="dense")
        if ckpt is None:
            streams = RandomStreams(cfg.seed)
            t0 = time.perf_counter()
            model = DenseMLP(sizes, cfg.activation, cfg.alpha, cfg.weight_init, cfg.output,
                             cfg.dropout, rng=streams.init, n_threads=threads)
            state = TrainState()
            r.info["init_s"] = time.perf_counter() - t0
            r.info["nnz_per_layer_start"] = model.nnz_per_layer()
        else:
            model, streams, state = ckpt.model, ckpt.streams(), ckpt.state
            model.n_threads = threads
            r.info.setdefault("init_s", 0.0)
            r.info.setdefault("nnz_per_layer_start", model.nnz_per_layer())
        r.begin_session(state)
        r.checkpoints(state)
        csv_out = r.metrics(metric_columns(cfg), state.history)

        state = r.train(model, data, streams, state, on_epoch=csv_out, progress=progress,
                        context=blas_threads(threads))
        summary = {"model": "dense", **r.summary(data.name, model, state, [], None, threads)}
        return r.finish(summary, state.history,
                        f"{data.name} {summary['architecture']} dense {cfg.activation}")


DATA_FIELDS = ("data_dir", "n_train", "n_test", "n_features", "n_classes", "label_column",
               "test_fraction", "val_fraction", "seed", "task")


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
    try:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(json_path, result)
        result["json"] = str(json_path)
    except OSError as exc:  # a read-only run folder: the figures still reach the user
        log.warning("could not write %s (%s); give --out FOLDER to keep the evaluation",
                    json_path, exc.strerror or exc)
        result["json"] = None
    log.info("evaluated %s on %s: test accuracy %.2f%%", path, data.name, 100 * test_acc)
    return result
