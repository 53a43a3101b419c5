"""Checkpoints: bit-exact round trip, exact resume, integrity, run folders,
the topology log, impossible settings, and the CLI's checkpoint flags."""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil

import h5py
import numpy as np
import pytest
from conftest import StopAfter

import run_experiment
import sparse_mlp
from sparse_mlp import checkpoint as ckmod
from sparse_mlp.checkpoint import (
    LAYER_ARRAYS,
    SCHEMA_VERSION,
    CheckpointDir,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    open_h5,
    save_checkpoint,
)
from sparse_mlp.config import TrainConfig
from sparse_mlp.datasets import Dataset
from sparse_mlp.errors import CheckpointError, ConfigError, DivergenceError
from sparse_mlp.experiment import check_feasible, run
from sparse_mlp.model import SparseMLP
from sparse_mlp.topology_log import decode_positions, encode_positions, load_topology
from sparse_mlp.training import (
    TIMING_COLUMNS,
    PreemptedError,
    RandomStreams,
    Trainer,
    TrainState,
)

CENTERS = np.random.default_rng(5).standard_normal((3, 12)) * 0.7


def blobs(seed: int, n: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    return (CENTERS[y] + rng.standard_normal((n, 12))).astype(np.float32), y


def make_data(n_train: int = 160) -> Dataset:
    X, y = blobs(0, n_train)
    Xt, yt = blobs(1, 60)
    return Dataset("blobs", X, y, Xt, yt, [0, 1, 2], {"source": "test"})


def small_cfg(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(hidden=[24, 16], epsilon=3, activation="allrelu", alpha=0.5, epochs=6,
                batch_size=16, lr=0.05, dropout=0.2, seed=4, threads=1,
                out=str(tmp_path / name), eval_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """The learning-curve PNG is not what these tests are about (and costs ~1 s)."""
    monkeypatch.setattr("sparse_mlp.run.plot_learning_curves", lambda *a, **k: None)


def assert_same_model(a: SparseMLP, b: SparseMLP) -> None:
    assert a.sizes == b.sizes
    for la, lb in zip(a.layers, b.layers):
        for name, dtype in LAYER_ARRAYS.items():
            x, y = getattr(la, name), getattr(lb, name)
            assert x.dtype == y.dtype == dtype and np.array_equal(x, y), name
    for xa, xb in zip(a.acts, b.acts):
        assert (xa.name, xa.kind, xa.slope) == (xb.name, xb.kind, xb.slope)
        for arr in ("params", "velocity"):
            pa, pb = getattr(xa, arr), getattr(xb, arr)
            assert (pa is None and pb is None) or np.array_equal(pa, pb)


def rows_without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in history]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Equal metric rows (NaN equal to NaN), timing columns left out."""
    def norm(rows):
        return [{k: ("nan" if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in r.items()} for r in rows_without_timing(rows)]
    return norm(a) == norm(b)


def csv_rows(path) -> list[dict]:
    with open(path) as fh:
        return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS}
                for r in csv.DictReader(fh)]


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a small SReLU model with a history, extra arrays and
    advanced random streams."""
    streams = RandomStreams(9)
    model = SparseMLP([12, 20, 16, 3], epsilon=4, activation="srelu", rng=streams.init,
                      n_threads=1)
    rng = np.random.default_rng(0)
    for lay in model.layers:
        lay.velocity[:] = rng.standard_normal(lay.nnz).astype(np.float32)
        lay.bias_velocity[:] = rng.standard_normal(lay.n_out).astype(np.float32)
    for act in model.acts:
        act.velocity[:] = rng.standard_normal(act.velocity.shape).astype(np.float32)
    streams.shuffle.permutation(100)
    streams.evolution.random(7)
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "train_acc": 0.5, "test_loss":
                float("nan") if e % 2 else 0.3, "test_acc": 0.7, "nnz": 100 + e,
                "train_s": 0.1, "test_s": 0.0, "evolution_s": 0.01} for e in range(3)]
    state = TrainState(epoch=3, step=30, history=history, best_test_acc=0.7, best_epoch=0,
                       batch=4, epoch_loss_sum=12.5, epoch_correct=40, epoch_train_s=0.2)
    cfg = TrainConfig(hidden=[20, 16], epsilon=4, activation="srelu", alpha=None)
    extra = {"run": {"nnz": [1, 2], "name": "x"}, "ranks": {"0": {"w": np.arange(5.0)}},
             "count": np.array(3)}
    path = save_checkpoint(tmp_path / "a.h5", cfg=cfg, model=model, state=state,
                           streams=streams, extra=extra)
    return path, cfg, model, state, streams, extra


# ---------------------------------------------------------------------- round trip
def test_round_trip_is_bit_exact(saved):
    path, cfg, model, state, streams, extra = saved
    ck = load_checkpoint(path, n_threads=1)
    assert ck.schema_version == SCHEMA_VERSION and ck.resumable
    assert ck.cfg == cfg
    assert_same_model(ck.model, model)
    assert repr(rows_without_timing(ck.state.history)) == repr(rows_without_timing(
        state.history))  # NaN where not evaluated; ints stay ints
    assert (ck.state.epoch, ck.state.step, ck.state.batch, ck.state.epoch_loss_sum,
            ck.state.epoch_correct) == (3, 30, 4, 12.5, 40)
    restored = ck.streams()
    assert restored.state() == streams.state()
    assert restored.shuffle.random() == streams.shuffle.random()
    assert ck.extra["run"] == extra["run"]
    assert np.array_equal(ck.extra["ranks"]["0"]["w"], np.arange(5.0))
    assert ck.extra["count"].shape == () and int(ck.extra["count"]) == 3
    X = np.random.default_rng(1).standard_normal((40, 12)).astype(np.float32)
    assert np.array_equal(ck.model.predict_proba(X), model.predict_proba(X))
    assert not [p for p in path.parent.iterdir() if ".tmp-" in p.name]


def test_sparse_mlp_load_gives_a_model_that_predicts(saved, tmp_path):
    path, _, model, *_ = saved
    X = np.random.default_rng(2).standard_normal((25, 12)).astype(np.float32)
    loaded = sparse_mlp.load(path)
    assert isinstance(loaded.network, SparseMLP)  # a TrainedModel (sparse_mlp.trained)
    assert np.array_equal(loaded.predict(X), model.predict(X))
    run_dir = tmp_path / "somerun"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(path, run_dir / "checkpoints" / checkpoint_name(3, 30))
    assert np.array_equal(sparse_mlp.load(run_dir).predict(X), model.predict(X))


def test_model_only_file_loads_but_cannot_resume(tmp_path):
    model = SparseMLP([6, 5, 2], epsilon=2, activation="relu",
                      rng=np.random.default_rng(0), n_threads=1)
    path = save_checkpoint(tmp_path / "m.h5", cfg=None, model=model, state=None, streams=None)
    ck = load_checkpoint(path)
    assert ck.cfg is None and ck.state is None and not ck.resumable
    assert_same_model(ck.model, model)
    with pytest.raises(CheckpointError, match="model-only"):
        ck.streams()


# ---------------------------------------------------------------------- writing safely
def test_a_failed_save_leaves_the_previous_file_and_no_temporary(saved, monkeypatch):
    path, cfg, model, state, streams, _ = saved
    before = path.read_bytes()
    create = h5py.Group.create_dataset
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*a\.h5.*space"):
        save_checkpoint(path, cfg=cfg, model=model, state=state, streams=streams)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.h5"]


def test_a_diverged_model_is_never_saved(saved):
    path, cfg, model, state, streams, _ = saved
    before = path.read_bytes()
    model.layers[1].data[3] = np.nan
    with pytest.raises(DivergenceError, match=r"not saving .*weights of layer 2"):
        save_checkpoint(path, cfg=cfg, model=model, state=state, streams=streams)
    assert path.read_bytes() == before


# ---------------------------------------------------------------------- integrity
def test_truncated_files_are_refused_naming_the_file(saved, tmp_path):
    path = saved[0]
    raw = path.read_bytes()
    for frac in (0.0, 0.01, 0.3, 0.6, 0.95, 0.999):
        bad = tmp_path / f"cut{frac}.h5"
        bad.write_bytes(raw[:int(len(raw) * frac)])
        with pytest.raises(CheckpointError, match=str(bad.name)):
            load_checkpoint(bad)


def _dataset_offsets(path) -> dict[str, int]:
    """File offsets of the first chunk of some datasets."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in ("config", "streams", "model/layers/0/data", "model/layers/1/indices",
                     "model/layers/2/indptr", "model/activations/0/params",
                     "history/train_loss"):
            out[name] = f[name].id.get_chunk_info(0).byte_offset
    return out


def test_bit_flips_are_detected_or_harmless(saved, tmp_path):
    """A flipped bit in any dataset is caught by its checksum; one anywhere
    else (superblock, object headers with the attributes, chunk indexes) by
    HDF5's metadata checksums; never do wrong values load silently."""
    path, cfg, model, state, streams, _ = saved
    raw = path.read_bytes()
    targeted = [off + 3 for off in _dataset_offsets(path).values()]
    offsets = targeted + list(np.random.default_rng(0).integers(0, len(raw), 150))
    bad = tmp_path / "flipped.h5"
    detected = 0
    for k, off in enumerate(offsets):
        flipped = bytearray(raw)
        flipped[off] ^= 1 << (k % 8)
        bad.write_bytes(bytes(flipped))
        try:
            ck = load_checkpoint(bad)
        except CheckpointError as exc:
            assert "flipped.h5" in str(exc)
            detected += 1
            continue
        assert k >= len(targeted), f"a flip in a dataset at byte {off} was not detected"
        assert ck.cfg == cfg and ck.streams_state == load_checkpoint(path).streams_state
        assert_same_model(ck.model, model)  # the flip hit unused space
        assert repr(ck.state) == repr(load_checkpoint(path).state)
    assert detected >= len(targeted) + 100


def test_foreign_empty_and_other_version_files(saved, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.h5")
    (tmp_path / "empty.h5").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.h5 is not an HDF5 file"):
        load_checkpoint(tmp_path / "empty.h5")
    (tmp_path / "notes.h5").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(CheckpointError, match="notes.h5 is not an HDF5 file"):
        load_checkpoint(tmp_path / "notes.h5")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["weights"] = np.ones(3)
    with pytest.raises(CheckpointError, match="foreign.h5 is an HDF5 file but not a sparse_mlp"):
        load_checkpoint(tmp_path / "foreign.h5")
    other = tmp_path / "v99.h5"
    shutil.copy(saved[0], other)
    with h5py.File(other, "a") as f:
        f.attrs["schema_version"] = np.int64(99)
    with pytest.raises(CheckpointError, match=r"v99.h5 has checkpoint schema version 99.*"
                                              r"reads schema version 1"):
        load_checkpoint(other)


def test_filesystems_without_locks_fall_back_to_unlocked(tmp_path, monkeypatch, caplog):
    real_file = h5py.File
    opened = []

    def no_locks(path, mode, locking=None, **kw):
        opened.append(locking)
        if locking is not False:
            raise OSError("Unable to synchronously open file (unable to lock file, errno = 37, "
                          "error message = 'No locks available')")
        return real_file(path, mode, locking=locking, **kw)

    monkeypatch.setattr(ckmod, "_unlocked_fallback", False)
    monkeypatch.setattr(h5py, "File", no_locks)
    with caplog.at_level(logging.WARNING), open_h5(tmp_path / "x.h5", "w") as f:
        f["a"] = np.arange(3)
    assert opened == ["best-effort", False]
    assert "refuses HDF5 file locks" in caplog.text and "HDF5_USE_FILE_LOCKING" in caplog.text
    with open_h5(tmp_path / "x.h5", "r") as f:  # remembered: no second failing attempt
        assert f["a"][2] == 2
    assert opened == ["best-effort", False, False]

    def busy(path, mode, locking=None, **kw):
        raise OSError("unable to lock file, errno = 11, error message = 'Resource "
                      "temporarily unavailable'")

    monkeypatch.setattr(ckmod, "_unlocked_fallback", False)
    monkeypatch.setattr(h5py, "File", busy)
    with pytest.raises(CheckpointError, match="locked by another process"):
        open_h5(tmp_path / "x.h5", "r")
    monkeypatch.setenv(ckmod.LOCKING_ENV, "sometimes")
    with pytest.raises(ConfigError, match="true, false or best-effort"):
        open_h5(tmp_path / "x.h5", "r")


# ---------------------------------------------------------------------- exact resume
@pytest.mark.parametrize("kw", [
    dict(importance_pruning=True, ip_start=1, ip_every=2),   # IP at the end of epochs 2, 4
    dict(activation="srelu", alpha=None, eval_every=2),     # trainable activations
    # Table 4's options: a zero output layer, capped steps
    dict(weight_init="he_uniform_sparse", output_init="zero", lr_fan_in_cap=2.0),
    # regrowth after the resume draws with the gain the loaded model sets
    dict(weight_init="kaiming_uniform_sparse"),
], ids=["allrelu-ip", "srelu", "zero-output-capped", "kaiming"])
def test_half_then_resume_equals_straight(kw, tmp_path):
    data = make_data()
    straight = run(small_cfg(tmp_path, "straight", checkpoint_every=3, **kw), data=data,
                   progress=False)
    ckpts = list_checkpoints(tmp_path / "straight" / "checkpoints")
    assert [p.name[:12] for p in ckpts] == ["ckpt_e000003", "ckpt_e000006"]

    resumed = run(small_cfg(tmp_path, "unused"), data=data, progress=False, resume=ckpts[0],
                  overrides={"out": str(tmp_path / "resumed")})
    a = load_checkpoint(ckpts[-1])
    b = load_checkpoint(list_checkpoints(tmp_path / "resumed" / "checkpoints")[-1])
    assert_same_model(a.model, b.model)
    assert a.streams_state == b.streams_state
    assert same_rows(a.state.history, b.state.history)
    assert csv_rows(tmp_path / "straight" / "metrics.csv") == csv_rows(
        tmp_path / "resumed" / "metrics.csv")
    for key in ("best_test_acc", "best_epoch", "final_test_acc", "nnz_start", "nnz_end",
                "nnz_per_layer_start", "epochs"):
        assert resumed[key] == straight[key], key
    assert resumed["sessions"] == 2 and resumed["resumed_from"] == [str(ckpts[0])]
    if "importance_pruning" in kw:
        assert straight["nnz_end"] < straight["nnz_start"]


def _trainer(cfg, data, state=None, streams=None, model=None, stop=None, on_checkpoint=None):
    if streams is None:
        streams = RandomStreams(cfg.seed)
        model = SparseMLP([12, *cfg.hidden, 3], epsilon=cfg.epsilon, activation=cfg.activation,
                          alpha=cfg.alpha, dropout=cfg.dropout, rng=streams.init, n_threads=1)
    return Trainer(cfg, model, data.X_train, data.y_train, data.X_test, data.y_test, streams,
                   state=state, stop=stop, on_checkpoint=on_checkpoint)


@pytest.mark.parametrize("polls, where, batch", [
    (13, "after batch 3/10 of epoch 2", 3),
    (9, "after batch 10/10 of epoch 1", 10),
    (10, "at the end of epoch 1", 0),
], ids=["mid-epoch", "after-last-batch", "end-of-epoch"])
def test_stop_then_resume_equals_straight(polls, where, batch, tmp_path):
    """10 batches per epoch, one poll after each and one at each epoch's end:
    the stop lands inside epoch 2, after epoch 1's last batch (before its
    evaluation and evolution), or after epoch 1's metrics row."""
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=4)
    straight = _trainer(cfg, data)
    straight.run(progress=False)

    path = tmp_path / "stop.h5"

    def on_checkpoint(trainer, reason):
        assert reason == "preempted"
        return save_checkpoint(path, cfg=cfg, model=trainer.model, state=trainer.state,
                               streams=trainer.streams_state())

    first = _trainer(cfg, data, stop=StopAfter(polls), on_checkpoint=on_checkpoint)
    with pytest.raises(PreemptedError, match=f"received SIGUSR1: stopped {where}"):
        first.run(progress=False)
    ck = load_checkpoint(path)
    assert ck.state.batch == batch
    second = _trainer(cfg, data, state=ck.state, streams=ck.streams(), model=ck.model)
    second.run(progress=False)
    assert_same_model(second.model, straight.model)
    assert same_rows(second.state.history, straight.state.history)
    assert second.streams.state() == straight.streams.state()


# ---------------------------------------------------------------------- a run's folder
def test_run_folder_keeps_k_and_resume_auto_skips_damaged(tmp_path, caplog):
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=4, checkpoint_every=1, keep_checkpoints=2)
    run(cfg, data=data, progress=False)
    folder = tmp_path / "run" / "checkpoints"
    names = [p.name for p in list_checkpoints(folder)]
    assert [n[:12] for n in names] == ["ckpt_e000003", "ckpt_e000004"]
    newest = folder / names[-1]
    newest.write_bytes(newest.read_bytes()[:5000])  # damaged, e.g. a full disk
    with caplog.at_level(logging.WARNING):
        ck = latest_checkpoint(folder)
    assert ck.state.epoch == 3 and "skipping a damaged checkpoint" in caplog.text
    assert (folder / (names[-1] + ".corrupt")).exists()


def test_resume_from_an_older_checkpoint_rewrites_metrics_and_retires_newer(tmp_path):
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=4, checkpoint_every=1, keep_checkpoints=4)
    run(cfg, data=data, progress=False)
    out = tmp_path / "run"
    straight_rows = csv_rows(out / "metrics.csv")
    older = list_checkpoints(out / "checkpoints")[1]  # after epoch 2
    run(cfg, data=data, progress=False, resume=older)
    assert csv_rows(out / "metrics.csv") == straight_rows  # 4 rows, none twice
    superseded = sorted(p.name for p in (out / "checkpoints").glob("*.superseded"))
    assert [s[:12] for s in superseded] == ["ckpt_e000003", "ckpt_e000004"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sessions"] == 2 and summary["epochs"] == 4


def test_checkpoint_schedule(tmp_path, monkeypatch):
    data = make_data()

    def names(name, **kw):
        run(small_cfg(tmp_path, name, epochs=4, keep_checkpoints=10, **kw), data=data,
            progress=False)
        return [p.name[:12] for p in list_checkpoints(tmp_path / name / "checkpoints")]

    # default (None): every AUTO_CHECKPOINT_SECONDS of training, and after the last epoch
    assert names("auto") == ["ckpt_e000004"]
    monkeypatch.setattr("sparse_mlp.training.AUTO_CHECKPOINT_SECONDS", 0.0)
    assert names("auto0") == ["ckpt_e000001", "ckpt_e000002", "ckpt_e000003", "ckpt_e000004"]
    assert names("every3", checkpoint_every=3) == ["ckpt_e000003", "ckpt_e000004"]
    assert names("off", checkpoint_every=0) == []


def test_resume_refuses_changed_settings_and_allows_more_epochs(tmp_path):
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=2)
    run(cfg, data=data, progress=False)
    with pytest.raises(ConfigError, match=r"--hidden \[8\] \(the run has \[24, 16\]\)"):
        run(cfg, data=data, progress=False, resume="auto", overrides={"hidden": [8]})
    with pytest.raises(ConfigError, match="has already done 2 epochs"):
        run(cfg, data=data, progress=False, resume="auto", overrides={"epochs": 1})
    other = make_data(n_train=150)
    with pytest.raises(ConfigError, match="the data differ"):
        run(cfg, data=other, progress=False, resume="auto")
    s = run(cfg, data=data, progress=False, resume="auto",
            overrides={"epochs": 3, "hidden": [24, 16], "seed": 4})
    assert s["epochs"] == 3 and len(csv_rows(tmp_path / "run" / "metrics.csv")) == 3
    with pytest.raises(ConfigError, match="--resume auto needs --out"):
        run(cfg.replace(out=None), data=data, resume="auto")


def test_resume_auto_without_checkpoints_starts_a_new_run(tmp_path):
    s = run(small_cfg(tmp_path, epochs=2), data=make_data(), progress=False, resume="auto")
    assert s["sessions"] == 1 and s["resumed_from"] == []


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=2, checkpoint_every=1, activation="relu", alpha=None)
    run(cfg, data=data, progress=False)
    good = list_checkpoints(tmp_path / "run" / "checkpoints")
    with pytest.raises(DivergenceError) as exc:
        run(cfg, data=data, progress=False, resume="auto", overrides={"lr": 1e7, "epochs": 6})
    msg = str(exc.value)
    assert "training diverged in epoch 3" in msg and "layer" in msg
    assert "Lower the learning rate" in msg
    assert f"The last good checkpoint is {good[-1]}" in msg
    assert list_checkpoints(tmp_path / "run" / "checkpoints") == good
    assert load_checkpoint(good[-1]).state.epoch == 2
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs"] == 2


# ---------------------------------------------------------------------- impossible settings
def test_impossible_settings_are_refused_before_allocation(tmp_path, monkeypatch):
    def no_allocation(*a, **k):
        raise AssertionError("a model was allocated")

    monkeypatch.setattr("sparse_mlp.experiment.build_model", no_allocation)
    data = make_data(n_train=40)
    with pytest.raises(ConfigError, match=r"--batch-size 64 is larger than the training set "
                                          r"\(40 samples\)"):
        run(small_cfg(tmp_path, batch_size=64), data=data)
    with pytest.raises(ConfigError, match=r"layer 2 \(2000 -> 3000 neurons\) would get "
                                          r"0.5 weights.*--epsilon 0.0002"):
        run(small_cfg(tmp_path, hidden=[2000, 3000], epsilon=1e-4), data=data)
    with pytest.raises(ConfigError, match=r"more than the 2,147,483,647 one layer can index"):
        check_feasible(TrainConfig(hidden=[100_000], epsilon=30_000), 50_000, 2, 1000)
    with pytest.raises(ConfigError, match="--hidden must list positive"):
        run(small_cfg(tmp_path, hidden=[16, 0]), data=data)
    with pytest.raises(ConfigError, match="kaiming_uniform_sparse needs a fixed-shape"):
        run(small_cfg(tmp_path, activation="srelu", alpha=None,
                      weight_init="kaiming_uniform_sparse"), data=data)


def test_epsilon_beyond_full_density_caps_at_a_full_layer(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        s = run(small_cfg(tmp_path, hidden=[4], epsilon=50, epochs=2), data=make_data(),
                progress=False)
    assert s["nnz_per_layer_start"] == [12 * 4, 4 * 3]
    assert "layer 1 (12 -> 4) is fully connected" in caplog.text


# ---------------------------------------------------------------------- topology log
def test_topology_log_records_every_epoch(tmp_path):
    cfg = small_cfg(tmp_path, epochs=4, save_topology=True, zeta=0.3)
    s = run(cfg, data=make_data(), progress=False)
    hist = load_topology(tmp_path / "run")
    assert hist.epochs == [0, 1, 2, 3, 4] and hist.sizes == [12, 24, 16, 3]
    final = load_checkpoint(s["checkpoint"]).model
    for li, layer in enumerate(final.layers):
        m = hist.layer(4, li)
        assert m.shape == (layer.n_in, layer.n_out) and m.dtype == bool
        assert np.array_equal(m.indptr, layer.indptr)
        assert np.array_equal(m.indices, layer.indices)
    one = hist.change(0, 1, layer=0)
    assert one.removed == one.added > 0 and one.nnz_a == one.nnz_b
    assert 0.05 < one.fraction_removed <= 0.31  # zeta, less what regrew in place
    assert hist.change(0, 3, layer=2).removed == 0   # the output layer never evolves
    assert hist.change(3, 4).removed == 0            # no evolution after the last epoch
    assert hist.change(1, 1).jaccard_distance == 0.0
    total = hist.change(0, 1)
    assert total.removed == sum(hist.change(0, 1, li).removed for li in range(3))
    with pytest.raises(ConfigError, match="no snapshot of epoch 9"):
        hist.layer(9, 0)


def test_topology_log_continues_exactly_after_resume(tmp_path):
    data = make_data()
    run(small_cfg(tmp_path, "a", epochs=4, save_topology=True, checkpoint_every=2), data=data,
        progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ckpts = list_checkpoints(tmp_path / "b" / "checkpoints")
    ckpts[-1].unlink()  # as if killed after epoch 4's snapshot, before its checkpoint
    run(small_cfg(tmp_path, "b", epochs=4), data=data, progress=False, resume="auto")
    a, b = load_topology(tmp_path / "a"), load_topology(tmp_path / "b")
    assert a.epochs == b.epochs == [0, 1, 2, 3, 4]
    for e in a.epochs:
        for li in range(3):
            assert np.array_equal(a.positions(e, li), b.positions(e, li))


def test_a_damaged_topology_log_is_moved_aside_on_resume(tmp_path, caplog):
    data = make_data()
    cfg = small_cfg(tmp_path, epochs=3, save_topology=True, checkpoint_every=2)
    run(cfg, data=data, progress=False)
    (tmp_path / "run" / "topology.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(300))
    list_checkpoints(tmp_path / "run" / "checkpoints")[-1].unlink()
    with caplog.at_level(logging.WARNING):
        run(cfg, data=data, progress=False, resume="auto")
    assert "could not be continued" in caplog.text
    assert (tmp_path / "run" / "topology.h5.damaged").exists()
    assert load_topology(tmp_path / "run").epochs == [2, 3]


def test_delta_encoding_round_trips_and_is_compact():
    rng = np.random.default_rng(0)
    for n_total, k in ((300, 40), (70_000, 3000), (2**40, 50)):
        pos = np.sort(rng.choice(n_total, size=k, replace=False)).astype(np.int64)
        enc = encode_positions(pos)
        assert np.array_equal(decode_positions(enc), pos)
    assert encode_positions(np.arange(0, 500, 3)).dtype == np.uint8
    assert encode_positions(np.array([0, 2**33])).dtype == np.uint64
    assert decode_positions(encode_positions(np.empty(0, np.int64))).size == 0


def test_topology_log_costs_about_a_byte_per_weight(tmp_path):
    streams = RandomStreams(0)
    model = SparseMLP([784, 1000, 10], epsilon=20, rng=streams.init, n_threads=1)
    from sparse_mlp.topology_log import TopologyLog
    log_ = TopologyLog(tmp_path / "t.h5", model.sizes)
    log_.start(model)
    assert (tmp_path / "t.h5").stat().st_size < 1.6 * model.nnz


# ---------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "digits"
    argv = ["--dataset", "digits", "--hidden", "16,16", "--epochs", "2", "--threads", "1",
            "--out", str(out), "--no-progress", "--quiet"]
    assert run_experiment.main(argv) == 0
    return out


def test_cli_evaluate_prints_and_writes_json(cli_run, tmp_path, capsys):
    summary = json.loads((cli_run / "summary.json").read_text())
    assert run_experiment.main(["--evaluate", str(cli_run), "--out", str(tmp_path),
                                "--threads", "1"]) == 0
    text = capsys.readouterr().out
    res = json.loads((tmp_path / "evaluation.json").read_text())
    assert res["test_acc"] == summary["final_test_acc"] and res["dataset"] == "digits"
    assert f"test accuracy {100 * res['test_acc']:.2f}%" in text and "evaluation.json" in text
    assert run_experiment.main(["--evaluate", str(cli_run), "--dataset", "madelon",
                                "--data-dir", str(tmp_path / "nothing")]) == 2
    assert run_experiment.main(["--evaluate", str(cli_run), "--lr", "0.1"]) == 2
    assert "--evaluate takes" in capsys.readouterr().err


def test_cli_resume_flags(cli_run, capsys):
    assert run_experiment.main(["--resume", "auto"]) == 2
    assert "--resume auto needs --out" in capsys.readouterr().err
    assert run_experiment.main(["--resume", "auto", "--out", str(cli_run), "--hidden",
                                "8"]) == 2
    err = capsys.readouterr().err
    assert "--hidden [8] (the run has [16, 16])" in err and "may change" in err
    # the same command line as the first run: nothing differs, nothing left to do
    assert run_experiment.main(["--dataset", "digits", "--hidden", "16,16", "--epochs", "2",
                                "--threads", "1", "--out", str(cli_run), "--no-progress",
                                "--quiet", "--resume", "auto"]) == 0
    assert run_experiment.main(["--checkpoint-every", "-1"]) == 2
    assert "--checkpoint-every must be 0" in capsys.readouterr().err


def test_cli_help_documents_checkpoints(capsys):
    with pytest.raises(SystemExit):
        run_experiment.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--checkpoint-every", "--keep-checkpoints", "--resume", "--save-topology",
                 "--evaluate", "checkpoints and faults", "75 preempted"):
        assert flag in text


def test_checkpoint_dir_rejects_keep_zero(tmp_path):
    with pytest.raises(ConfigError, match="keep must be at least 1"):
        CheckpointDir(tmp_path, keep=0)


def test_a_truncated_file_does_not_switch_hdf5_locking_off(saved, tmp_path, monkeypatch):
    """HDF5 reports a truncated file with "sblock->base_addr" in the message: that is
    damage, not a filesystem that refuses locks, and locking must stay on."""
    monkeypatch.setattr(ckmod, "_unlocked_fallback", False)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(saved[0].read_bytes()[:242])
    with pytest.raises(CheckpointError, match="bad.h5"):
        load_checkpoint(bad)
    assert ckmod._unlocked_fallback is False
