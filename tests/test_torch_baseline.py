"""Tests of the PyTorch benchmark baseline (bench/torch_baseline.py); skipped without torch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "torch_baseline.py"


def _load():
    spec = importlib.util.spec_from_file_location("torch_baseline", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


tb = _load()

SIZES = [20, 30, 10, 3]
EPS = 5.0
N = 256
CASES = [("mask", "custom"), ("csr", "custom"), ("csr", "native"), ("dense", "custom")]


def test_er_topology_density_and_uniqueness():
    sizes = [300, 400, 200, 10]
    topo = tb.make_er_topology(sizes, 5.0, seed=3)
    assert len(topo) == len(sizes) - 1
    layers = zip(sizes[:-1], sizes[1:], strict=True)
    for (n_in, n_out), (rows, cols) in zip(layers, topo, strict=True):
        assert rows.dtype == np.int64 and cols.dtype == np.int64
        assert rows.shape == cols.shape
        assert rows.min() >= 0 and rows.max() < n_in
        assert cols.min() >= 0 and cols.max() < n_out
        pos = rows * n_out + cols
        assert np.unique(pos).size == pos.size, "duplicate positions"
        assert np.all(np.diff(pos) > 0), "not sorted row-major"
        p = tb.er_probability(n_in, n_out, 5.0)
        n_total = n_in * n_out
        sd = np.sqrt(n_total * p * (1 - p))
        assert abs(pos.size - n_total * p) <= 5 * sd + 1, (pos.size, n_total * p)


def test_er_topology_small_dense_and_complement_paths():
    # 20x30 (p~0.42), 30x10 (p~0.67, complement path), 10x3 (p capped at 1)
    topo = tb.make_er_topology(SIZES, EPS, seed=0)
    (r0, c0), (r1, c1), (r2, c2) = topo
    for (_n_in, n_out), (r, c) in zip(zip(SIZES[:-1], SIZES[1:], strict=True), topo, strict=True):
        pos = r * n_out + c
        assert np.unique(pos).size == pos.size
    assert r2.size == 10 * 3
    assert 0 < r1.size < 300
    # deterministic for a seed, different for another
    again = tb.make_er_topology(SIZES, EPS, seed=0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(topo, again, strict=True))
    other = tb.make_er_topology(SIZES, EPS, seed=1)
    assert not np.array_equal(topo[0][0], other[0][0]) or \
        not np.array_equal(topo[0][1], other[0][1])


def test_er_topology_is_uniform_over_positions():
    # each of the 100 positions of a 10x10 layer should be picked ~p of the time
    counts = np.zeros(100)
    trials = 400
    for s in range(trials):
        r, c = tb.make_er_topology([10, 10], 1.0, seed=s)[0]   # p = 0.2
        counts[r * 10 + c] += 1
    freq = counts / trials
    assert abs(freq.mean() - 0.2) < 0.02
    assert freq.min() > 0.08 and freq.max() < 0.34


@pytest.mark.parametrize("mode,impl", CASES)
def test_one_epoch_each_mode(mode, impl):
    res = tb.time_torch_epochs(SIZES, EPS, N, batch_size=64, threads=1, mode=mode,
                               epochs=1, seed=0, warmup_batches=2, csr_impl=impl)
    assert res["mode"] == mode and res["threads"] == 1
    assert res["n_batches"] == N // 64
    assert len(res["sec_per_epoch"]) == 1 and all(s > 0 for s in res["sec_per_epoch"])
    assert np.isfinite(res["last_batch_loss"])
    if mode == "dense":
        assert res["nnz"] == sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:], strict=True))
    else:
        topo = tb.make_er_topology(SIZES, EPS, 0)
        assert res["nnz"] == sum(r.size for r, _ in topo)


def test_tail_is_dropped():
    res = tb.time_torch_epochs(SIZES, EPS, 200, batch_size=64, mode="csr", epochs=2,
                               warmup_batches=0)
    assert res["n_batches"] == 3 and len(res["sec_per_epoch"]) == 2


@pytest.mark.parametrize("mode,impl", [("mask", "custom"), ("csr", "custom"),
                                       ("csr", "native")])
def test_weights_stay_zero_outside_topology(mode, impl):
    res = tb.time_torch_epochs(SIZES, EPS, N, batch_size=32, mode=mode, epochs=2, seed=4,
                               warmup_batches=1, csr_impl=impl, return_weights=True)
    for w, (r, c) in zip(res["weights"], res["topology"], strict=True):
        outside = np.ones(w.shape, dtype=bool)
        outside[r, c] = False
        assert np.all(w[outside] == 0.0)
        assert np.count_nonzero(w[~outside]) > 0.9 * r.size   # and they did train


def test_modes_compute_the_same_training():
    # without dropout, mask / csr-custom / csr-native follow the same trajectory
    kw = dict(batch_size=32, epochs=2, seed=7, dropout=0.0, warmup_batches=3,
              return_weights=True)
    ref = tb.time_torch_epochs(SIZES, EPS, N, mode="mask", **kw)
    for impl in ("custom", "native"):
        res = tb.time_torch_epochs(SIZES, EPS, N, mode="csr", csr_impl=impl, **kw)
        for a, b in zip(ref["weights"], res["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        assert res["last_batch_loss"] == pytest.approx(ref["last_batch_loss"], rel=1e-4)
    # with epsilon so large every layer is full, dense == mask
    big = 1e6
    dm = tb.time_torch_epochs(SIZES, big, N, mode="mask", **kw)
    dd = tb.time_torch_epochs(SIZES, big, N, mode="dense", **kw)
    for a, b in zip(dm["weights"], dd["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_manual_update_matches_formula():
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(7).astype(np.float32)
    v0 = rng.standard_normal(7).astype(np.float32)
    g = rng.standard_normal(7).astype(np.float32)
    b0 = rng.standard_normal(3).astype(np.float32)
    bv0 = rng.standard_normal(3).astype(np.float32)
    bg = rng.standard_normal(3).astype(np.float32)
    lr, mu, wd = 0.05, 0.9, 0.01
    w, v = torch.tensor(w0), torch.tensor(v0)
    b, bv = torch.tensor(b0), torch.tensor(bv0)
    tb.momentum_sgd_step_([w, b], [torch.tensor(g), torch.tensor(bg)], [v, bv], lr, mu, wd)
    v_ref = mu * v0 - lr * g
    w_ref = w0 + v_ref - wd * w0          # weight decay not scaled by lr
    np.testing.assert_allclose(v.numpy(), v_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(bv.numpy(), mu * bv0 - lr * bg, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.numpy(), b0 + (mu * bv0 - lr * bg) - wd * b0,
                               rtol=1e-6, atol=1e-7)
    # (torch.optim.SGD would give w - lr*(g + wd*w) for a zero velocity: a different number)
    assert not np.allclose(w_ref, w0 - lr * (g + wd * w0) + mu * v0, rtol=1e-6, atol=1e-7)


def test_one_training_step_matches_numpy():
    # one step, no dropout, no warm-up: compare the first layer's update with numpy
    sizes = [6, 5, 3]
    kw = dict(batch_size=8, epochs=1, seed=2, dropout=0.0, warmup_batches=1,
              weight_decay=0.01, lr=0.1)
    n = 8   # one batch -> the epoch's batch and the warm-up batch are the same data
    for mode in ("mask", "csr"):
        res = tb.time_torch_epochs(sizes, 100.0, n, mode=mode, return_weights=True, **kw)
        ref = tb.time_torch_epochs(sizes, 100.0, n, mode="dense", return_weights=True, **kw)
        for a, b in zip(res["weights"], ref["weights"], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # numpy reference of the dense run: rebuild data and init exactly as the module does
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(n, 6, generator=gen).numpy().astype(np.float64)
    Y = torch.randint(0, 3, (n,), generator=gen).numpy()
    Ws = [tb._init_values(torch, a * b, a, b, "xavier", gen).reshape(a, b).numpy()
          .astype(np.float64) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [np.zeros(b) for b in sizes[1:]]
    vW = [np.zeros_like(W) for W in Ws]
    vb = [np.zeros_like(b) for b in bs]
    for _ in range(2):   # warm-up step + the one timed step (batch order irrelevant: 1 batch)
        h1 = np.maximum(X @ Ws[0] + bs[0], 0)
        z = h1 @ Ws[1] + bs[1]
        pz = np.exp(z - z.max(1, keepdims=True))
        pz /= pz.sum(1, keepdims=True)
        d2 = (pz - np.eye(3)[Y]) / n
        gW1, gb1 = h1.T @ d2, d2.sum(0)
        d1 = (d2 @ Ws[1].T) * (h1 > 0)
        gW0, gb0 = X.T @ d1, d1.sum(0)
        for i, (gw, gb) in enumerate([(gW0, gb0), (gW1, gb1)]):
            vW[i] = 0.9 * vW[i] - 0.1 * gw
            Ws[i] = Ws[i] + vW[i] - 0.01 * Ws[i]
            vb[i] = 0.9 * vb[i] - 0.1 * gb
            bs[i] = bs[i] + vb[i] - 0.01 * bs[i]
    for a, b in zip(ref["weights"], Ws, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError):
        tb.time_torch_epochs(SIZES, EPS, N, mode="coo")
    with pytest.raises(ValueError):
        tb.time_torch_epochs(SIZES, EPS, 10, batch_size=64)
    with pytest.raises(ValueError):
        tb.make_er_topology([5], 1.0, 0)


def test_cli_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = tb.main(["--sizes", "20,30,10,3", "--epsilon", "5", "--n-samples", "256",
                  "--batch-size", "64", "--mode", "csr", "--epochs", "1",
                  "--warmup-batches", "1", "--json", str(out)])
    assert rc == 0
    assert "s/epoch" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["mode"] == "csr" and res["sec_per_epoch"][0] > 0


def test_module_imports_and_cli_fails_cleanly_without_torch(tmp_path):
    # a fake 'torch' that cannot be imported: the module must still import, the CLI exit 2
    (tmp_path / "torch.py").write_text("raise ImportError('no torch here')\n")
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('tb', {str(SCRIPT)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "m.make_er_topology([4, 5, 2], 1.0, 0)\n"
            "sys.exit(m.main(['--sizes', '4,5,2', '--epsilon', '1', '--n-samples', '10']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": str(tmp_path), "PATH": ""},
                          timeout=60)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "PyTorch is a bench-only dependency: pip install torch==2.13.0" in proc.stderr
