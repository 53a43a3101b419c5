"""WASAP-SGD / WASSP-SGD as the authors' code ran them (``--parallel-semantics
code``, the default; README "Parallel training"), against the text's reading
(``--parallel-semantics text``), mostly in-process with the fake transport of
tests/test_parallel_direct.py, plus one small run under ``mpiexec -n 3``:

* phase 2: a worker takes the PS's model every round(0.3 x epochs) of its own
  steps, and the model it takes is the PS's at the switch;
* phase 1 (WASAP and WASSP): no weight decay (``--phase1-decay paper``: the
  run's);
* Importance Pruning under --parallel: every 20 epochs at the 10th percentile;
* the final average: union (absent = 0), then a per-sign threshold back to the
  PS's nnz;
* WASSP: lr x (1 + (K-1) e / 5) in PS epoch e, momentum corrected when it
  changes.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from _processes import needs_mpiexec
from test_parallel import BASE, _mpirun
from test_parallel_direct import SIZES, FakeTransport, _cfg, _grad_message, _model, _server

from sparse_mlp.checkpoint import LAYER_ARRAYS
from sparse_mlp.config import TrainConfig
from sparse_mlp.epoch import ip_due
from sparse_mlp.errors import ConfigError
from sparse_mlp.layers import SparseLayer
from sparse_mlp.model import SparseMLP
from sparse_mlp.parallel import codec, ops
from sparse_mlp.parallel.codec import Header
from sparse_mlp.parallel.state import (
    code_sync_every,
    copy_model,
    evolution_config,
    momentum_correction,
    resolve_semantics,
    warmup_factor_epoch,
)
from sparse_mlp.parallel.worker import Worker
from sparse_mlp.training import StopRequest


def _same(a: SparseMLP, b: SparseMLP) -> bool:
    return all(np.array_equal(getattr(la, n), getattr(lb, n))
               for la, lb in zip(a.layers, b.layers) for n in LAYER_ARRAYS)


# ---------------------------------------------------------------------- settings
def test_the_semantics_decide_the_defaults_and_explicit_flags_win():
    code = resolve_semantics(TrainConfig(parallel="wasap", epochs=500))
    assert (code.phase2_sync_every, code.phase1_decay, code.parallel_ip_every,
            code.parallel_ip_percentile) == (150, "none", 20, 10.0)
    text = resolve_semantics(TrainConfig(parallel="wasap", epochs=500,
                                         parallel_semantics="text", ip_every=7))
    assert (text.phase2_sync_every, text.phase1_decay, text.parallel_ip_every,
            text.parallel_ip_percentile) == (0, "paper", 7, 20.0)
    mixed = resolve_semantics(TrainConfig(parallel="wassp", epochs=500, phase2_sync_every=0,
                                          parallel_ip_percentile=20.0))
    assert (mixed.phase2_sync_every, mixed.parallel_ip_percentile) == (0, 20.0)
    assert resolve_semantics(code) == code  # idempotent (resume re-resolves)
    assert [code_sync_every(e) for e in (1, 4, 10, 500)] == [1, 1, 3, 150]
    with pytest.raises(ConfigError, match="--parallel-semantics must be"):
        TrainConfig(parallel_semantics="paper").validate()
    with pytest.raises(ConfigError, match="--phase2-sync-every must be 0"):
        TrainConfig(phase2_sync_every=-1).validate()


def test_new_flags_are_refused_where_they_would_be_ignored():
    import run_experiment

    parse = run_experiment.build_parser().parse_args
    for extra in (["--parallel-semantics", "text"], ["--phase2-sync-every", "3"],
                  ["--phase1-decay", "paper"]):  # sequential runs: no phase 1 / 2
        with pytest.raises(ConfigError, match="a sequential run does not use"):
            run_experiment.config_from_args(parse([*BASE, *extra]))
    ip = ["--parallel", "wasap", "--importance-pruning"]
    with pytest.raises(ConfigError, match="--parallel wasap does not use --ip-every 5"):
        run_experiment.config_from_args(parse([*BASE, *ip, "--ip-every", "5"]))
    with pytest.raises(ConfigError, match="need --importance-pruning"):
        run_experiment.config_from_args(parse([*BASE, "--parallel", "wasap",
                                               "--parallel-ip-every", "5"]))
    # the text's reading takes the sequential schedule; the code's, its own flags
    cfg = run_experiment.config_from_args(parse([*BASE, *ip, "--ip-every", "5",
                                                 "--parallel-semantics", "text"]))
    assert evolution_config(cfg).ip_every == 5
    cfg = run_experiment.config_from_args(parse([*BASE, *ip, "--parallel-ip-every", "4"]))
    assert evolution_config(cfg).ip_every == 4 and evolution_config(cfg).ip_percentile == 10


def test_importance_pruning_under_parallel_every_20_epochs_at_the_10th_percentile():
    cfg = TrainConfig(parallel="wasap", importance_pruning=True, ip_start=200)
    ecfg = evolution_config(cfg)
    assert (ecfg.ip_every, ecfg.ip_percentile) == (20, 10.0)
    assert [e for e in range(500) if ip_due(ecfg, e)] == list(range(220, 500, 20))
    seq = [e for e in range(500) if ip_due(cfg, e)]  # the sequential schedule is unchanged
    assert seq == list(range(210, 500, 10)) and cfg.ip_percentile == 20
    # the server and the workers prune with it
    ps, _ = _server(_cfg(importance_pruning=True), _model())
    assert (ps.ecfg.ip_every, ps.ecfg.ip_percentile) == (20, 10.0)
    ps, _ = _server(_cfg(importance_pruning=True, parallel_semantics="text"), _model())
    assert (ps.ecfg.ip_every, ps.ecfg.ip_percentile) == (10, 20.0)


# ---------------------------------------------------------------------- phase 1
@pytest.mark.parametrize("semantics,decay", [("code", None), ("text", None),
                                             ("code", "paper"), ("text", "none")])
def test_wasap_phase_1_weight_decay(semantics, decay):
    cfg = _cfg(parallel_semantics=semantics, phase1_decay=decay, weight_decay=1e-2)
    ps, t = _server(cfg, _model())
    want = (decay or ("none" if semantics == "code" else "paper")) == "paper"
    assert ps.phase1_decay == (cfg.decay if want else 0.0)
    model = ps.model
    nnz = model.nnz_per_layer()
    g = np.random.default_rng(8).standard_normal(ps.layout.n_values(nnz)).astype(np.float32)
    t.inbox.append((1, *_grad_message(ps.layout, model.n_layers, nnz, 0, g)))
    expected = copy.deepcopy(model)
    w, b, _ = ps.layout.split(g, nnz)
    for li, lay in enumerate(expected.layers):
        lay.apply_gradient(w[li], b[li], cfg.lr, cfg.momentum, 1e-2 if want else 0.0)
    ps._async_step()
    assert _same(model, expected)


def test_wassp_warmup_by_ps_epoch_with_momentum_correction():
    K, W = 5, 5
    # the authors': lr = base_lr * ((K - 1) * epoch / 5 + 1) while epoch <= 5
    for e in range(9):
        assert warmup_factor_epoch(e, W, K) == pytest.approx((K - 1) * min(e, W) / W + 1)
    assert warmup_factor_epoch(3, 0, K) == K and warmup_factor_epoch(3, W, 1) == 1
    # momentum x lr_new / lr_old at the first step of an epoch whose lr changed
    assert momentum_correction(2, 0, W, K) == pytest.approx(2.6 / 1.8)
    assert momentum_correction(2, 1, W, K) == 1 and momentum_correction(0, 0, W, K) == 1
    assert momentum_correction(6, 0, W, K) == 1  # after the warm-up: K, K

    # the server: K = 2 gradients averaged, the epoch's lr, the corrected momentum
    cfg = _cfg(parallel="wassp", weight_decay=1e-2)
    ps, t = _server(cfg, _model(), K=2)
    calls = []
    ps._apply = lambda buf, v, nnz, lr, decay, momentum=None: calls.append(
        (buf.copy(), lr, decay, momentum))
    nnz = ps.model.nnz_per_layer()
    rng = np.random.default_rng(4)
    for epoch, batch in ((0, 0), (0, 3), (1, 0), (1, 1), (3, 0)):
        ps.state.epoch, ps.state.batch = epoch, batch
        gs = [rng.standard_normal(ps.layout.n_values(nnz)).astype(np.float32) for _ in (1, 2)]
        for k, g in zip((1, 2), gs):
            ps.peers[k].expect.append((codec.GRAD, None))
            t.inbox.append((k, *_grad_message(ps.layout, ps.model.n_layers, nnz, 0, g)))
        ps._sync_step()
        buf, lr, decay, mu = calls[-1]
        f = 1 + epoch / 5
        assert np.array_equal(buf, (gs[0] + gs[1]) * np.float32(0.5))
        assert lr == pytest.approx(cfg.lr * f) and decay == 0.0
        prev = 1 + (epoch - 1) / 5
        assert mu == pytest.approx(cfg.momentum * (f / prev if batch == 0 and epoch else 1))
    # the text's reading: linear by step, no correction, the decay scaled with the lr
    ps, t = _server(_cfg(parallel="wassp", parallel_semantics="text", weight_decay=1e-2),
                    _model(), K=2)
    ps._apply = lambda buf, v, nnz, lr, decay, momentum=None: calls.append((lr, decay, momentum))
    ps.state.step = ps.steps_per_epoch * 5 // 2  # half-way through the warm-up
    for k in (1, 2):
        t.inbox.append((k, *_grad_message(ps.layout, ps.model.n_layers, nnz, 0, gs[0])))
    ps._sync_step()
    assert calls[-1] == (pytest.approx(0.015), pytest.approx(1.5e-2), 0.9)


# ---------------------------------------------------------------------- averaging
def test_the_final_average_thresholds_each_sign_back_to_the_ps_nnz(rng):
    def layer(entries):
        pos = np.array(sorted(j * 4 + i for (i, j) in entries), dtype=np.int64)
        vals = np.array([entries[(p % 4, p // 4)] for p in pos], dtype=np.float32)
        return SparseLayer.from_positions(4, 2, pos, vals)

    a = SparseMLP([4, 2], epsilon=1, activation="relu", n_threads=1,
                  layers=[layer({(0, 0): 4.0, (1, 0): -4.0, (2, 0): 1.0, (3, 1): -1.0})])
    b = SparseMLP([4, 2], epsilon=1, activation="relu", n_threads=1,
                  layers=[layer({(0, 0): 4.0, (3, 0): 0.6, (1, 1): -0.8, (2, 1): 3.0})])
    # union: +4 +0.5 +0.3 +1.5 (positives), -2 -0.5 -0.4 (negatives) -> 7 weights; to 4:
    # zeta = 3/7: 4 - floor(4 * 4/7) = 2 positives go (0.3, 0.5), 3 - floor(3 * 4/7) = 2
    # negatives (-0.4, -0.5); |w| alone would keep -0.5 or +0.5 instead of one of them
    avg = ops.average_models([a, b], targets=[4], prune="sign")
    assert sorted(avg.layers[0].data.tolist()) == [-2.0, 1.5, 4.0]
    assert sorted(ops.average_models([a, b], targets=[4]).layers[0].data.tolist()) == \
        [-2.0, 0.5, 1.5, 4.0]  # (the tie of |0.5| broken by position)
    # random layers: the kernel path equals its NumPy twin, never above the target
    for _ in range(20):
        n = int(rng.integers(1, 300))
        pos = np.sort(rng.choice(50 * 20, n, replace=False))
        lay = SparseLayer.from_positions(50, 20, pos, np.round(rng.standard_normal(n), 1)
                                         .astype(np.float32))
        target = int(rng.integers(0, n + 2))
        keep = ops.sign_prune_numpy(lay.data, target)
        data = lay.data.copy()
        ops.sign_prune_to(lay, target)
        assert np.array_equal(lay.data, data[keep]) and lay.nnz <= max(target, n * (target >= n))
    # the server: code semantics, the PS's (switch) nnz; text, the workers' mean
    ms = [SparseMLP(SIZES, epsilon=3, rng=np.random.default_rng(s), n_threads=1)
          for s in range(3)]
    ps_model = SparseMLP(SIZES, epsilon=2, rng=np.random.default_rng(9), n_threads=1)
    ps, _ = _server(_cfg(), _model())
    ps.switch_model = ps_model
    got = ps._average(ms)
    for li, lay in enumerate(got.layers):
        assert ps_model.layers[li].nnz - 2 <= lay.nnz <= ps_model.layers[li].nnz
    ps, _ = _server(_cfg(parallel_semantics="text"), _model())
    ps.switch_model = ps_model
    assert got.nnz_per_layer() != ps._average(ms).nnz_per_layer() == [
        round(np.mean([m.layers[li].nnz for m in ms])) for li in range(3)]


# ---------------------------------------------------------------------- phase 2
def _phase2_worker(sync_every: int, local_step: int = 0, n: int = 64, B: int = 8):
    cfg = _cfg(batch_size=B, phase2_sync_every=sync_every, epochs=4)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((n, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], n).astype(np.int32)
    t = FakeTransport()
    w = Worker(cfg, t, _model(), X, y, index=0, stop=StopRequest())
    w.shuffle = np.random.default_rng(5)
    w.evolution = np.random.default_rng(6)
    w.local_step, w.epoch = local_step, 3  # the last epoch: no evolution after it
    control = Header(w.model.n_layers)
    control[Header.KIND], control[Header.FLAGS] = codec.CONTROL, codec.F_LAST
    t.inbox.append((0, control.arr.copy(), []))
    return w, t


@pytest.mark.parametrize("sync_every,start,expected", [(4, 0, [4, 8]), (3, 0, [3, 6]),
                                                       (3, 5, [6, 9, 12]), (0, 0, [])])
def test_a_phase_2_worker_takes_the_ps_model_every_n_of_its_own_steps(sync_every, start,
                                                                       expected):
    w, t = _phase2_worker(sync_every, start)
    ps_model = copy_model(w.model)  # the model the switch gave it
    seen = []
    sync = w.sync
    w.sync = lambda: (seen.append(w.local_step), sync())
    if sync_every:  # after a sync the replica is the PS's model again, momenta included
        restore = w.sync

        def checked():
            restore()
            assert _same(w.model, ps_model)
        w.sync = checked
    assert w.phase2() == 0
    assert seen == expected  # counted on the worker's steps since its first (phase 1 too)
    report = t.sent[0][1]
    assert report[Header.KIND] == codec.REPORT and report[Header.STEP] == len(expected)
    # 8 steps; a sync after the last one leaves exactly the PS's model
    assert _same(w.model, ps_model) == (bool(expected) and expected[-1] == start + 8)


@needs_mpiexec
def test_a_code_semantics_run_syncs_and_records_its_settings(tmp_path):
    """WASAP, K = 2, 10 epochs: phase 2 (3 epochs of 21 local steps) syncs
    every round(0.3 x 10) = 3 steps: 21 times per worker; config.json and
    summary.json record the resolved settings."""
    out = tmp_path / "run"
    res = _mpirun(3, "cli", *BASE, "--epochs", "10", "--quiet", "--parallel", "wasap",
                  "--out", str(out), timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["parallel_semantics"], cfg["phase2_sync_every"], cfg["phase1_decay"],
            cfg["parallel_ip_every"], cfg["parallel_ip_percentile"]) == ("code", 3, "none", 20,
                                                                         10.0)
    par = json.loads((out / "summary.json").read_text())["parallel"]
    assert par["semantics"] == "code" and par["phase2_sync_every"] == 3
    assert par["phase2_syncs"] == 2 * 21
