"""The arithmetic of bench/scaling_model.py (issue 20) on hand-made inputs:
mean-value analysis against its limits, the saturation K, the WASSP step,
phase 2 and the Amdahl fit.  No measuring, no MPI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import scaling_model as sm  # noqa: E402


def _m(**kw) -> dict:
    """One shape's inputs: worker 1 ms per batch, server 0.1 ms per update,
    100 kB each way, no end-of-epoch work, 1280 samples (10 updates)."""
    base = dict(n_train=1280, batch=128, t_worker=1e-3, t_server=1e-4, t_apply=8e-5,
                t_reply=2e-5, t_add=0.0, bytes_grad=100_000, bytes_model=100_000,
                bytes_topology=0, bytes_weights=200_000, t_end_epoch=0.0, t_ip=0.0,
                ip_share=0.0, t_server_stale=1e-4, t_step=1e-3, t_set_local=0.0,
                t_send_weights=0.0, t_gather_one=0.0, t_avg_a=0.0, t_avg_b=0.0,
                seq_t1=1.0, seq_t2=0.6)
    return {**base, **kw}


def test_mva_one_customer_is_one_cycle_and_many_reach_the_bottleneck():
    Z, D = 1.0, [0.1, 0.05]
    assert sm.mva(1, Z, D) == pytest.approx(1 / 1.15)
    assert sm.mva(1000, Z, D) == pytest.approx(1 / 0.1, rel=1e-3)
    xs = [sm.mva(k, Z, D) for k in range(1, 60)]
    assert all(b >= a for a, b in zip(xs, xs[1:]))              # more workers never slower
    assert all(x <= min(k / 1.15, 10.0) + 1e-12 for k, x in zip(range(1, 60), xs))  # bounds


def test_saturation_k_is_the_knee_of_the_bounds():
    assert sm.saturation_k(1.0, [0.1, 0.05]) == pytest.approx(11.5)
    assert sm.saturation_k(0.9, [0.1]) == pytest.approx(10.0)


def test_wasap_epoch_infinite_bandwidth_is_updates_over_the_rate():
    m = _m()
    r = sm.wasap_epoch(m, 1, bw=float("inf"), lat=0.0)
    assert r["epoch_s"] == pytest.approx(10 * 1.1e-3)             # 10 updates, one cycle each
    assert r["k_sat"] == pytest.approx(11.0) and r["bound"] == "cpu"
    r = sm.wasap_epoch(m, 10_000, bw=float("inf"), lat=0.0)
    assert r["epoch_s"] == pytest.approx(10 * 1e-4, rel=1e-3)     # the server's rate


def test_wasap_slow_link_is_the_bottleneck():
    m = _m()
    bw = 1e9                                                       # 200 kB per update: 0.2 ms
    r = sm.wasap_epoch(m, 10_000, bw=bw, lat=0.0)
    assert r["bound"] == "link"
    assert r["updates_per_s"] == pytest.approx(1 / 2e-4, rel=1e-3)
    assert r["k_sat"] == pytest.approx((1e-3 + 1e-4 + 2e-4) / 2e-4)


def test_wasap_shared_cores_cap_the_rate():
    m = _m()
    r = sm.wasap_epoch(m, 8, bw=float("inf"), lat=0.0, cores=2)   # 9 ranks, 2 cores
    assert r["updates_per_s"] == pytest.approx(2 / 1.1e-3)
    r1 = sm.wasap_epoch(m, 1, bw=float("inf"), lat=0.0, cores=2)  # 2 ranks: no cap
    assert r1["updates_per_s"] == pytest.approx(1 / 1.1e-3)


def test_wasap_end_of_epoch_adds_set_and_k_stale_updates():
    m = _m(t_end_epoch=0.5, t_server_stale=3e-4, bytes_topology=1000)
    base = sm.wasap_epoch(_m(), 4, bw=1e6, lat=0.0)["epoch_s"]
    got = sm.wasap_epoch(m, 4, bw=1e6, lat=0.0)["epoch_s"]
    assert got - base == pytest.approx(0.5 + 4 * (2e-4 + 1e-3))


def test_wassp_step_and_saturation():
    m = _m(t_add=1e-5)
    bw, lat = 1e9, 1e-6
    r = sm.wassp_epoch(m, 2, bw=bw, lat=lat)
    per_k = 2e-4 + 1e-5 + 2e-5
    fixed = 1e-3 + 2e-6 + 8e-5
    assert r["step_s"] == pytest.approx(fixed + 2 * per_k)
    assert r["epoch_s"] == pytest.approx(5 * r["step_s"])          # 1280 // 256 steps
    assert r["k_sat"] == pytest.approx(fixed / per_k)
    # at K = k_sat, half of a step is the K-proportional part: efficiency 1/2
    k = r["k_sat"]
    assert (fixed + k * per_k) == pytest.approx(2 * fixed)


def test_phase2_overlaps_the_average_with_training():
    m = _m(n_train=128 * 40, t_avg_b=1.0)                          # a slow average: 1 s per model
    r = sm.phase2_epoch(m, 4, bw=float("inf"), lat=0.0)
    assert r["epoch_s"] == pytest.approx(4.0)                      # the average dominates
    m = _m(n_train=128 * 40)
    r = sm.phase2_epoch(m, 4, bw=2e5, lat=0.0)                     # 1 s per model through rank 0
    assert r["epoch_s"] == pytest.approx(10 * 1e-3 + 4 * 1.0)


def test_amdahl_fit_and_limits():
    assert sm.amdahl(1.0, 0.5, 8) == pytest.approx(1 / 8)         # perfect scaling
    assert sm.amdahl(1.0, 1.0, 8) == pytest.approx(1.0)           # none
    assert sm.amdahl(1.0, 1.3, 8) == pytest.approx(1.0)           # slower on 2: clipped
    assert sm.amdahl(1.0, 0.6, 4) == pytest.approx(0.2 + 0.8 / 4)


def test_curves_rows_cover_every_network_and_k():
    meas = {"memcpy_Bps": 4e9, "shapes": {"x": _m()}}
    rows = sm.curves(meas, ks=[1, 2, 63])
    assert len(rows) == 3 * len(sm.NETWORKS)
    r = next(r for r in rows if r["network"] == "node" and r["K"] == 1)
    assert r["seq_same_cores_s"] == pytest.approx(0.6)
    assert r["wasap_speedup"] == pytest.approx(0.6 / r["wasap_s"])
