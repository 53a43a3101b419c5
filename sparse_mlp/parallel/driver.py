"""One parallel run end to end: :func:`run_parallel`, what
``mpiexec -n K+1 python run_experiment.py --parallel wasap|wassp ...`` calls.

Every rank calls :func:`run_parallel` with the same configuration.  In
order:

1. every rank: the rank table (pid, host, cores), a watch on the other
   ranks of its node, the threads per rank (cores of the node / ranks on
   it, unless ``--threads``) and how to wait for messages (``--mpi-wait``);
2. rank 0 (parameter server): the configuration (a checkpoint's on
   ``--resume``), the data, the checks and the memory plan of the
   sequential runner, the output folder; then it tells the workers the
   configuration (or the error that stops the run before anything started);
3. rank 0 sends each worker its partition of the training set (every K-th
   sample; chunked buffers) and keeps only the test set;
4. rank 0 draws the model (or loads the checkpoint's) and runs the
   parameter server (``server.py``); the workers run theirs (``worker.py``);
5. rank 0 writes metrics.csv as it goes, checkpoints (only rank 0 writes
   files), and at the end summary.json, post-training pruning and the
   learning curves, like the sequential runner;
6. every rank stops watching the others, then all meet at a final barrier
   and return (rank 0 the summary, the workers None).

An error that only one rank sees ends the whole job at once with a message
naming that rank (``transport.abort``: ``MPI_Abort``); errors the ranks
agree on (a bad setting found before training, preemption, divergence)
end every rank with the same exit status and only rank 0 reports them.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..alpha import resolve_alpha
from ..config import TrainConfig
from ..errors import ConfigError, SparseMLPError
from ..experiment import build_model, check_feasible, plan_memory
from ..kernels import threads_source
from ..layers import SparseLayer, layer_inits
from ..memory import available_bytes
from ..model import SparseMLP
from ..report import write_json
from ..run import Run
from ..training import (
    METRIC_COLUMNS,
    PreemptedError,
    RandomStreams,
    StopRequest,
    TrainState,
    stop_on_signals,
)
from . import codec, transport
from .codec import Header, Layout
from .server import ParameterServer
from .state import (
    MODES,
    RankStopped,
    WorkerState,
    coordinated,
    jumped_words,
    model_from_extra,
    model_to_extra,
    resolve_semantics,
)
from .worker import Worker

log = logging.getLogger(__name__)

PARALLEL_COLUMNS = (*METRIC_COLUMNS, "phase", "bytes")
DEFAULT_PHASE1_FRACTION = 0.7  # the authors' code switches to local training at 70%


def default_phase1_epochs(epochs: int) -> int:
    """tau1 when --phase1-epochs is not given: 70% of the epochs (as the
    authors' WASAP code), the remaining 30% local training + averaging."""
    return int(round(DEFAULT_PHASE1_FRACTION * epochs))


def check_parallel(cfg: TrainConfig, K: int, n_train: int | None = None) -> TrainConfig:
    """Refuse what the parallel trainer cannot do; resolve ``phase1_epochs``
    and what ``parallel_semantics`` decides (:func:`.state.resolve_semantics`:
    the phase-2 sync period, the phase-1 decay, the parallel IP schedule),
    so that config.json records the values the run uses."""
    problems = []
    if cfg.parallel not in MODES:
        problems.append(f"--parallel must be one of {', '.join(MODES)}, got {cfg.parallel!r}")
    if K < 1:
        problems.append("--parallel needs at least one worker: mpiexec -n K+1 with K >= 1")
    tau1 = default_phase1_epochs(cfg.epochs) if cfg.phase1_epochs is None else cfg.phase1_epochs
    if not 0 <= tau1 <= cfg.epochs:
        problems.append(f"--phase1-epochs must be between 0 and --epochs ({cfg.epochs}), "
                        f"got {tau1}")
    if n_train is not None and K >= 1 and n_train // K < cfg.batch_size:
        problems.append(f"each of the {K} workers gets about {n_train // K} training samples, "
                        f"fewer than one batch of {cfg.batch_size}: use fewer workers or a "
                        f"smaller --batch-size")
    if problems:
        raise ConfigError("impossible parallel settings:\n  - " + "\n  - ".join(problems))
    return resolve_semantics(cfg.replace(phase1_epochs=int(tau1)))


def threads_per_rank(cfg: TrainConfig, table: list, rank: int) -> int:
    """--threads, else $SPARSE_MLP_THREADS / $OMP_NUM_THREADS (per process,
    read as :func:`sparse_mlp.kernels.threads_source` reads them), else this
    node's cores divided among its ranks (or, when the launcher bound each
    rank to its own cores, the cores of this rank)."""
    if cfg.threads:
        return int(cfg.threads)
    n, source = threads_source()
    if source != "usable CPUs":
        return n
    local, cores, disjoint = transport.node_plan(table, rank)
    if disjoint:
        return max(1, len(table[rank].cores))
    return max(1, cores // local)


def wait_mode(cfg: TrainConfig, table: list, rank: int, threads: int) -> str:
    """--mpi-wait, or (auto) 'sleep' when this node's ranks ask for more
    threads than it has cores, 'spin' when every rank has its own cores."""
    if cfg.mpi_wait in ("spin", "sleep"):
        return cfg.mpi_wait
    local, cores, disjoint = transport.node_plan(table, rank)
    if disjoint:
        return "sleep" if threads > len(table[rank].cores) else "spin"
    return "sleep" if local * threads > cores else "spin"


def partition(n: int, K: int, index: int) -> np.ndarray:
    """The training rows of worker ``index`` (0-based): every K-th sample,
    so each worker sees the whole file's mix of classes."""
    return np.arange(index, n, K, dtype=np.int64)


def skeleton(cfg: TrainConfig, sizes: list[int], threads: int) -> SparseMLP:
    """An empty replica (no weights yet) that a START message fills in."""
    inits = layer_inits(len(sizes) - 1, cfg.weight_init, cfg.output_init)
    layers = [SparseLayer(a, b, np.zeros(b + 1, np.int64), np.empty(0, np.int32),
                          np.empty(0, np.float32), init=init, check=False)
              for a, b, init in zip(sizes[:-1], sizes[1:], inits)]
    return SparseMLP(sizes, epsilon=cfg.epsilon, activation=cfg.activation, alpha=cfg.alpha,
                     init=cfg.weight_init, output=cfg.output, dropout=cfg.dropout,
                     rng=np.random.default_rng(0), n_threads=threads, layers=layers,
                     activation_memory=cfg.activation_memory
                     if cfg.activation_memory in ("fast", "lean") else "fast")


# ====================================================================== entry point
def run_parallel(cfg: TrainConfig, comm=None, *, data=None, resume: str | Path | None = None,
                 overrides: dict[str, Any] | None = None, progress: bool | None = None,
                 overwrite: bool = False) -> dict[str, Any] | None:
    """Train with WASAP-SGD or WASSP-SGD over MPI (``cfg.parallel``).

    Call it on every rank of ``comm`` (default ``MPI.COMM_WORLD``) with the
    same configuration: rank 0 becomes the parameter server, ranks 1..K
    the workers (K = size - 1 >= 1).  It may be called again afterwards
    (another configuration, another seed) on the same ranks.

    Parameters
    ----------
    cfg : TrainConfig
        With ``parallel`` = 'wasap' or 'wassp'; ``phase1_epochs`` (None:
        70% of ``epochs``), ``warmup_epochs`` (WASSP), ``mpi_wait``,
        ``mpi_chunk_bytes``; every other field as for a sequential run.
    comm : mpi4py.MPI.Comm, optional
    data : Dataset, optional
        Rank 0 only: use this data instead of loading ``cfg.dataset``
        (the workers get their partitions from rank 0 either way).
    resume : str or Path, optional
        As :func:`sparse_mlp.experiment.run`: a checkpoint, a run folder,
        or "auto" (the newest valid checkpoint in ``cfg.out``).  The run
        must have the same number of workers.
    overrides : dict, optional
        On resume, the settings given explicitly (checked against the
        checkpoint's, as the sequential runner does).
    progress : bool, optional
        Progress bar on rank 0 (default: when stderr is a terminal).
    overwrite : bool
        Replace the results of an earlier run in ``cfg.out``.

    Returns
    -------
    dict or None
        Rank 0: the summary (also in ``summary.json``); the workers: None.

    Raises
    ------
    PreemptedError, DivergenceError, ConfigError...
        On rank 0, as the sequential runner; on the workers
        :class:`~sparse_mlp.parallel.state.RankStopped` with the same exit
        status (``quiet``: rank 0 reports).  An error on a single rank ends
        the whole job with ``MPI_Abort`` (the message names the rank).
    """
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 2:
        raise ConfigError(
            f"--parallel {cfg.parallel} needs MPI ranks: 1 parameter server + K >= 1 workers. "
            f"Start it with `mpiexec -n K+1 python run_experiment.py --parallel {cfg.parallel} "
            f"...` (this process is alone in its MPI world)")
    table = transport.rank_table(comm)
    watch = transport.DeathWatch(comm, table, rank)
    threads = threads_per_rank(cfg, table, rank)
    t = transport.Transport(comm, chunk_bytes=cfg.mpi_chunk_bytes,
                            wait=wait_mode(cfg, table, rank, threads))
    stop = StopRequest()
    result = None
    failure: BaseException | None = None
    try:
        with stop_on_signals(stop):
            if rank == 0:
                result = _parameter_server(cfg, t, table, threads, stop, data, resume,
                                           overrides, progress, overwrite)
            else:
                _worker(cfg, t, threads, stop)
    except BaseException as exc:  # noqa: B036 - every failure must end the job
        if not getattr(exc, "coordinated", False) and not isinstance(exc, RankStopped):
            code = getattr(exc, "exit_code", None)
            code = 130 if isinstance(exc, KeyboardInterrupt) else (code if code else 1)
            watch.close()
            transport.abort(comm, table[rank], exc, code)
        failure = exc
    # every rank has finished talking: stop watching, then leave together
    watch.close()
    t.barrier()
    if failure is not None:
        raise failure
    return result


# ====================================================================== workers
def _worker(cfg_local: TrainConfig, t: transport.Transport, threads: int,
            stop: StopRequest) -> None:
    msg = t.recv_object(0)
    if not msg["ok"]:
        raise RankStopped(msg["exit_code"], msg["message"])
    cfg = TrainConfig.from_dict(msg["cfg"])
    sizes = msg["sizes"]
    index = t.rank - 1
    h = Header(len(sizes) - 1)
    t.recv_header(h.arr, source=0)
    if h.kind != codec.DATA:
        raise RuntimeError(f"worker {t.rank}: expected its data partition, got "
                           f"{codec.KIND_NAMES.get(h.kind, h.kind)}")
    X = np.empty((h[Header.COUNT], h[Header.STEP]), dtype=np.float32)
    y = np.empty(h[Header.COUNT], dtype=np.int32)
    t.recv(0, [X, y])
    model = skeleton(cfg, sizes, threads)
    worker = Worker(cfg, t, model, X, y, index, stop)
    code = worker.run()
    log.debug("worker %d done (exit code %d)", t.rank, code)
    if code:
        raise RankStopped(code)


# ====================================================================== parameter server
def _prepare(r: Run, K: int, table: list, threads: int, data) -> tuple[TrainConfig, Any, Any]:
    """The run owner's preparation for K workers: data, checks, memory plan
    (per rank of this node), config.json.  Returns (cfg, data, plan)."""
    ckpt = r.ckpt
    if ckpt is not None and int(ckpt.extra["parallel"]["workers"]) != K:
        par = ckpt.extra["parallel"]
        raise ConfigError(f"{ckpt.path} was written by a run with {par['workers']} "
                          f"workers; resume it with the same number: mpiexec -n "
                          f"{int(par['workers']) + 1} (this job has {K} workers)")
    data = r.load_data(data)
    n_train = data.X_train.shape[0]
    cfg = r.cfg
    check_feasible(cfg, data.n_features, data.n_classes, n_train)
    cfg = check_parallel(cfg, K, n_train)
    cfg = resolve_alpha(cfg, data.X_train)
    local, _, _ = transport.node_plan(table, 0)
    plan = None
    if ckpt is None:
        # every rank of this node holds a model and up to a worker's share of the data
        per_rank = data.X_test.shape[0] + -(-n_train // K)
        cfg, plan = plan_memory(cfg, data.n_features, data.n_classes, per_rank,
                                available=available_bytes() // max(1, local))
    cfg = r.cfg = cfg.replace(threads=threads)
    r.write_config(data, mpi={"ranks": len(table), "workers": K, "threads_per_rank": threads,
                              "hosts": sorted({x.host for x in table})})
    return cfg, data, plan


def _stop_workers(t: transport.Transport, exc: SparseMLPError) -> BaseException:
    """Tell every worker that the run stops before training (they exit with
    the same status, rank 0 reports)."""
    for k in range(1, t.size):
        t.send_object(k, {"ok": False, "exit_code": exc.exit_code, "message": str(exc)})
    return coordinated(exc)


def _parameter_server(cfg: TrainConfig, t: transport.Transport, table: list, threads: int,
                      stop: StopRequest, data, resume, overrides, progress, overwrite: bool
                      ) -> dict[str, Any]:
    K = t.size - 1
    log.info("MPI: %d ranks (1 parameter server + %d workers) on %d node(s), %d thread(s) "
             "per rank, waiting by %s; %s", t.size, K, len({r.host for r in table}), threads,
             "spinning" if t.spin else "sleeping", "; ".join(
                 transport.describe(r) for r in table))
    # 1. the run folder, configuration, data, checks (errors here stop every rank cleanly)
    try:
        run = Run(cfg.replace(threads=threads), "parallel", resume=resume, overrides=overrides,
                  overwrite=overwrite)
    except SparseMLPError as exc:
        raise _stop_workers(t, exc) from None
    with run:
        try:
            cfg, data, plan = _prepare(run, K, table, threads, data)
        except SparseMLPError as exc:
            raise _stop_workers(t, exc) from None
        return _serve(run, cfg, data, plan, t, table, threads, stop, progress)


def _serve(r: Run, cfg: TrainConfig, data, plan, t: transport.Transport, table: list,
           threads: int, stop: StopRequest, progress) -> dict[str, Any]:
    """Rank 0 inside its run folder: partitions, model, the parameter server,
    the closing files."""
    K = t.size - 1
    sizes = [data.n_features, *cfg.hidden, data.n_classes]
    write_json(r.out / "ranks.json", [{"rank": x.rank, "role": transport.role(x.rank),
                                       "pid": x.pid, "host": x.host, "cores": list(x.cores)}
                                      for x in table])
    for k in range(1, t.size):
        t.send_object(k, {"ok": True, "cfg": cfg.to_dict(), "sizes": sizes})

    # 2. the workers' partitions of the training set (every K-th sample)
    n_train = data.X_train.shape[0]
    bytes0 = t.bytes_sent
    h = Header(len(sizes) - 1)
    partition_sizes = []
    for k in range(1, t.size):
        rows = partition(n_train, K, k - 1)
        Xk = np.ascontiguousarray(data.X_train[rows], dtype=np.float32)
        yk = np.ascontiguousarray(data.y_train[rows], dtype=np.int32)
        h.clear()
        h[Header.KIND], h[Header.COUNT], h[Header.STEP] = codec.DATA, Xk.shape[0], Xk.shape[1]
        t.send(k, h.arr, [Xk, yk])
        partition_sizes.append(int(Xk.shape[0]))
        del Xk, yk
    X_test, y_test = data.X_test, data.y_test
    data_bytes = t.bytes_sent - bytes0
    log.info("training set split into %d partitions of %s samples (%.1f MB sent)", K,
             "/".join(map(str, partition_sizes)), data_bytes / 1e6)

    # 3. the model, the streams and where each worker is: new, or the checkpoint's
    ckpt, info = r.ckpt, r.info
    switch_model = None  # phase 2 resumed: the PS's model as of the switch
    if ckpt is None:
        streams = RandomStreams(cfg.seed)
        t0 = time.perf_counter()
        model = build_model(cfg, data.n_features, data.n_classes, streams)
        state = TrainState()
        workers = [WorkerState(shuffle=jumped_words(streams.shuffle, i)) for i in range(K)]
        info.update({"init_s": time.perf_counter() - t0,
                     "activation_memory": plan.activation_memory,
                     "micro_batch": cfg.micro_batch or cfg.batch_size,
                     "nnz_per_layer_start": model.nnz_per_layer()})
        stats_before: dict = {}
        log.info("model %s: %s weights (%s per layer), %s, %d workers, phase 1 (%s) for %d "
                 "of %d epochs", "-".join(map(str, sizes)), f"{model.nnz:,}",
                 model.nnz_per_layer(), cfg.parallel.upper(), K,
                 "asynchronous" if cfg.parallel == "wasap" else "synchronous",
                 cfg.phase1_epochs, cfg.epochs)
    else:
        model, streams, state = ckpt.model, ckpt.streams(), ckpt.state
        model.n_threads = threads
        par = ckpt.extra["parallel"]
        wk = par["worker"]
        workers = [WorkerState.from_extra(wk[f"w{k}"], model) for k in range(1, K + 1)]
        for ws in workers:
            if ws.model is not None:
                ws.model.n_threads = threads
        stats_before = dict(par.get("stats", {}))
        if "ps_model" in par:  # phase 2: the PS's model as of the switch
            switch_model = model_from_extra(par["ps_model"], model)
            switch_model.n_threads = threads
        info.setdefault("init_s", 0.0)
        info.setdefault("nnz_per_layer_start", model.nnz_per_layer())
    r.begin_session(state, workers=K)

    # 4. metrics, checkpoints, the parameter server
    r.checkpoints(state)
    csv_out = r.metrics(PARALLEL_COLUMNS, state.history)
    layout = Layout.of(model)

    def on_checkpoint(ps: ParameterServer, reason: str, ck_model: SparseMLP):
        extra = {"parallel": {"mode": cfg.parallel, "workers": K,
                              "phase1_epochs": cfg.phase1_epochs, "phase": ps.phase,
                              # (absent: written before --parallel-semantics, i.e. text)
                              "semantics": cfg.parallel_semantics,
                              "worker": {f"w{k}": ws.to_extra(layout)
                                         for k, ws in enumerate(ps.workers, start=1)},
                              "stats": _merged_stats(stats_before, ps.stats)}}
        if ps.phase == 2 and ps.switch_model is not None:
            extra["parallel"]["ps_model"] = model_to_extra(ps.switch_model)
        streams_state = {**streams.state(), "seed": streams.seed,
                         "dropout_seed": streams.dropout_seed}
        return r.save_checkpoint(reason, model=ck_model, state=ps.state, streams=streams_state,
                                 extra=extra)

    bar = None
    if progress is None:
        import sys
        progress = sys.stderr.isatty()
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.epochs, initial=state.epoch, unit="epoch", dynamic_ncols=True,
                   desc=f"{cfg.parallel} x{K}")
    ps = ParameterServer(cfg, t, model, streams, state, X_test, y_test, partition_sizes,
                         workers, on_epoch=csv_out, on_checkpoint=on_checkpoint, stop=stop,
                         progress=bar, switch_model=switch_model)
    try:
        ps.run()
    except PreemptedError as exc:
        raise coordinated(exc.continued(
            f"Continue it with the same number of ranks: mpiexec -n {K + 1} python "
            f"run_experiment.py --parallel {cfg.parallel} --resume auto --out {r.out}")) from None
    finally:
        if bar is not None:
            bar.close()

    # 5. the result: the final model (phase 2: the average of the K replicas)
    final = ps.final_model
    post_rows = r.post_prune(final, X_test, y_test)
    stats = _merged_stats(stats_before, ps.stats)
    dense = layout.nbytes_dense()
    sparse_values = 4 * layout.n_values(final.nnz_per_layer())
    grads_per_epoch = ps.steps_per_epoch * (K if ps.sync else 1)
    ep1, ep2 = stats["epochs_phase1"], stats["epochs_phase2"]
    summary = {
        **r.summary(data.name, final, state, post_rows, None, threads),
        "parallel": {
            "mode": cfg.parallel, "workers": K, "ranks": t.size, "threads_per_rank": threads,
            "mpi_wait": "spin" if t.spin else "sleep", "mpi_chunk_bytes": t.chunk_bytes,
            "hosts": sorted({x.host for x in table}),
            "phase1_epochs": cfg.phase1_epochs, "phase2_epochs": cfg.epochs - cfg.phase1_epochs,
            "warmup_epochs": cfg.warmup_epochs if ps.sync else None,
            "semantics": cfg.parallel_semantics,
            "phase2_sync_every": cfg.phase2_sync_every,
            "phase2_syncs": stats.get("phase2_syncs", 0),
            "phase1_decay": cfg.phase1_decay,
            "ip_every": cfg.parallel_ip_every, "ip_percentile": cfg.parallel_ip_percentile,
            "partition_sizes": partition_sizes,
            "phase1_steps_per_epoch": ps.steps_per_epoch,
            "gradients_applied": stats["gradients"],
            "stale_gradient_fraction": stats["stale_gradients"] / max(1, stats["gradients"]),
            # phase-1 gradients that reached the server after the switch (not applied)
            "late_gradients": stats.get("late_gradients", 0),
            "dropped_entry_fraction": stats["entries_dropped"] / max(1, stats["entries_sent"]),
            "bytes_data_partitions": data_bytes,
            "bytes_per_epoch_phase1": stats["bytes_phase1"] / ep1 if ep1 else None,
            "bytes_per_epoch_phase2": stats["bytes_phase2"] / ep2 if ep2 else None,
            # the same phase-1 messages with dense float32 weights and gradients:
            # per gradient, one gradient up and one model down
            "dense_bytes_per_epoch_phase1": 2 * dense * grads_per_epoch if ep1 else None,
            "model_message_bytes_sparse": sparse_values,
            "model_message_bytes_dense": dense,
            "ps_wait_s": t.wait_s,
        },
    }
    r.finish(summary, state.history,
             f"{data.name} {summary['architecture']} {cfg.activation}"
             f"{' + IP' if cfg.importance_pruning else ''}, {cfg.parallel.upper()} x{K}")
    if not math.isfinite(summary["best_test_acc"]) or summary["best_test_acc"] < 0:
        log.warning("no test evaluation happened in this run")
    return summary


def _merged_stats(before: dict, now: dict) -> dict:
    return {k: int(before.get(k, 0)) + int(v) for k, v in now.items()}
