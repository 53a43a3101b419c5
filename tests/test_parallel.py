"""WASAP-SGD / WASSP-SGD (sparse_mlp/parallel): the sparse operations and
the message layout in-process, then whole runs under ``mpiexec -n 2|3``
(tests/_mpi_helper.py): one worker equals the sequential run bit for bit,
two workers train (chunked messages forced), preemption + resume is exact
(WASSP), and a rank that dies or raises stops the whole job at once."""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _processes import HAVE_MPI4PY, MPIEXEC, needs_mpi4py, needs_mpiexec, read_until
from conftest import random_layer

from sparse_mlp.checkpoint import LAYER_ARRAYS, list_checkpoints, load, load_checkpoint
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.layers import SparseLayer
from sparse_mlp.model import SparseMLP
from sparse_mlp.parallel import codec, ops
from sparse_mlp.training import TIMING_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).with_name("_mpi_helper.py")

# digits on a tiny sparse network (64-24-24-10, 827 weights, 35% dense): 42 batches
# of 32 per epoch, 21 per worker with 2 workers
BASE = ["--dataset", "digits", "--hidden", "24,24", "--epsilon", "5", "--epochs", "4",
        "--threads", "1", "--no-progress"]


# ---------------------------------------------------------------------- sparse operations
def _topology_pair(rng, n_in=40, n_out=30):
    old = random_layer(rng, n_in, n_out, 0.2, empty_rows=(3,))
    new = random_layer(rng, n_in, n_out, 0.2, empty_rows=(5,))
    return old, new


@pytest.mark.parametrize("threads", [1, 2])
def test_retain_valid_updates_matches_numpy(rng, threads):
    old, new = _topology_pair(rng)
    g_old = rng.standard_normal(old.nnz).astype(np.float32)
    g, kept = ops.retain_valid_updates(old.indptr, old.indices, g_old, new, n_threads=threads)
    g_ref, kept_ref = ops.retain_valid_numpy(old.indptr, old.indices, g_old, new.indptr,
                                            new.indices)
    assert kept == kept_ref > 0
    assert np.array_equal(g, g_ref)
    # entries on connections both have are kept exactly; new connections get 0
    dense_old = np.zeros((old.n_in, old.n_out), np.float32)
    dense_old[old.indices, np.repeat(np.arange(old.n_out), old.row_lengths())] = g_old
    cols = np.repeat(np.arange(new.n_out), new.row_lengths())
    assert np.array_equal(g, dense_old[new.indices, cols])


@pytest.mark.parametrize("threads", [1, 2])
def test_union_add_matches_numpy(rng, threads):
    a, b = _topology_pair(rng)
    u = ops.union_add(a, b, n_threads=threads)
    ref = ops.union_add_numpy(a, b)
    for name in ("indptr", "indices", "data", "velocity", "bias", "bias_velocity"):
        assert np.array_equal(getattr(u, name), getattr(ref, name)), name
    dense = a.to_scipy().toarray() + b.to_scipy().toarray()
    assert np.array_equal(u.to_scipy().toarray(), dense)


def _model_on(layers, sizes):
    return SparseMLP(sizes, epsilon=1, activation="relu", layers=layers, n_threads=1)


def test_average_models_union_absent_zero_then_prune_to_target():
    # one 3 -> 2 layer per model: W[i, j] as (row j = output, col i = input)
    def layer(entries):
        pos = np.array(sorted(j * 3 + i for (i, j) in entries), dtype=np.int64)
        vals = np.array([entries[(p % 3, p // 3)] for p in pos], dtype=np.float32)
        lay = SparseLayer.from_positions(3, 2, pos, vals)
        lay.bias[:] = [1.0, 2.0]
        return lay

    a = _model_on([layer({(0, 0): 1.0, (1, 0): -4.0, (2, 1): 0.5})], [3, 2])
    b = _model_on([layer({(0, 0): 3.0, (2, 0): 6.0, (1, 1): -0.2})], [3, 2])
    before = [lay.data.copy() for lay in a.layers]
    avg = ops.average_models([a, b], targets=[3])
    W = avg.layers[0].to_scipy().toarray()
    # union {(0,0): 2.0, (1,0): -2.0, (2,0): 3.0, (2,1): 0.25, (1,1): -0.1}; keep the 3 largest |w|
    expected = np.zeros((3, 2), np.float32)
    expected[0, 0], expected[1, 0], expected[2, 0] = 2.0, -2.0, 3.0
    assert np.array_equal(W, expected)
    assert avg.layers[0].nnz == 3
    assert np.array_equal(avg.layers[0].bias, [1.0, 2.0])
    assert np.array_equal(a.layers[0].data, before[0])  # inputs untouched
    # default target: the models' mean nnz; one model: an equal copy
    assert ops.average_models([a, b]).layers[0].nnz == 3
    one = ops.average_models([a])
    assert one.layers[0] is not a.layers[0]
    assert np.array_equal(one.layers[0].data, a.layers[0].data)


def test_average_models_srelu_and_shapes(rng):
    sizes = [12, 10, 8, 3]
    ms = [SparseMLP(sizes, epsilon=2, activation="srelu", rng=np.random.default_rng(s),
                    n_threads=1) for s in range(3)]
    for m in ms:
        for act in m.acts:
            act.params += np.float32(rng.standard_normal())
    avg = ops.average_models(ms)
    for li, lay in enumerate(avg.layers):
        assert lay.nnz == round(np.mean([m.layers[li].nnz for m in ms]))
    for h, act in enumerate(avg.acts):
        assert np.allclose(act.params, np.mean([m.acts[h].params for m in ms], axis=0))


# ---------------------------------------------------------------------- message layout
def test_layout_pack_unpack_roundtrip(rng):
    sizes = [9, 7, 5, 3]
    m = SparseMLP(sizes, epsilon=2, activation="srelu", rng=rng, n_threads=1)
    for lay in m.layers:
        lay.data[:] = rng.standard_normal(lay.nnz)
        lay.velocity[:] = rng.standard_normal(lay.nnz)
        lay.bias[:] = rng.standard_normal(lay.n_out)
    layout = codec.Layout.of(m)
    nnz = m.nnz_per_layer()
    values, vel = layout.pack(m), layout.pack(m, velocity=True)
    assert values.size == layout.n_values(nnz) == sum(nnz) + 7 + 5 + 3 + 4 * (7 + 5)
    ip, ix = layout.pack_topology(m)
    twin = SparseMLP(sizes, epsilon=2, activation="srelu", rng=np.random.default_rng(99),
                     n_threads=1)
    layout.set_topology(twin, ip, ix, nnz)
    layout.unpack(twin, values)
    layout.unpack(twin, vel, velocity=True)
    for la, lb in zip(m.layers, twin.layers):
        for name in LAYER_ARRAYS:
            assert np.array_equal(getattr(la, name), getattr(lb, name)), name
    for a, b in zip(m.acts, twin.acts):
        assert np.array_equal(a.params, b.params)


def test_pcg64_words_and_header_fields():
    gen = np.random.default_rng(7)
    gen.random(3)
    words = codec.pack_pcg64(gen)
    assert np.array_equal(codec.generator_from(words).random(5), gen.random(5))
    h = codec.Header(3)
    h[codec.Header.STEP] = 12345678901
    h.loss = -0.125
    h.nnz = [5, 6, 7]
    h.set_rng(codec.Header.RNG_SHUFFLE, words)
    assert h[codec.Header.STEP] == 12345678901 and h.loss == -0.125 and h.nnz == [5, 6, 7]
    assert np.array_equal(h.rng(codec.Header.RNG_SHUFFLE), words)


def test_worker_streams_and_warmup():
    from sparse_mlp.parallel.state import jumped_words, warmup_factor, worker_dropout_seed

    gen = np.random.default_rng(3)
    assert np.array_equal(jumped_words(gen, 0), codec.pack_pcg64(gen))  # worker 0 = the run's
    words = {tuple(jumped_words(gen, i)) for i in range(4)}
    assert len(words) == 4
    assert worker_dropout_seed(11, 0) == 11 and len({worker_dropout_seed(11, i)
                                                     for i in range(8)}) == 8
    # Goyal et al.: 1 at the start, K after the warm-up, linear in between
    assert warmup_factor(0, 10, 5, 4) == 1.0
    assert warmup_factor(25, 10, 5, 4) == pytest.approx(2.5)
    assert warmup_factor(50, 10, 5, 4) == 4.0
    assert warmup_factor(0, 10, 0, 4) == 4.0 and warmup_factor(3, 10, 5, 1) == 1.0


@needs_mpi4py
def test_transport_sends_large_arrays_in_chunks():
    """A loopback on MPI_COMM_SELF with 7-byte chunks: every array (odd
    sizes, several dtypes, empty) arrives intact, in order."""
    from mpi4py import MPI

    from sparse_mlp.parallel.transport import Transport

    t = Transport(MPI.COMM_SELF, chunk_bytes=7, wait="sleep")
    assert len(t._pieces(np.zeros(10, np.float32))) == 6  # 40 bytes -> 6 pieces
    sent = [np.arange(23, dtype=np.float32) / 3, np.arange(11, dtype=np.int64) - 5,
            np.zeros(0, np.int32), np.arange(12, dtype=np.int32).reshape(3, 4)]
    header = np.arange(codec.Header(2).arr.size, dtype=np.int64)
    reqs = t.isend(0, header, sent)
    got_header = np.empty_like(header)
    assert t.recv_header(got_header) == 0
    got = [np.empty_like(a) for a in sent]
    t.recv(0, got)
    t.wait(reqs)
    assert np.array_equal(got_header, header)
    for a, b in zip(sent, got):
        assert np.array_equal(a, b)
    assert t.bytes_sent == t.bytes_received == header.nbytes + sum(a.nbytes for a in sent)
    assert t.messages_sent == 1 + sum(len(t._pieces(a)) for a in sent)


@needs_mpi4py
def test_parallel_settings_are_checked():
    from sparse_mlp.parallel.driver import check_parallel, default_phase1_epochs

    cfg = TrainConfig(parallel="wasap", epochs=10, batch_size=32)
    assert check_parallel(cfg, 2, 1000).phase1_epochs == default_phase1_epochs(10) == 7
    from sparse_mlp.run import check_supported
    for flag, change in (("--growth gradient", {"growth": "gradient"}),
                         ("--diagnostics True", {"diagnostics": True}),
                         ("--train-eval 64", {"train_eval": 64}),
                         ("--save-topology True", {"save_topology": True})):
        with pytest.raises(ConfigError, match=f"--parallel wasap does not use {flag}"):
            check_supported(cfg.replace(**change), "parallel")
    with pytest.raises(ConfigError, match="fewer than one batch"):
        check_parallel(cfg, 40, 1000)
    with pytest.raises(ConfigError, match="--phase1-epochs must be between"):
        cfg.replace(phase1_epochs=11).validate()
    with pytest.raises(ConfigError, match="--parallel must be"):
        cfg.replace(parallel="hogwild").validate()


@needs_mpi4py
def test_parallel_without_mpiexec_says_how_to_start(capsys):
    import run_experiment

    assert run_experiment.main([*BASE, "--parallel", "wasap", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mpiexec -n K+1 python run_experiment.py --parallel wasap" in err


# ---------------------------------------------------------------------- whole runs (MPI)
def _env(**extra) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **extra}


def _mpirun(n: int, *args: str, timeout: float = 60, env_extra: dict | None = None
            ) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(HELPER), *args],
                          cwd=ROOT, env=_env(**(env_extra or {})), capture_output=True,
                          text=True, timeout=timeout)


def _spawn(n: int, *args: str, launcher_flags=(), env_extra: dict | None = None
           ) -> subprocess.Popen:
    return subprocess.Popen([MPIEXEC, *launcher_flags, "-n", str(n), sys.executable,
                             str(HELPER), *args], cwd=ROOT, env=_env(**(env_extra or {})),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in (*TIMING_COLUMNS, "bytes")}
                for r in csv.DictReader(fh)]


def _same_model(a, b) -> None:
    for la, lb in zip(a.layers, b.layers):
        for name in LAYER_ARRAYS:
            assert np.array_equal(getattr(la, name), getattr(lb, name)), name


@needs_mpiexec
def test_one_worker_equals_the_sequential_run_bit_for_bit(tmp_path):
    """K = 1: the worker replays the sequential run's data order, dropout
    masks and evolution draws, and the PS applies the same update; WASAP
    (3 epochs of phase 1, then local training and the 1-model average) and
    WASSP (lr x 1) give the sequential run's metrics and weights exactly.
    This is the text's reading (--parallel-semantics text: weight decay in
    phase 1, an independent phase 2); the authors' code differs on purpose."""
    import run_experiment

    zero = ["--output-init", "zero"]  # the output layer's init reaches the parameter server
    assert run_experiment.main([*BASE, "--quiet", "--out", str(tmp_path / "seq")]) == 0
    assert run_experiment.main([*BASE, *zero, "--quiet", "--out", str(tmp_path / "seq0")]) == 0
    text = ["--parallel-semantics", "text"]
    runs = [[*BASE, *text, "--quiet", "--parallel", "wasap", "--phase1-epochs", "3", "--out",
             str(tmp_path / "wasap")],
            [*BASE, *text, "--quiet", "--parallel", "wassp", "--out", str(tmp_path / "wassp")],
            [*BASE, *zero, *text, "--quiet", "--parallel", "wassp", "--out",
             str(tmp_path / "wassp0")]]
    res = _mpirun(2, "runs", json.dumps(runs))
    assert res.returncode == 0, res.stdout + res.stderr
    for mode, seq in (("wasap", "seq"), ("wassp", "seq"), ("wassp0", "seq0")):
        rows = _rows(tmp_path / mode / "metrics.csv")
        seq_rows = _rows(tmp_path / seq / "metrics.csv")
        assert [{k: v for k, v in r.items() if k != "phase"} for r in rows] == seq_rows, mode
        _same_model(load(tmp_path / mode), load(tmp_path / seq))
    assert _rows(tmp_path / "seq0" / "metrics.csv") != _rows(tmp_path / "seq" / "metrics.csv")
    assert [r["phase"] for r in _rows(tmp_path / "wasap" / "metrics.csv")] == ["1"] * 3 + ["2"]


# WASAP here also prunes by importance in both phases: at the end of epoch 2 on the
# PS (phase 1), at the end of epoch 3 on each worker (phase 2, independently: the
# text's reading; WASSP below runs the default, the authors' code, and
# tests/test_parallel_fidelity.py what that changes)
WASAP_IP = ["--phase1-epochs", "2", "--importance-pruning", "--ip-start", "0", "--ip-every", "1",
            "--parallel-semantics", "text"]


@pytest.fixture(scope="module")
def two_worker_runs(tmp_path_factory):
    """WASAP and WASSP with 2 workers, one after the other on the same 3
    ranks, every message cut into 4 KiB chunks."""
    if MPIEXEC is None or not HAVE_MPI4PY:
        pytest.skip("no mpiexec / mpi4py")
    out = tmp_path_factory.mktemp("two_workers")
    runs = [[*BASE, "--quiet", "--parallel", mode, "--mpi-chunk-bytes", "4096",
             *(WASAP_IP if mode == "wasap" else []), "--out", str(out / mode)]
            for mode in ("wasap", "wassp")]
    res = _mpirun(3, "runs", json.dumps(runs))
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.mark.parametrize("mode", ["wasap", "wassp"])
def test_two_workers_train_with_chunked_messages(two_worker_runs, mode):
    out = two_worker_runs / mode
    s = json.loads((out / "summary.json").read_text())
    par = s["parallel"]
    assert par["mode"] == mode and par["workers"] == 2 and par["mpi_chunk_bytes"] == 4096
    assert par["partition_sizes"] == [674, 673]
    tau1 = 2 if mode == "wasap" else 3
    assert par["phase1_epochs"] == tau1 and par["phase2_epochs"] == 4 - tau1
    # sequential: 75% after these 4 epochs; the authors' WASSP (code semantics) warms
    # up more slowly and its phase 2 takes the PS's model after every step here
    # (round(0.3 x 4) = 1): 44% every run (chance: 10%). WASAP's PS applies the
    # gradients in the order they arrive, so its accuracy moves from run to run:
    # 0.50-0.64 in 15 runs on a 2-core VM (2026-12-06), where a bound of 0.5 failed
    # a `make test` run (0.5 exactly); 0.4 is four times chance
    assert s["best_test_acc"] > (0.4 if mode == "wasap" else 0.35)
    rows = _rows(out / "metrics.csv")
    assert [r["phase"] for r in rows] == ["1"] * tau1 + ["2"] * (4 - tau1)
    # the result is the average, pruned back to the workers' (mean) size
    final = load(out)
    assert final.nnz_per_layer() == s["nnz_per_layer_end"]
    if mode == "wassp":
        assert s["nnz_per_layer_end"] == s["nnz_per_layer_start"]
    else:  # Importance Pruning on the PS, then on each worker
        nnz = [int(r["nnz"]) for r in rows]
        assert nnz[0] > nnz[1] > nnz[2] == nnz[3]  # nnz after each epoch's evolution
        assert abs(final.nnz - nnz[3]) <= final.n_layers
    # sparse messages: far less than dense float32 weights would need
    assert par["bytes_per_epoch_phase1"] < par["dense_bytes_per_epoch_phase1"]
    ck = load_checkpoint(list_checkpoints(out / "checkpoints")[-1])
    assert ck.extra["parallel"]["workers"] == 2 and "w2" in ck.extra["parallel"]["worker"]
    assert "run" in ck.extra and "data_fingerprint" in ck.extra["run"]



def _retry_once(test):
    """Run a test of launcher behaviour again (in a fresh folder) when it
    fails once: these tests race real processes (a signal against MPICH's
    own cleanup, output forwarding at MPI_Abort), and a loaded 2-core CI
    machine can lose a race the code does not control; twice in a row is a
    real failure."""
    @functools.wraps(test)
    def wrapper(*args, tmp_path, **kwargs):
        try:
            return test(*args, tmp_path=tmp_path, **kwargs)
        except AssertionError as first:
            again = tmp_path / "retry"
            again.mkdir()
            print(f"retrying once after: {str(first)[:500]}")
            return test(*args, tmp_path=again, **kwargs)
    return wrapper


@needs_mpiexec
@_retry_once
def test_preempted_wassp_run_resumes_exactly(two_worker_runs, tmp_path):
    """SIGTERM to mpiexec in the middle of phase 1: every rank stops, rank 0
    checkpoints (exit 75); resuming with the same ranks finishes with the
    uninterrupted run's metrics and weights (WASSP is deterministic)."""
    out = tmp_path / "run"
    args = [*BASE, "--parallel", "wassp", "--out", str(out)]
    proc = _spawn(3, "cli", *args, env_extra={"SLOW_STEP_S": "0.02"})
    read_until(proc, "epoch 1/4", timeout=40.0, group=True)
    time.sleep(0.15)
    os.killpg(proc.pid, signal.SIGTERM)  # what SLURM does: the launcher and its ranks
    rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 75, rest
    assert "preempted: received SIGTERM: stopped" in rest and "--resume auto" in rest
    stopped = load_checkpoint(list_checkpoints(out / "checkpoints")[-1]).state
    assert 1 <= stopped.epoch < 4

    res = _mpirun(3, "cli", *args, "--quiet", "--resume", "auto")
    assert res.returncode == 0, res.stdout + res.stderr
    straight = two_worker_runs / "wassp"
    assert _rows(out / "metrics.csv") == _rows(straight / "metrics.csv")
    _same_model(load(out), load(straight))


def _pid_of(text: str, rank: int) -> int:
    m = re.search(rf"rank {rank} \((?:worker {rank}|parameter server), pid (\d+)", text)
    assert m, text
    return int(m.group(1))


@needs_mpiexec
@pytest.mark.parametrize("cleanup", ["mpiexec", "watch"],
                         ids=["launcher-cleans-up", "-disable-auto-cleanup"])
@_retry_once
def test_a_killed_worker_stops_the_whole_job(tmp_path, cleanup):
    """SIGKILL one worker mid-run: the job ends within seconds, never hangs.
    MPICH's mpiexec kills the others itself and names the dead process's
    pid, which the rank table at the start maps to its rank; a launcher
    that does not clean up leaves it to the ranks' watch, which names the
    rank and aborts."""
    flags = ("-disable-auto-cleanup",) if cleanup == "watch" else ()
    proc = _spawn(3, "cli", *BASE, "--epochs", "30", "--parallel", "wasap", "--out",
                  str(tmp_path / "run"), launcher_flags=flags,
                  env_extra={"SLOW_STEP_S": "0.02"})
    seen = read_until(proc, "epoch 1/30", timeout=40.0, group=True)
    pid = _pid_of(seen, 1)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    try:
        rest = proc.communicate(timeout=15)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("the job did not stop after a worker was killed") from None
    assert time.monotonic() - t0 < 10
    assert proc.returncode != 0
    text = seen + rest
    if cleanup == "watch":  # usually the watch names the rank; MPICH's launcher at
        # times still ends the job first, with its own report of the signal
        named = f"rank 1 (worker 1, pid {pid} on" in rest and "died" in rest
        assert named or "TERMINATED WITH THE EXIT STRING: Killed (signal 9)" in rest, text
    else:  # whichever is first: the launcher's report (its pid, which the rank table
        # printed at the start maps to rank 1) or the ranks' watch, which names the rank
        assert f"rank 1 (worker 1, pid {pid} on" in seen
        assert f"PID {pid}" in rest or (f"rank 1 (worker 1, pid {pid} on" in rest
                                        and "died" in rest), text


@needs_mpiexec
@_retry_once
def test_a_rank_that_raises_stops_the_whole_job(tmp_path):
    t0 = time.monotonic()
    res = _mpirun(3, "raise", "2", "5", *BASE, "--epochs", "30", "--parallel", "wasap",
                  "--out", str(tmp_path / "run"), timeout=40)
    assert time.monotonic() - t0 < 30
    assert res.returncode != 0
    err = res.stdout + res.stderr
    assert "failed with RuntimeError: injected failure at gradient 5" in err, err
    assert re.search(r"rank 2 \(worker 2, pid \d+ on [^)]+\) failed", err), err
