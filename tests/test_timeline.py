"""The kernels' call timeline (rowkern.h "call timeline", spmm.timeline_start
and timeline_take): a diagnostic that records, per kernel call, its kind,
shape, team and time stamps, and per thread of the row loops when it
entered, began and finished its rows.  bench/bench_timeline.py reads it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import every_kernel, random_layer

from sparse_mlp import kernels
from sparse_mlp.kernels import spmm

ROOT = Path(__file__).resolve().parents[1]
KINDS = spmm.TIMELINE_KINDS


@pytest.fixture
def no_timeline():
    """Neither build recording before or after the test."""
    for mod in (spmm, kernels.spmm_serial):
        mod.timeline_take()
    yield
    for mod in (spmm, kernels.spmm_serial):
        mod.timeline_take()


# every_kernel's calls that the timeline records, in order (B = 40: the row loops of
# forward and backward_update take rows one at a time, and stamp)
RECORDED = ["forward", "backward_input", "weight_grad", "backward_update", "weight_update",
            "gather_columns"]


def test_nothing_is_recorded_unless_started(no_timeline):
    every_kernel(2, 40)
    assert spmm.timeline_take() is None
    assert kernels.spmm_serial.timeline_take() is None


def test_each_call_is_recorded_with_ordered_stamps(no_timeline, every_call_split):
    """Kind, shape and team of each call, in order; each stamping thread's
    stamps lie inside its call and in order (entered <= rows begun <= rows
    done); the calling thread (thread 0) stamps the row loops of forward,
    backward_update and weight_grad, and no other call has thread stamps."""
    spmm.timeline_start(100, threads=4)
    every_kernel(2, 40)
    rec = spmm.timeline_take()
    assert rec["lost"] == 0
    assert [KINDS[k] for k in rec["kind"]] == RECORDED
    assert list(rec["n_in"][:5]) == [120] * 5 and list(rec["n_out"][:5]) == [90] * 5
    assert list(rec["n_in"][5:]) == [120] and list(rec["n_out"][5:]) == [40]  # features, B
    want = 2 if spmm.openmp_enabled() else 1
    assert list(rec["threads"][:5]) == [want] * 5
    assert np.all(rec["t_call"] > 0) and np.all(rec["t_done"] >= rec["t_call"])
    assert np.all(rec["t_call"][1:] >= rec["t_done"][:-1])  # one call after the other
    st = rec["stamps"]
    assert st.shape == (6, 4, 3)
    for i in range(6):
        for t in range(4):
            s = st[i, t]
            if s[0] == 0:  # this thread did not stamp this call
                assert not s.any()
                continue
            assert rec["t_call"][i] <= s[0] <= s[1] <= s[2] <= rec["t_done"][i]
    rows = [i for i, k in enumerate(RECORDED)
            if k in ("forward", "backward_update", "weight_grad")]
    assert np.all(st[rows, 0] > 0)  # the row loops: thread 0 stamped
    assert not np.delete(st, rows, axis=0).any()  # the others: no thread stamps
    assert not st[:, 2:].any()  # a team of two never stamps as thread 2 or 3


def test_the_serial_build_records_its_own_calls(no_timeline):
    """One-thread calls run the serial build (kernels.spmm_for): its own
    record, a team of one (a batch over 32: the row loop, which stamps)."""
    kernels.spmm_serial.timeline_start(10)
    r = np.random.default_rng(0)
    layer = random_layer(r, 30, 20, 0.2)
    X = r.standard_normal((30, 40)).astype(np.float32)
    layer.forward(X, np.empty((20, 40), np.float32), n_threads=1)
    assert spmm.timeline_take() is None
    rec = kernels.spmm_serial.timeline_take()
    assert [KINDS[k] for k in rec["kind"]] == ["forward"]
    assert rec["threads"][0] == 1 and rec["stamps"].shape == (1, 1, 3)
    assert 0 < rec["stamps"][0, 0, 0] <= rec["stamps"][0, 0, 2] <= rec["t_done"][0]


def test_calls_past_the_capacity_are_counted_not_stored(no_timeline, every_call_split):
    spmm.timeline_start(2, threads=2)
    every_kernel(2, 40)
    rec = spmm.timeline_take()
    assert len(rec["kind"]) == 2 and rec["lost"] == len(RECORDED) - 2


def test_recording_changes_no_result(no_timeline, every_call_split):
    base = every_kernel(2, 40)
    spmm.timeline_start(50)
    got = every_kernel(2, 40)
    spmm.timeline_take()
    for a, b in zip(base, got):
        assert np.array_equal(a, b)


def test_timeline_start_refuses_bad_arguments(no_timeline):
    with pytest.raises(ValueError, match="capacity"):
        spmm.timeline_start(0)
    with pytest.raises(ValueError, match="threads"):
        spmm.timeline_start(10, threads=-1)
    with pytest.raises(ValueError, match="GiB"):  # (not a size that wraps around)
        spmm.timeline_start(2**60, threads=2)
    assert spmm.timeline_take() is None


def test_bench_timeline_accounts_for_the_calls_of_an_epoch(no_timeline):
    """bench_timeline's record of one epoch of Higgs's network (one batch):
    three hidden forward products with their row stamps, and one call of
    each kind per layer as the trainer makes them."""
    sys.path.insert(0, str(ROOT))
    from bench import bench_epoch, bench_timeline
    tr = bench_epoch.make_trainer("higgs", 2, 0.0)  # 128 samples: one batch
    rec, seconds = bench_timeline.record_epoch(tr)
    assert seconds > 0 and tr.n_batches == 1
    rows = bench_timeline.summarise(rec, tr.n_batches)
    fwd = {(r["n_in"], r["n_out"]): r for r in rows if r["kernel"] == "forward"}
    assert set(fwd) == {(28, 1000), (1000, 1000), (1000, 2)}
    assert fwd[(1000, 1000)]["calls_per_batch"] == 2 and fwd[(28, 1000)]["calls_per_batch"] == 1
    assert "rows_max_us" in fwd[(1000, 1000)]
    assert fwd[(1000, 1000)]["rows_min_us"] <= fwd[(1000, 1000)]["rows_max_us"]
    assert sum(r["calls_per_batch"] for r in rows if r["kernel"] == "backward_update") == 3
    assert spmm.timeline_take() is None  # record_epoch stopped both builds


def test_amdahl_bound_counts_one_thread_calls_and_the_time_outside():
    """bench_timeline.amdahl: the serial part is the time outside the calls
    plus the calls of a team of one (not those of two), and the bound is
    T1 / (serial + (T1 - serial) / N)."""
    sys.path.insert(0, str(ROOT))
    from bench import bench_timeline
    rows = [{"threads": 2, "us_per_batch": 300.0}, {"threads": 1, "us_per_batch": 40.0},
            {"threads": 1, "us_per_batch": 10.0}]
    serial, bound = bench_timeline.amdahl(1000.0, (600.0, 550.0, rows), threads=(2, 16))
    assert serial == 100.0  # 50 outside the calls, 40 + 10 in calls of one thread
    assert bound[2] == pytest.approx(1000.0 / (100.0 + 900.0 / 2))
    assert bound[16] == pytest.approx(1000.0 / (100.0 + 900.0 / 16))
