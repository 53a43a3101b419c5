"""The run owner: the one owner of a run folder, for every pipeline.

The sequential (``experiment.run``), dense (``dense.run_dense``) and
parallel (``parallel.driver``, rank 0) pipelines are thin: each opens a
:class:`Run`, builds its model, runs its loop, and closes the run.  The
run owner does everything else, in this order:

1. **the folder**: ``--out``; on ``--resume FILE|DIR`` the run folder that
   holds the checkpoint (never a path read from a file); else a new
   ``runs/<dataset>_<time>_seed<seed>``;
2. **the lock**: an exclusive lock on ``<out>/.run.lock`` for the run's
   whole life; a second run into the same folder is refused with the
   holder's host and PID (:class:`FolderLock`);
3. **resume or a new run**: ``--resume`` continues from a checkpoint with
   its saved settings (:func:`resumed_config`); a new run never reuses a
   folder that holds another run's results: it refuses with the fix
   (``--resume auto``, another ``--out``, or ``--overwrite``);
   ``--resume auto`` with only quarantined (``*.corrupt``) checkpoints
   refuses every time, naming them;
4. **the settings the pipeline supports**: each pipeline declares the
   settings it does not use (:data:`UNSUPPORTED`); a setting given to a
   pipeline that would ignore it is refused, never accepted and ignored;
5. **the data**: loaded (or given), and on resume checked to be the data
   the run trained on (:func:`data_fingerprint`);
6. **config.json** (atomic), **metrics.csv** (the checkpoint's rows first on
   resume), **checkpoints/** (:meth:`Run.save_checkpoint`: a failed write is
   one error line and training goes on);
7. **the end**: post-training pruning, ``summary.json``, ``diagnostics.json``,
   ``learning_curves.png`` (:meth:`Run.finish`), then the lock is released.

Files of a run folder::

  config.json          the fully resolved configuration (and the data's provenance)
  metrics.csv          one row per epoch (written as training goes)
  summary.json         best / final accuracy, nnz, times, peak memory, versions
  post_pruning.csv     Table 6 rows, with --post-prune
  learning_curves.png  loss, accuracy and nnz over epochs
  diagnostics.json     with --diagnostics (sequential runs)
  ranks.json           the MPI ranks of a parallel run
  checkpoints/         ckpt_e<epochs done>_s<steps done>.h5, the newest --keep-checkpoints;
                       each with the data's preprocessing record (standardisation,
                       feature names, labels: Dataset.preprocessing), so it predicts raw data
  topology.h5          every epoch's connectivity, with --save-topology
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy

from . import __version__
from .checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    CheckpointDir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    quarantined_checkpoints,
    resolve_checkpoint,
)
from .config import TrainConfig
from .datasets import load_dataset
from .errors import CheckpointError, ConfigError, DivergenceError
from .evolution import importance_prune
from .kernels import build_info
from .report import MetricsCSV, plot_learning_curves, write_json
from .training import (
    DIAGNOSTIC_KEYS,
    PreemptedError,
    StopRequest,
    Trainer,
    stop_on_signals,
)

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"
# the files a run writes into its folder (checkpoints/ aside)
RUN_FILES = ("config.json", "metrics.csv", "summary.json", "post_pruning.csv",
             "learning_curves.png", "diagnostics.json", "ranks.json", "topology.h5")
# settings a resumed run may change (the others must match the checkpoint's)
RESUME_OVERRIDABLE = ("epochs", "lr", "threads", "eval_every", "eval_batch_size", "train_eval",
                      "out", "data_dir", "post_prune", "checkpoint_every", "keep_checkpoints",
                      "save_topology", "keep_best")
# ... of which these make the continuation differ from an uninterrupted run
RESUME_INEXACT = ("epochs", "lr")
# settings that change how, not what, a parallel run computes
MPI_SETTINGS = ("mpi_wait", "mpi_chunk_bytes", "threads")

PIPELINES = ("sparse", "dense", "parallel")
_DEFAULTS = TrainConfig()


def _differs(field: str):
    return lambda cfg: getattr(cfg, field) != getattr(_DEFAULTS, field)


# per pipeline: the settings it does not use, each with "is it set?" -- refused when set
UNSUPPORTED: dict[str, dict[str, Any]] = {
    "sparse": {
        # the parallel trainer's settings, without --parallel
        "phase1_epochs": _differs("phase1_epochs"),
        "warmup_epochs": _differs("warmup_epochs"),
        "mpi_wait": _differs("mpi_wait"),
        "mpi_chunk_bytes": _differs("mpi_chunk_bytes"),
        "parallel_semantics": _differs("parallel_semantics"),
        "phase2_sync_every": _differs("phase2_sync_every"),
        "phase1_decay": _differs("phase1_decay"),
        "parallel_ip_every": _differs("parallel_ip_every"),
        "parallel_ip_percentile": _differs("parallel_ip_percentile"),
    },
    "dense": {  # (dense.dense_config makes the dense twin of a sparse configuration)
        "evolution": lambda cfg: cfg.evolution,
        "importance_pruning": _differs("importance_pruning"),
        "post_prune": _differs("post_prune"),
        "save_topology": _differs("save_topology"),
        "growth": _differs("growth"),
        "regrow_init": _differs("regrow_init"),
        "density_allocation": _differs("density_allocation"),
        "output_init": _differs("output_init"),
        "lr_fan_in_cap": _differs("lr_fan_in_cap"),
        "phase1_epochs": _differs("phase1_epochs"),
        "parallel": _differs("parallel"),
        "er_sampling": _differs("er_sampling"),  # (no Erdos-Renyi draw in a dense MLP)
        # the dense twin has no linear output and no sample weights (sparse runs only)
        "task": _differs("task"),
        "class_weight": _differs("class_weight"),
    },
    "parallel": {
        # the workers and the parameter server measure and evolve nothing of these
        "diagnostics": _differs("diagnostics"),
        "train_eval": _differs("train_eval"),
        "save_topology": _differs("save_topology"),
        "growth": _differs("growth"),
        "lr_fan_in_cap": _differs("lr_fan_in_cap"),
        # the parameter server writes no best.h5 (its best is over its evaluations)
        "keep_best": _differs("keep_best"),
        # the parameter server evaluates the test set only; workers and server use cfg.lr
        "val_fraction": _differs("val_fraction"),
        "lr_schedule": _differs("lr_schedule"),
        # workers and server compute classification gradients and accuracy, unweighted
        "task": _differs("task"),
        "class_weight": _differs("class_weight"),
        # --ip-every / --ip-percentile are the parallel IP schedule only under
        # --parallel-semantics text without --parallel-ip-*: refused when ignored
        "ip_every": lambda cfg: _parallel_ignores(cfg, "ip_every"),
        "ip_percentile": lambda cfg: _parallel_ignores(cfg, "ip_percentile"),
    },
}


def _parallel_ignores(cfg: TrainConfig, field: str) -> bool:
    """Whether a parallel run ignores the given sequential IP setting: its
    schedule is --parallel-ip-* (code semantics: 20 / 10th by default)."""
    if getattr(cfg, field) == getattr(_DEFAULTS, field):
        return False
    own = getattr(cfg, "parallel_" + field)
    if own is None:
        return cfg.parallel_semantics == "code"
    return own != getattr(cfg, field)


_WHY = {
    "sparse": "they are settings of the parallel trainer: add --parallel wasap|wassp and "
              "start with mpiexec",
    "dense": "a dense MLP has no topology to prune, evolve or record",
    "parallel": "the parallel trainer does not compute them (sequential runs only; its "
                "Importance Pruning schedule is --parallel-ip-every / --parallel-ip-percentile)",
}


def check_supported(cfg: TrainConfig, pipeline: str) -> None:
    """Refuse every setting that ``pipeline`` would ignore (:data:`UNSUPPORTED`)."""
    if pipeline not in PIPELINES:
        raise ConfigError(f"unknown pipeline {pipeline!r}; one of {', '.join(PIPELINES)}")
    given = [name for name, is_set in UNSUPPORTED[pipeline].items() if is_set(cfg)]
    if given:
        what = {"sparse": "a sequential run", "dense": "a dense run",
                "parallel": f"--parallel {cfg.parallel}"}[pipeline]
        raise ConfigError(
            f"{what} does not use " + ", ".join(
                f"--{g.replace('_', '-')} {getattr(cfg, g)}" for g in given)
            + f" ({_WHY[pipeline]}); drop "
            + ("it" if len(given) == 1 else "them"))


# ---------------------------------------------------------------------- the lock
class FolderLock:
    """An exclusive, non-blocking ``flock`` on ``<folder>/.run.lock``, held
    while a run owns the folder.  The file names the holder (host, PID,
    start time) so that a refused run can say who has the folder.  The
    kernel drops the lock when the holder dies, however it dies."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fh = None

    def acquire(self) -> None:
        try:
            fh = open(self.path, "a+")
        except OSError as exc:
            raise ConfigError(f"cannot use {self.path.parent} as the run folder: {exc}") \
                from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ConfigError(
                    f"{self.path.parent} is in use by another run ({holder}). Wait for it to "
                    f"finish, or choose another --out") from None
            log.warning("the filesystem of %s refuses file locks (%s): running without the "
                        "folder lock", self.path.parent, exc)
            return
        fh.seek(0)
        fh.truncate()
        fh.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


# ---------------------------------------------------------------------- data
def load_data(cfg: TrainConfig):
    """The dataset of a configuration (sparse_mlp.datasets)."""
    return load_dataset(cfg.dataset, cfg.data_dir, n_train=cfg.n_train, n_test=cfg.n_test,
                        n_features=cfg.n_features, n_classes=cfg.n_classes,
                        label_column=cfg.label_column, test_fraction=cfg.test_fraction,
                        seed=cfg.seed, val_fraction=cfg.val_fraction,
                        task=getattr(cfg, "task", "classification"))


FINGERPRINT_PREFIX = "sha256:"
SPLITS = ("X_train", "y_train", "X_val", "y_val", "X_test", "y_test")


def data_fingerprint(data) -> str:
    """SHA-256 of every byte of every split of a dataset (with their shapes
    and dtypes): a resumed run checks that it trains on the same data, so a
    single relabelled sample is noticed.  Streams over the arrays (no copy);
    hashing costs little next to parsing the data."""
    h = hashlib.sha256()
    for name in SPLITS:
        arr = getattr(data, name, None)
        if arr is None:
            continue
        a = np.ascontiguousarray(arr)
        h.update(f"{name}{a.shape}{a.dtype.str}".encode())
        h.update(memoryview(a).cast("B"))
    return FINGERPRINT_PREFIX + h.hexdigest()


def _sampled_fingerprint(data) -> str:
    """The fingerprint of checkpoints written before the whole data was
    hashed (shapes, labels and 256 evenly spaced rows of each split)."""
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
    saved = ckpt.extra.get("run", {}).get("data_fingerprint", fingerprint)
    if not saved.startswith(FINGERPRINT_PREFIX):  # a checkpoint from before whole-data hashing
        fingerprint = _sampled_fingerprint(data)
    if saved != fingerprint:
        raise ConfigError(f"the data differ from those the run of {ckpt.path} trained on "
                          f"(another file, split or --n-train/--n-test?); resume it with the "
                          f"same data")


# ---------------------------------------------------------------------- resume
def run_folder_of(path: Path) -> Path:
    """The run folder that holds a checkpoint file or a checkpoints folder."""
    path = Path(path)
    if path.is_dir():
        return path.parent if path.name == CHECKPOINT_DIR else path
    folder = path.parent
    return folder.parent if folder.name == CHECKPOINT_DIR else folder


def find_resume_checkpoint(resume: str | Path, out: Path) -> Checkpoint | None:
    """The checkpoint to continue: ``resume`` is a checkpoint file, a run
    folder (its newest valid checkpoint) or "auto" (the newest valid
    checkpoint in ``out``; None when that folder has none and never had one)."""
    if str(resume) == "auto":
        folder = out / CHECKPOINT_DIR
        ckpt = latest_checkpoint(folder)
        if ckpt is None:
            bad = quarantined_checkpoints(out)
            if bad:
                raise CheckpointError(
                    f"--resume auto: every checkpoint in {folder} is damaged and was renamed "
                    f"aside ({', '.join(p.name for p in bad)}). Resume from another copy "
                    f"(--resume FILE), or start a new run with another --out (or "
                    f"--overwrite to discard this one)")
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
                   out: Path) -> TrainConfig:
    """The checkpoint's configuration with the settings the user gave again.

    ``overrides`` maps TrainConfig fields to the values the user set
    explicitly.  Equal values are fine; different ones are applied for the
    fields in :data:`RESUME_OVERRIDABLE` and refused for the others (they
    would make a different run).  The run continues in ``out`` (never in a
    folder read from the checkpoint), with this machine's cores unless
    ``threads`` is given."""
    saved = ckpt.cfg
    changes: dict[str, Any] = {"threads": None, "out": str(out)}
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
    if saved.phase1_epochs is not None and cfg.epochs < saved.phase1_epochs:
        raise ConfigError(f"--epochs {cfg.epochs} is shorter than phase 1 of the run in "
                          f"{ckpt.path} ({saved.phase1_epochs} of its {saved.epochs} epochs, "
                          f"fixed when it started); resume with --epochs "
                          f"{saved.phase1_epochs} or more")
    cfg.validate()
    if cfg.epochs < ckpt.state.epoch or (cfg.epochs == ckpt.state.epoch and ckpt.state.batch):
        raise ConfigError(f"--epochs {cfg.epochs}: the run in {ckpt.path} has already done "
                          f"{ckpt.state.epoch} epochs")
    return cfg


def checkpoint_pipeline(ckpt: Checkpoint) -> str:
    """Which pipeline wrote a checkpoint: parallel, dense or sparse."""
    if "parallel" in ckpt.extra:
        return "parallel"
    return "dense" if type(ckpt.model).__name__ == "DenseMLP" else "sparse"


# ---------------------------------------------------------------------- closing
def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


_COMMAND_LINE: list[str] | None = None


def record_command_line(argv: list[str]) -> None:
    """The CLI's command line, as summary.json's ``rerun.command`` records
    it (default: ``sys.argv``)."""
    global _COMMAND_LINE
    _COMMAND_LINE = [str(a) for a in argv]


def command_line() -> list[str]:
    return list(_COMMAND_LINE) if _COMMAND_LINE is not None else list(sys.argv)


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """The git commit of the sparse_mlp checkout this package runs from, and
    whether tracked files differ from it (None, None outside a checkout or
    without git).  Reads only (``--no-optional-locks``: not even the index
    is refreshed)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return {"git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "rev-parse",
                                 "HEAD"], capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "--no-optional-locks", "-C", str(root), "status",
                                 "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit or None, "git_dirty": bool(status.strip())}


def rerun_record(out: Path) -> dict[str, Any]:
    """summary.json's ``rerun``: how this run was started and how to run it
    again (``--config OUT/config.json``, into a new ``--out``)."""
    return {"command": command_line(),
            "again": f"python run_experiment.py --config {Path(out) / 'config.json'} "
                     f"--out NEW_FOLDER",
            **git_state(), "host": socket.gethostname(), "sparse_mlp_version": __version__}


def versions() -> dict[str, Any]:
    return {"sparse_mlp": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, **build_info(),
            "machine": platform.machine(), "platform": platform.platform()}


def post_training_pruning(model, X_test, y_test, percentiles, batch_size: int) -> list[dict]:
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


# ---------------------------------------------------------------------- the run
class Run:
    """The one owner of a run folder (module docs), used as a context
    manager: the folder's lock is released however the block ends.

    Parameters
    ----------
    cfg : TrainConfig
        The run's settings (on resume: only ``out``, for "auto", and what
        ``overrides`` names are used; the checkpoint has the rest).
    pipeline : str
        "sparse", "dense" or "parallel": which settings are supported and
        which checkpoints it may continue.
    resume : str or Path, optional
        A checkpoint file, a run folder, or "auto" (the newest valid
        checkpoint in ``cfg.out``; a new run from ``cfg`` when there is none).
    overrides : dict, optional
        On resume, the settings the user gave explicitly.
    overwrite : bool
        A new run may replace the results of an older run in ``cfg.out``.

    Attributes
    ----------
    cfg : TrainConfig
        The resolved configuration (the checkpoint's on resume), ``out`` set.
    out : Path
    ckpt : Checkpoint or None
        The checkpoint resumed from.
    info : dict
        The run's record across sessions (stored in every checkpoint).
    """

    def __init__(self, cfg: TrainConfig, pipeline: str, *, resume: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, overwrite: bool = False) -> None:
        cfg.validate()
        self.t_start = time.perf_counter()
        self.pipeline = pipeline
        self.resume = resume
        self.out = self._folder(cfg, resume, overrides)
        self.lock = FolderLock(self.out)
        self.lock.acquire()
        try:
            self.ckpt = (find_resume_checkpoint(resume, self.out) if resume is not None
                         else None)
            if self.ckpt is not None:
                kind = checkpoint_pipeline(self.ckpt)
                if kind != pipeline:
                    raise ConfigError(self._wrong_pipeline(kind))
                given = overrides
                if pipeline == "parallel":  # how the ranks talk is this job's choice
                    given = {k: v for k, v in (overrides or {}).items() if k not in MPI_SETTINGS}
                cfg_r = resumed_config(self.ckpt, given, self.out)
                if pipeline == "parallel":
                    cfg_r = cfg_r.replace(mpi_wait=cfg.mpi_wait,
                                          mpi_chunk_bytes=cfg.mpi_chunk_bytes)
                    if "semantics" not in self.ckpt.extra.get("parallel", {}):
                        # written before --parallel-semantics: it ran the text's reading
                        cfg_r = cfg_r.replace(parallel_semantics="text")
                cfg = cfg_r.replace(threads=cfg.threads if pipeline == "parallel"
                                    else cfg_r.threads)
                self._check_target_folder()
            else:
                self._claim(cfg, overwrite)
            self.cfg = cfg.replace(out=str(self.out))
            check_supported(self.cfg, pipeline)
        except BaseException:
            self.lock.release()
            raise
        self.info: dict[str, Any] = (dict(self.ckpt.extra.get("run", {}))
                                     if self.ckpt is not None else
                                     {"wall_s": 0.0, "sessions": []})
        self.wall_before = float(self.info.get("wall_s", 0.0))
        self.ckdir: CheckpointDir | None = None
        self.csv: MetricsCSV | None = None
        self.preprocessing = None  # the data's (load_data): written into every checkpoint

    # ------------------------------------------------------------ folder
    @staticmethod
    def _folder(cfg: TrainConfig, resume, overrides) -> Path:
        if resume is not None and str(resume) != "auto":
            given = (overrides or {}).get("out") or None
            out = Path(given) if given else run_folder_of(Path(resume))
        elif cfg.out:
            out = Path(cfg.out)
        elif resume is not None:
            raise ConfigError("--resume auto needs --out, the folder of the run to continue")
        else:
            name = Path(cfg.dataset).stem if ("/" in cfg.dataset or "." in cfg.dataset) \
                else cfg.dataset
            out = Path("runs") / f"{name}_{time.strftime('%Y%m%d_%H%M%S')}_seed{cfg.seed}"
            k = 1
            while out.exists():
                out = out.with_name(out.name.split("__")[0] + f"__{k}")
                k += 1
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is an existing file, not a folder: choose another "
                              f"--out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the run folder {out}: {exc.strerror or exc}. "
                              f"Choose another --out") from None
        if not os.access(out, os.W_OK | os.X_OK):
            raise ConfigError(f"the run folder {out} is not writable: choose another --out")
        return out

    def _results(self) -> list[str]:
        """The files of an earlier run in this folder (empty when none)."""
        found = [n for n in RUN_FILES if (self.out / n).exists()]
        ck = self.out / CHECKPOINT_DIR
        if ck.is_dir() and any(p.name.startswith("ckpt_") for p in ck.iterdir()):
            found.append(f"{CHECKPOINT_DIR}/")
        return found

    def _claim(self, cfg: TrainConfig, overwrite: bool) -> None:
        """A new run: the folder must hold no other run's results."""
        found = self._results()
        if not found:
            return
        restart = (self.resume is not None and not list_checkpoints(self.out / CHECKPOINT_DIR)
                   and self._same_run(cfg))
        if not (overwrite or restart):
            raise ConfigError(
                f"{self.out} holds the results of another run ({', '.join(found)}). Continue "
                f"it with --resume auto --out {self.out}, start this run in another --out, or "
                f"replace that run with --overwrite")
        if restart:
            log.warning("%s holds a run with these settings that wrote no checkpoint before "
                        "it stopped: starting it again from the beginning", self.out)
        else:
            log.warning("--overwrite: deleting the results of the earlier run in %s (%s)",
                        self.out, ", ".join(found))
        for name in RUN_FILES:
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / CHECKPOINT_DIR, ignore_errors=True)

    def _same_run(self, cfg: TrainConfig) -> bool:
        """Does the folder's config.json describe the run ``cfg`` asks for?"""
        try:
            saved = json.loads((self.out / "config.json").read_text())
        except (OSError, ValueError):
            return False
        mine = cfg.to_dict()
        skip = set(RESUME_OVERRIDABLE) | {"activation_memory", "micro_batch", "alpha"}
        # (a setting newer than the folder's config.json: its default)
        return all(saved.get(k, getattr(_DEFAULTS, k)) == v for k, v in mine.items()
                   if k not in skip)

    def _check_target_folder(self) -> None:
        """Resuming into a folder other than the checkpoint's own: it must not
        hold another run's results."""
        if run_folder_of(self.ckpt.path).resolve() == self.out.resolve():
            return
        found = self._results()
        if found:
            raise ConfigError(f"--out {self.out} holds the results of another run "
                              f"({', '.join(found)}); continue the run of {self.ckpt.path} in "
                              f"an empty folder or in its own")

    def _wrong_pipeline(self, kind: str) -> str:
        if kind == "parallel":
            par = self.ckpt.extra.get("parallel", {})
            ranks = f"{int(par['workers']) + 1}" if "workers" in par else "K+1"
            return (f"{self.ckpt.path} is the checkpoint of a --parallel {par.get('mode', '')} "
                    f"run: continue it with `mpiexec -n {ranks} python run_experiment.py "
                    f"--parallel {par.get('mode', 'wasap')} --resume ...`")
        if self.pipeline == "parallel":
            return (f"{self.ckpt.path} is the checkpoint of a {kind} run: resume it without "
                    f"--parallel and without mpiexec")
        return f"{self.ckpt.path} is the checkpoint of a {kind} run, not of a {self.pipeline} run"

    # ------------------------------------------------------------ data and files
    def load_data(self, data=None):
        """The run's data (loaded unless given); on resume, checked to be the
        data the run trained on."""
        if data is None:
            data = load_data(self.cfg)
        fingerprint = data_fingerprint(data)
        if self.ckpt is not None:
            check_same_data(self.ckpt, data, fingerprint)
        self.info["data_fingerprint"] = fingerprint
        # the standardisation, feature names and classes: into every checkpoint
        self.preprocessing = getattr(data, "preprocessing", None) or (
            self.ckpt.preprocessing if self.ckpt is not None else None)
        if self.ckdir is not None:
            self.ckdir.preprocessing = self.preprocessing
        return data

    def write_config(self, data, **extra: Any) -> None:
        """config.json: the resolved settings (TrainConfig's fields, at the top
        level), ``extra``, and under "data" the data's provenance and shape.
        A key of ``extra`` must be listed in ``config.RUN_RECORD_KEYS``, so
        that ``--config`` (which re-runs a run from this file) can tell it
        from a setting."""
        write_json(self.out / "config.json",
                   {**self.cfg.to_dict(), **extra,
                    "data": {**data.info, "n_features": data.n_features,
                             "n_classes": data.n_classes, "classes": data.classes}})

    def begin_session(self, state, **record: Any) -> None:
        """Record this session (start, checkpoint resumed from, position)."""
        self.info["sessions"] = [
            *self.info.get("sessions", []),
            {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "resumed_from": None if self.ckpt is None else str(self.ckpt.path),
             "epoch": state.epoch, "step": state.step, "command": command_line(), **record}]

    def metrics(self, columns, history) -> MetricsCSV:
        """metrics.csv, with the checkpoint's rows first on resume."""
        self.csv = MetricsCSV(self.out / "metrics.csv", columns)
        for row in history:
            self.csv(row)
        return self.csv

    def checkpoints(self, state) -> CheckpointDir:
        """The run's checkpoint folder; on resume, newer checkpoints than the
        one resumed from are renamed aside."""
        self.ckdir = CheckpointDir(self.out / CHECKPOINT_DIR, keep=self.cfg.keep_checkpoints,
                                   preprocessing=self.preprocessing)
        if self.ckpt is not None:
            self.ckdir.retire_after(state.step, state.epoch)
            self.ckdir.retire_best(state.best_epoch)  # best.h5 agrees with the state
        return self.ckdir

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t_start

    def save_checkpoint(self, reason: str, *, model, state, streams: dict | None,
                        extra: dict | None = None, best: dict | None = None) -> Path | None:
        """A checkpoint of the run now.  A failed write (disk full, quota,
        permission) is one error line and returns None: training goes on
        and the older checkpoints stay; when stopping ("preempted") it raises.
        With ``best`` (reason "best"; epoch and scores): the model as
        ``checkpoints/best.h5`` instead, replacing the previous best
        (:meth:`~sparse_mlp.checkpoint.CheckpointDir.save_best`)."""
        self.info["wall_s"] = self.wall_s()
        t0 = time.perf_counter()
        try:
            if best is not None:
                path = self.ckdir.save_best(cfg=self.cfg, model=model,
                                            extra={"run": self.info, **(extra or {}),
                                                   "best": best})
            else:
                path = self.ckdir.save(cfg=self.cfg, model=model, state=state, streams=streams,
                                       extra={"run": self.info, **(extra or {})})
        except CheckpointError as exc:
            if reason == "preempted":
                raise
            log.error("%s Training goes on without this checkpoint.", exc)
            return None
        log.info("%s checkpoint %s (%.1f MB, %.2fs)", reason, path,
                 path.stat().st_size / 1e6, time.perf_counter() - t0)
        return path

    def train(self, model, data, streams, state, *, on_epoch, progress: bool | None,
              context=None):
        """Run the sequential :class:`~sparse_mlp.training.Trainer` (sparse or
        dense model) in this run: checkpoints through :meth:`save_checkpoint`,
        stop signals turned into a checkpoint and :class:`PreemptedError`
        saying how to continue, divergence naming the last good checkpoint.
        ``context``: entered around the loop (the dense run's BLAS threads).
        Returns the final TrainState."""
        def on_checkpoint(trainer: Trainer, reason: str) -> Path | None:
            return self.save_checkpoint(reason, model=model, state=trainer.state,
                                        streams=trainer.streams_state())

        def on_best(trainer: Trainer, epoch: int, columns: dict) -> Path | None:
            if self.cfg.checkpoint_every == 0:  # no model files at all
                return None
            return self.save_checkpoint("best", model=model, state=None, streams=None,
                                        best={"epoch": epoch, **{
                                            k: v for k, v in columns.items()
                                            if k.startswith(("val_", "test_")) and
                                            not k.endswith("_s")}})

        stop = StopRequest()
        trainer = Trainer(self.cfg, model, data.X_train, data.y_train, data.X_test,
                          data.y_test, streams, on_epoch=on_epoch, state=state,
                          on_checkpoint=on_checkpoint, stop=stop,
                          X_val=getattr(data, "X_val", None), y_val=getattr(data, "y_val", None),
                          on_best=on_best, target_std=getattr(data, "target_std", None))
        try:
            with stop_on_signals(stop), (context or contextlib.nullcontext()):
                return trainer.run(progress=progress)
        except PreemptedError as exc:
            raise exc.continued(f"Continue it exactly with --resume auto --out {self.out}") \
                from None
        except DivergenceError as exc:
            good = self.ckdir.list() if self.ckdir is not None else []
            raise DivergenceError(
                f"{exc} " + (f"The last good checkpoint is {good[-1]}: continue from it with "
                             f"--resume {good[-1]} and a lower --lr." if good else
                             "No checkpoint of this run was written before it diverged.")
            ) from None

    def last_checkpoint(self) -> Path | None:
        found = self.ckdir.list() if self.ckdir is not None else []
        return found[-1] if found else None

    # ------------------------------------------------------------ the end
    def post_prune(self, model, X_test, y_test) -> list[dict]:
        """With --post-prune: Table 6's rows into post_pruning.csv."""
        if not self.cfg.post_prune:
            return []
        rows = post_training_pruning(model, X_test, y_test, self.cfg.post_prune,
                                     self.cfg.eval_batch_size)
        pp = MetricsCSV(self.out / "post_pruning.csv",
                        ["percentile", "test_acc", "test_loss", "nnz"])
        for r in rows:
            pp(r)
        pp.close()
        return rows

    def summary(self, data_name: str, model, state, post_rows: list, topology: str | None,
                threads: int) -> dict[str, Any]:
        """summary.json's fields, the same for every pipeline."""
        cfg, hist = self.cfg, state.history
        nan = float("nan")
        last = hist[-1] if hist else {"test_acc": nan, "test_loss": nan, "train_loss": nan}
        nnz_start = [int(n) for n in self.info["nnz_per_layer_start"]]
        ckpt = self.last_checkpoint()
        return {
            "dataset": data_name,
            "architecture": "-".join(map(str, model.sizes)),
            "activation": cfg.activation, "alpha": cfg.alpha,
            "importance_pruning": cfg.importance_pruning,
            "epochs": cfg.epochs, "seed": cfg.seed,
            "best_test_acc": state.best_test_acc, "best_epoch": state.best_epoch,
            **self.selection(state), **self.regression_summary(state),
            "final_test_acc": last["test_acc"], "final_test_loss": last["test_loss"],
            "final_train_loss": last["train_loss"],
            "nnz_start": int(sum(nnz_start)), "nnz_end": model.nnz,
            "nnz_per_layer_start": nnz_start, "nnz_per_layer_end": model.nnz_per_layer(),
            "init_s": self.info["init_s"],
            "train_s": sum(r["train_s"] for r in hist),
            "test_s": sum(r["test_s"] for r in hist),
            "evolution_s": sum(r.get("evolution_s", 0.0) for r in hist),
            "wall_s": self.wall_s(),
            "mean_epoch_train_s": float(np.mean([r["train_s"] for r in hist])) if hist else 0.0,
            "peak_rss_bytes": peak_rss_bytes(),
            "threads": threads,
            "post_pruning": post_rows,
            "sessions": len(self.info["sessions"]),
            "resumed_from": [x["resumed_from"] for x in self.info["sessions"]
                             if x["resumed_from"]],
            "checkpoint": str(ckpt) if ckpt else None,
            "topology": topology,
            "versions": versions(),
            "rerun": rerun_record(self.out),
            "out": str(self.out),
        }

    def regression_summary(self, state) -> dict[str, Any]:
        """summary.json of a --task regression run: the task, the best epoch's
        R^2 / RMSE / MAE (RMSE and MAE in the targets' units) and the final
        ones; ``best_test_acc`` then holds the best test R^2 (the selection
        score).  Empty for classification."""
        if getattr(self.cfg, "task", "classification") != "regression":
            return {}
        rows = {r["epoch"]: r for r in state.history}
        best = rows.get(state.best_test_epoch if state.best_test_epoch >= 0
                        else state.best_epoch, {})
        last = state.history[-1] if state.history else {}
        out: dict[str, Any] = {"task": "regression", "best_test_r2": state.best_test_acc}
        for k in ("test_r2", "test_rmse", "test_mae"):
            out[f"best_{k}" if k != "test_r2" else "best_test_r2"] = best.get(k, float("nan"))
            out[f"final_{k}"] = last.get(k, float("nan"))
        return out

    def selection(self, state) -> dict[str, Any]:
        """summary.json: how the best epoch was chosen and what it scored.
        The paper's protocol (no --val-fraction): the best test epoch, so
        ``best_test_acc`` is an optimistic estimate.  With a validation set:
        the best validation epoch, its validation and test scores (the test
        score there is the honest estimate), ``best.h5``."""
        rows = {r["epoch"]: r for r in state.history}
        test_epoch = state.best_test_epoch if state.best_test_epoch >= 0 else state.best_epoch
        if self.cfg.val_fraction is None:
            out = {"selection": "test (the paper's protocol: the best epoch is the one with "
                                "the best test accuracy; best_test_acc is optimistic, no "
                                "validation set)",
                   "best_test_epoch": test_epoch}
            if getattr(self.cfg, "keep_best", None) == "test":  # --keep-best test: best.h5
                best = self.ckdir.best_path if self.ckdir is not None else None
                held = best is not None and self.ckdir.best_epoch() == test_epoch
                out["best_checkpoint"] = str(best) if held else None
            return out
        at = rows.get(state.best_epoch, {})
        scores = {f"{k}_at_best_epoch": v for k, v in at.items()
                  if k.startswith(("val_", "test_")) and not k.endswith("_s")}
        best = self.ckdir.best_path if self.ckdir is not None else None
        held = best is not None and self.ckdir.best_epoch() == state.best_epoch
        return {"selection": "validation (the best epoch is the one with the best validation "
                             "score; test_acc_at_best_epoch is the honest estimate, "
                             "best_test_acc the best over all epochs, optimistic)",
                **scores,
                "best_test_acc_any_epoch_optimistic": state.best_test_acc,
                "best_test_epoch": test_epoch,
                "best_checkpoint": str(best) if held else None}

    def finish(self, summary: dict, hist: list[dict], title: str) -> dict:
        """The last files: diagnostics.json (with --diagnostics), summary.json,
        learning_curves.png.  Returns ``summary``."""
        if self.cfg.diagnostics:
            write_json(self.out / "diagnostics.json",
                       {k: [r.get(k) for r in hist] for k in ("epoch", *DIAGNOSTIC_KEYS)})
        write_json(self.out / "summary.json", summary)
        try:
            plot_learning_curves(hist, self.out / "learning_curves.png", title=title)
        except Exception as exc:  # a plot must never lose a finished run
            log.warning("could not draw learning_curves.png: %s", exc)
        return summary

    def close(self) -> None:
        """Close metrics.csv and release the folder."""
        if self.csv is not None:
            self.csv.close()
            self.csv = None
        self.lock.release()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
