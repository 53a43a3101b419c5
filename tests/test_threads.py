"""Kernel threads on a shared node: the default thread count, the warnings,
the one-thread rule for small kernel calls, the bounded OpenMP spin, and a
fault test for oversubscription (issue 19, item 9)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import bias_paths, every_kernel, random_layer

from sparse_mlp import kernels
from sparse_mlp.kernels import spmm, topology
from sparse_mlp.model import SparseMLP

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("SPARSE_MLP_THREADS", "OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")


def _cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return []


def _libgomp() -> bool:
    with open("/proc/self/maps") as f:
        return "/libgomp.so" in f.read()


@pytest.fixture
def clean_env(monkeypatch):
    for var in THREAD_VARS:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


class BusyProcess:
    """A pure-Python busy loop pinned to one CPU: 'one other busy process on
    the node', sharing a core with one of our threads."""

    def __init__(self, cpu: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{cpu}}})\n"
                                   "while True:\n    pass\n"])

    def __enter__(self) -> BusyProcess:
        time.sleep(0.1)  # started and spinning
        return self

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait()


# ------------------------------------------------------------ default threads
def test_default_threads_is_the_affinity_mask(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5})
    assert kernels.usable_cpus() == 3
    assert kernels.threads_source() == (3, "usable CPUs")
    assert kernels.default_threads() == 3


def test_slurm_cpus_per_task_caps_the_affinity_mask(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    clean_env.setenv("SLURM_CPUS_PER_TASK", "4")
    assert kernels.default_threads() == 4
    clean_env.setenv("SLURM_CPUS_PER_TASK", "128")  # never above the mask
    assert kernels.default_threads() == 64
    clean_env.setenv("SLURM_CPUS_PER_TASK", "")  # unset or empty: ignored
    assert kernels.default_threads() == 64


def test_environment_threads_take_precedence(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    clean_env.setenv("SLURM_CPUS_PER_TASK", "2")
    clean_env.setenv("OMP_NUM_THREADS", "6,2")  # OpenMP's nested list: the outer level
    assert kernels.threads_source() == (6, "OMP_NUM_THREADS")
    clean_env.setenv("SPARSE_MLP_THREADS", "3")
    assert kernels.threads_source() == (3, "SPARSE_MLP_THREADS")
    clean_env.setenv("SPARSE_MLP_THREADS", "zero")  # not a positive integer: skipped
    clean_env.setenv("OMP_NUM_THREADS", "0")
    assert kernels.threads_source() == (2, "usable CPUs")


# ------------------------------------------------------------------ warnings
def test_threads_above_the_usable_cpus_warn_in_one_line(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    (line,) = kernels.thread_warnings(8, sample_s=0)
    assert "--threads 8" in line and "the 2 CPUs" in line and "\n" not in line
    clean_env.setenv("SPARSE_MLP_THREADS", "5")
    (line,) = kernels.thread_warnings(None, sample_s=0)
    assert "$SPARSE_MLP_THREADS 5" in line and "the 2 CPUs" in line
    assert kernels.thread_warnings(2, sample_s=0) == []


def test_threads_above_the_free_cpus_warn(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    clean_env.setattr(kernels, "busy_cpus", lambda sample_s: 2.9)
    (line,) = kernels.thread_warnings(4)
    assert "about 1.1 of the 4 usable CPUs are free" in line and "--threads 1" in line
    clean_env.setattr(kernels, "busy_cpus", lambda sample_s: 0.2)
    assert kernels.thread_warnings(4) == []
    assert kernels.thread_warnings(1) == []  # one thread never waits for another


def test_the_cli_prints_the_warning(clean_env, tmp_path, capsys):
    import run_experiment
    from sparse_mlp import experiment
    from sparse_mlp.errors import ConfigError

    def no_training(cfg, **kw):  # the warning comes first; the training is not the point
        raise ConfigError("stopped by the test")

    clean_env.setattr(experiment, "run", no_training)
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0})
    code = run_experiment.main(["--dataset", "synthetic", "--hidden", "8", "--epochs", "1",
                                "--threads", "2", "--quiet", "--out", str(tmp_path / "r")])
    assert code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("warning:")]
    assert "--threads 2 is more than the 1 CPU this process may use" in line


@pytest.mark.skipif(len(_cpus()) < 2 or not os.path.exists("/proc/stat"),
                    reason="needs two CPUs and /proc/stat")
def test_busy_cpus_sees_a_busy_process():
    cpu = _cpus()[-1]
    with BusyProcess(cpu):
        busy = kernels.busy_cpus({cpu}, sample_s=0.2)
    assert busy is not None and busy > 0.5


# --------------------------------------------- small calls run on one thread


@pytest.mark.parametrize("B", [1, 32, 130])
def test_split_calls_are_bit_identical_to_one_thread(every_call_split, B):
    """With every call split (min_parallel_work 0), 2 and 3 threads give the
    bits of 1 thread; the one-thread rule therefore changes no result."""
    base = every_kernel(1, B)
    for threads in (2, 3):
        for a, b in zip(base, every_kernel(threads, B)):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("activation", ["allrelu", "relu", "srelu"])
def test_model_steps_are_bit_identical_for_1_and_2_threads(every_call_split, monkeypatch,
                                                           activation):
    """Whole training steps (dropout on), on one thread and two, each with the
    fused backward update (model.SPLIT_UPDATE_MAX = 0: one pass over the
    transposed index updates the weights) and the split one (the gradient to
    a scratch array, then an update in the weights' own order, the default up
    to SPLIT_UPDATE_MAX weights, on one thread from SPLIT_UPDATE_MIN_1T; the
    first layer's fused gradient-and-update against its gradient pass and
    update pass; the split one's gradient written in the transposed index's
    order and read back through its inverse, model.TRANSPOSED_GRADIENT, or
    through the permutation; the hidden layers' Z stored by the forward pass
    or left to the backward pass where it keeps its bits,
    model.SKIP_Z_WITH_BITS; the output layer, whose rows are all full, under
    SPLIT_UPDATE_MIN_1T weights fused on two threads as on one or split,
    model.FUSE_FULL_ROWS; each hidden layer's delta written over its
    activations or over its Z, model.DELTA_OVER_INPUT): the weights, momenta
    and biases of all fourteen agree bit for bit."""
    import sparse_mlp.model as model_mod

    r = np.random.default_rng(3)
    X = r.standard_normal((40, 32)).astype(np.float32)
    y = r.integers(0, 3, 32).astype(np.int32)
    nets = []
    default_max = model_mod.SPLIT_UPDATE_MAX
    for threads in (1, 2):
        # SPLIT_UPDATE_MIN_1T 0: every layer splits (the test's layers are small); 200:
        # the hidden layers (389 and 440 weights) split, the output layer (150) not on
        # one thread, nor on two with FUSE_FULL_ROWS
        for split_max, t_order, skip_z, fuse_full, min_1t, over_input in (
                (0, True, True, True, 0, True), (default_max, False, True, True, 0, True),
                (default_max, True, True, True, 0, True),
                (default_max, True, False, True, 0, True),
                (default_max, True, True, True, 200, True),
                (default_max, True, True, False, 200, True),
                (default_max, True, True, True, 200, False)):
            monkeypatch.setattr(model_mod, "SPLIT_UPDATE_MIN_1T", min_1t)
            monkeypatch.setattr(model_mod, "SPLIT_UPDATE_MAX", split_max)
            monkeypatch.setattr(model_mod, "TRANSPOSED_GRADIENT", t_order)
            monkeypatch.setattr(model_mod, "SKIP_Z_WITH_BITS", skip_z)
            monkeypatch.setattr(model_mod, "FUSE_FULL_ROWS", fuse_full)
            monkeypatch.setattr(model_mod, "DELTA_OVER_INPUT", over_input)
            # (on two threads only blocks of at least this many bytes: all of them here)
            monkeypatch.setattr(model_mod, "DELTA_OVER_INPUT_MIN_BYTES", 0)
            m = SparseMLP([40, 60, 50, 3], 4.0, activation,
                          0.3 if activation == "allrelu" else None, "he_uniform", dropout=0.3,
                          rng=np.random.default_rng(11), n_threads=threads)
            for step in range(4):
                m.train_step(X, y, 0.05, 0.9, 2e-4, m.dropout_keys(5, step))
            # the layers but the first read their gradient through the inverse
            # (and only those of a split update: the fused pass updates in place)
            split_t = t_order and split_max > 0
            out_split = split_t and (min_1t <= 150 or (threads > 1 and not fuse_full))
            assert m.layers[-1].nnz == 50 * 3 and min(m.nnz_per_layer()[:-1]) >= 200
            assert [lay._t_inverse is not None for lay in m.layers] == [False, split_t,
                                                                         out_split]
            nets.append(m)
    for other in nets[1:]:
        for a, b in zip(nets[0].layers, other.layers):
            for name in ("data", "velocity", "bias", "bias_velocity"):
                assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("threads, min_bytes, over", [(1, None, True), (2, 0, True),
                                                      (2, None, False)])
def test_hidden_deltas_go_over_the_activations_and_z_stays_untouched(
        every_call_split, monkeypatch, threads, min_bytes, over):
    """In 'fast' activation memory, where the forward pass keeps its bits, a
    training step on one thread never writes a hidden layer's Z buffer: the
    forward pass leaves it (SKIP_Z_WITH_BITS) and the backward pass writes
    each hidden layer's delta over its activations A (DELTA_OVER_INPUT), the
    rows it has just read, instead of into a buffer the step has not touched.
    On several threads only where A's block is at least
    DELTA_OVER_INPUT_MIN_BYTES (these blocks are smaller: into Z, unless the
    bound is 0)."""
    import sparse_mlp.model as model_mod

    if spmm.simd_level() != "avx512":
        pytest.skip("the forward pass keeps its bits on the AVX-512 path only")
    if min_bytes is not None:
        monkeypatch.setattr(model_mod, "DELTA_OVER_INPUT_MIN_BYTES", min_bytes)
    r = np.random.default_rng(4)
    X = r.standard_normal((40, 32)).astype(np.float32)
    y = r.integers(0, 3, 32).astype(np.int32)
    m = SparseMLP([40, 60, 50, 3], 4.0, "allrelu", 0.3, "he_uniform", dropout=0.3,
                  rng=np.random.default_rng(11), n_threads=threads)
    m.train_step(X, y, 0.05, 0.9, 2e-4, m.dropout_keys(5, 0))
    bufs = m._train_bufs
    for Z in bufs["Z"][:-1]:
        Z.fill(np.nan)
    A_before = [a.copy() for a in bufs["A"]]
    m.train_step(X, y, 0.05, 0.9, 2e-4, m.dropout_keys(5, 1))
    assert all(bufs["bits_ok"])
    for h, (Z, A) in enumerate(zip(bufs["Z"][:-1], bufs["A"])):
        if over:  # Z untouched; A holds the delta (finite, not the activations)
            assert np.isnan(Z).all(), h
            assert np.isfinite(A).all() and not np.array_equal(A, A_before[h]), h
        else:  # the deltas in Z
            assert np.isfinite(Z).all(), h


@pytest.mark.parametrize("n_in, n_out, B", [(120, 90, 40), (300, 1000, 16)])
def test_bias_sums_are_read_by_the_thread_that_stored_them(every_call_split, n_in, n_out, B):
    """The bias gradients and updates of weight_grad, backward_update and
    weight_update on two threads equal one thread's call after call, with the
    delta alternating between two arrays (a bias sum read before another
    thread stored it would be the previous call's, of the other array).  The
    sums' blocks (64 rows) and the row loops' shares (half the rows each)
    differ, and the loops end without a barrier: each thread must use the
    sums it stored itself.  With the first weight_grad of owned rows, which
    read its sums in its row loop, 2,820 calls of 3,000 were wrong
    (results/bench_issue22/experiments_dec06e/bias_race.txt)."""
    base, Ds, paths = bias_paths(n_in, n_out, B)
    for name, kernel in paths.items():
        one, two = copy.deepcopy(base), copy.deepcopy(base)
        for i in range(150):
            D = Ds[i % 2]
            assert np.array_equal(kernel(one, D, 1), kernel(two, D, 2)), (name, i)


def test_one_thread_calls_run_the_serial_build_with_the_same_bits(monkeypatch):
    """kernels.spmm_for hands a call on one thread (or one too small to split)
    to the build of the same source without OpenMP, which skips libgomp's
    futex calls; each kernel gives the bits of the OpenMP build on one thread."""
    import sparse_mlp.layers as layers_mod

    assert kernels.spmm_for(1) is kernels.spmm_serial
    assert kernels.activation_for(1) is kernels.activation_serial
    assert kernels.activation_for(2) is kernels.activation
    assert kernels.spmm_for(2, kernels.min_parallel_work() - 1) is kernels.spmm_serial
    assert kernels.spmm_for(2, kernels.min_parallel_work()) is spmm
    assert kernels.spmm_for(2) is spmm  # (no work given: the kernel's own rule decides)
    assert not kernels.spmm_serial.openmp_enabled()
    assert kernels.activation_serial is not kernels.activation
    for B in (1, 32, 130):
        serial = every_kernel(1, B)
        monkeypatch.setattr(layers_mod, "spmm_for", lambda n_threads, work=0: spmm)
        omp = every_kernel(1, B)
        monkeypatch.setattr(layers_mod, "spmm_for", kernels.spmm_for)
        for a, b in zip(serial, omp):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("name, value", [("row_specialisation", False), ("dense_rows", False),
                                         ("prefetch_distance", 3),
                                         ("row_prefetch", 12345), ("stream_stores", 54321),
                                         ("min_parallel_work", 777)])
def test_the_serial_build_follows_every_setting(name, value):
    """spmm's setters set the serial build too, so that a one-thread call runs
    the code path a test or a user chose (the SIMD level: conftest's fixture)."""
    old = getattr(spmm, name)()
    try:
        getattr(spmm, name)(value)
        assert getattr(kernels.spmm_serial, name)() == value
    finally:
        getattr(spmm, name)(old)
    assert getattr(kernels.spmm_serial, name)() == old


def test_the_serial_build_follows_the_simd_level():
    try:
        for level in ("scalar", spmm.cpu_simd_level()):
            assert spmm.set_simd_level(level) == kernels.spmm_serial.simd_level() == level
    finally:
        spmm.set_simd_level("best")


def test_min_parallel_work_is_set_in_every_module():
    old = kernels.min_parallel_work()
    try:
        assert kernels.min_parallel_work(12345) == 12345
        assert spmm.min_parallel_work() == topology.min_parallel_work() == 12345
        with pytest.raises(ValueError, match=">= 0"):
            spmm.min_parallel_work(-1)
    finally:
        kernels.min_parallel_work(old)
    assert kernels.build_info()["min_parallel_work"] == old


def test_min_parallel_work_from_the_environment(monkeypatch):
    old = kernels.min_parallel_work()
    try:
        monkeypatch.setenv("SPARSE_MLP_MIN_PARALLEL_WORK", "4096")
        kernels._min_work_from_environment()
        assert topology.min_parallel_work() == 4096
        monkeypatch.setenv("SPARSE_MLP_MIN_PARALLEL_WORK", "lots")
        with pytest.raises(ValueError, match="integer >= 0"):
            kernels._min_work_from_environment()
    finally:
        kernels.min_parallel_work(old)


# ---------------------------------------------------------- the bounded spin
_SPIN_PROBE = textwrap.dedent("""
    import os, time
    import numpy as np
    from sparse_mlp import kernels
    kernels.min_parallel_work(0)
    indptr = np.arange(0, 201 * 8, 8, dtype=np.int64)  # 200 rows of 8 weights
    indices = np.tile(np.arange(0, 200, 25, dtype=np.int32), 200)
    data = np.ones(indices.size, np.float32)
    bias = np.zeros(200, np.float32)
    X = np.ones((200, 16), np.float32)
    Z = np.empty_like(X)
    cpu = []
    for _ in range(5):  # a parallel region, then idle: the worker spins, then sleeps
        kernels.spmm.forward(indptr, indices, data, bias, X, Z, n_threads=2)
        c = time.process_time()
        time.sleep(0.04)
        cpu.append(time.process_time() - c)
    print(kernels.WAIT_POLICY, "GOMP_SPINCOUNT" in os.environ, sorted(cpu)[2])
""")


def _spin_probe(**env: str) -> tuple[str, bool, float]:
    """(wait policy, GOMP_SPINCOUNT still set, median CPU seconds burnt in
    0.04 s of sleep after a parallel region)."""
    e = {k: v for k, v in os.environ.items()
         if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    # BLAS pools spin on their own after start-up: one thread, so only ours is measured
    e.update(env, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _SPIN_PROBE], env=e, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    return out[0], out[1] == "True", float(out[2])


@pytest.mark.skipif(not spmm.openmp_enabled() or not _libgomp() or len(_cpus()) < 2,
                    reason="needs an OpenMP build on libgomp and two CPUs")
def test_the_bounded_spin_reaches_libgomp():
    """CPU time burnt while the main thread sleeps after a parallel region is
    the worker's spinning: bounded by default (set before libgomp loads, and
    not left in the environment), the user's GOMP_SPINCOUNT kept as given."""
    policy, leaked, cpu_default = _spin_probe()
    assert policy == "bounded" and not leaked
    policy, leaked, cpu_long = _spin_probe(GOMP_SPINCOUNT="20000000")
    assert policy == "user" and leaked
    assert cpu_long > 0.005  # the measurement sees spinning ...
    assert cpu_default < 0.2 * cpu_long  # ... and the default spins far less


# -------------------------------------------------- fault: oversubscription
@pytest.mark.skipif(len(_cpus()) < 2, reason="needs two CPUs")
def test_a_busy_process_does_not_stall_two_threads():
    """Fault test, not a benchmark.  Madelon's network (500-400-100-400-2,
    eps 10, batch 32: one epoch is ~63 steps) with one busy process sharing
    a core: 2 threads once took 700x the time of 1 (threads spinning at
    barriers while their core was taken).  They must now stay within 3x of
    1 thread (the bound only has to catch a stall; speed is measured in
    bench/bench_oversubscription.py)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 32), dtype=np.float32)
    y = rng.integers(0, 2, 32).astype(np.int32)
    models = {t: SparseMLP([500, 400, 100, 400, 2], 10, "allrelu", 0.5, "normal",
                           rng=np.random.default_rng(1), n_threads=t) for t in (1, 2)}
    keys = models[1].dropout_keys(0, 0)

    def epoch(model: SparseMLP) -> float:
        t0 = time.perf_counter()
        for _ in range(63):
            model.train_step(X, y, 0.01, 0.9, 2e-4, keys)
        return time.perf_counter() - t0

    best = {1: np.inf, 2: np.inf}
    with BusyProcess(_cpus()[-1]):
        for _ in range(3):  # best of 3, interleaved: other load on the machine is noise
            for t, model in models.items():
                best[t] = min(best[t], epoch(model))
    assert best[2] <= 3 * best[1] + 0.005, (
        f"2 threads took {best[2] * 1e3:.1f} ms an epoch, 1 thread {best[1] * 1e3:.1f} ms, "
        f"next to one busy process")
    for a, b in zip(models[1].layers, models[2].layers):
        assert np.array_equal(a.data, b.data)


def test_backward_passes_count_their_input_rows_as_work(monkeypatch):
    """The backward passes count the rows of G they write (and of X they
    read) as work besides their multiply-adds (rowkern.h SMLP_G_ROW_WORK): a
    narrow output layer, 1000 x 2 at batch 128 (256 k multiply-adds, below
    min_parallel_work), runs on the threads asked for, in the OpenMP build;
    a small one, 100 x 2, still on one thread, in the serial build."""
    r = np.random.default_rng(4)
    B = 128
    for n_in, parallel in ((1000, True), (100, False)):
        layer = random_layer(r, n_in, 2, 1.0)
        assert layer.nnz * B < kernels.min_parallel_work()
        X = r.standard_normal((n_in, B)).astype(np.float32)
        D = r.standard_normal((2, B)).astype(np.float32)
        for name in ("backward_update", "backward_input"):
            seen: list = []
            for mod in (spmm, kernels.spmm_serial):
                real = getattr(mod, name)

                def spy(*a, _r=real, _m=mod, _seen=seen, **k):
                    _seen.append(_m)
                    return _r(*a, **k)

                monkeypatch.setattr(mod, name, spy)
            G = np.empty_like(X)
            if name == "backward_update":
                layer.backward_update(X, D, G, 0.01, 0.9, 0.0, n_threads=2)
            else:
                layer.backward_input(D, G, n_threads=2)
            assert seen == [spmm if parallel else kernels.spmm_serial], (n_in, name)
            monkeypatch.undo()


def test_in_order_updates_count_each_weight_as_work(monkeypatch):
    """An update in the weights' own order (the first layer's, no index)
    counts each weight as spmm.APPLY_PLAIN_WORK multiply-adds: 40,000 weights
    run on the two threads asked for (in the OpenMP build, a team of two in
    the timeline), 20,000 on one (the serial build); both updates equal to
    the serial build's bit for bit."""
    assert 20_000 * spmm.APPLY_PLAIN_WORK < kernels.min_parallel_work() \
        <= 40_000 * spmm.APPLY_PLAIN_WORK
    r = np.random.default_rng(5)
    for n, team in ((40_000, 2), (20_000, 1)):
        layer = random_layer(r, n // 100, 100, 1.0)
        g = r.standard_normal(n).astype(np.float32)
        bg = r.standard_normal(100).astype(np.float32)
        w_ref, v_ref = layer.data.copy(), layer.velocity.copy()
        kernels.spmm_serial.apply_update(w_ref, v_ref, g, 0.05, 0.9, 1e-3, False)
        seen: list = []
        for mod in (spmm, kernels.spmm_serial):
            real = mod.apply_update

            def spy(w, *a, _r=real, _m=mod, _w=layer.data, _seen=seen, **k):
                if w is _w:
                    _seen.append(_m)
                return _r(w, *a, **k)

            monkeypatch.setattr(mod, "apply_update", spy)
        spmm.timeline_start(8, 2)
        try:
            layer.apply_gradient(g, bg, 0.05, 0.9, 1e-3, n_threads=2)
        finally:
            rec = spmm.timeline_take()
        monkeypatch.undo()
        assert seen == [spmm if team == 2 else kernels.spmm_serial], n
        if team == 2:
            assert list(rec["threads"]) == [2] and list(rec["n_in"]) == [n]
        assert np.array_equal(layer.data, w_ref) and np.array_equal(layer.velocity, v_ref)


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
def test_the_loss_takes_the_model_threads_from_loss_threads_min(monkeypatch, output):
    """From min_parallel_work / model.LOSS_WORK logits (n_L x B: 1024) the loss
    kernel runs on the model's threads, in the OpenMP build; below, on one
    thread in the serial build.  Training steps and the evaluation give the same losses, counts and
    weights bit for bit either way."""
    import sparse_mlp.model as model_mod

    fn = {"softmax": "softmax_xent", "sigmoid": "sigmoid_mse", "linear": "linear_mse"}[output]
    r = np.random.default_rng(8)
    B, n_out = 128, 10
    work = kernels.min_parallel_work()
    assert n_out * B * model_mod.LOSS_WORK >= work > 2 * B * model_mod.LOSS_WORK  # (Higgs: one)
    X = r.standard_normal((20, B)).astype(np.float32)
    y = (r.standard_normal((B, n_out)).astype(np.float32) if output == "linear"
         else r.integers(0, n_out, B).astype(np.int32))
    Xs = r.standard_normal((300, 20)).astype(np.float32)
    ys = (r.standard_normal((300, n_out)).astype(np.float32) if output == "linear"
          else r.integers(0, n_out, 300).astype(np.int32))
    runs = []
    for per_logit in (model_mod.LOSS_WORK, 0):
        monkeypatch.setattr(model_mod, "LOSS_WORK", per_logit)
        seen: list = []
        for mod in (kernels.activation, kernels.activation_serial):
            real = getattr(mod, fn)

            def spy(*a, _r=real, _m=mod, _seen=seen, **k):
                _seen.append((_m, k.get("n_threads")))
                return _r(*a, **k)

            monkeypatch.setattr(mod, fn, spy)
        m = SparseMLP([20, 30, n_out], 4.0, "relu", output=output, dropout=0.2,
                      rng=np.random.default_rng(2), n_threads=2)
        steps = [m.train_step(X, y, 0.05, 0.9, 1e-4, m.dropout_keys(1, s)) for s in range(3)]
        ev = m.evaluate(Xs, ys, batch_size=128)
        want = ((kernels.activation, 2) if per_logit else (kernels.activation_serial, 1))
        assert seen[:3] == [want] * 3, (output, per_logit)
        runs.append((steps, ev, [lay.data.copy() for lay in m.layers]))
        monkeypatch.undo()
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    for a, b in zip(runs[0][2], runs[1][2]):
        assert np.array_equal(a, b)
