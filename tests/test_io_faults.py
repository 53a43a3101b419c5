"""Faults of the file system under checkpoints, the topology log and result
files: a full disk (a real small tmpfs, and simulated), a checkpoint another
process holds open, quarantined checkpoints, concurrent JSON writers; and
dense models in the HDF5 checkpoint format (old sparse files still load)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import sparse_mlp
from sparse_mlp import checkpoint as ckmod
from sparse_mlp import topology_log
from sparse_mlp.checkpoint import (
    CheckpointDir,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    quarantined_checkpoints,
    resolve_checkpoint,
    save_checkpoint,
)
from sparse_mlp.config import TrainConfig
from sparse_mlp.dense import DenseMLP
from sparse_mlp.errors import CheckpointBusyError, CheckpointError, DivergenceError
from sparse_mlp.model import SparseMLP
from sparse_mlp.report import write_json
from sparse_mlp.topology_log import TopologyLog, load_topology
from sparse_mlp.training import RandomStreams, TrainState

ROOT = Path(__file__).resolve().parents[1]
OLD_SPARSE = ROOT / "tests" / "fixtures" / "ckpt_sparse_schema1_v0.h5"  # written before kind=


def sparse_model(seed: int = 0, sizes=(30, 40, 3)) -> SparseMLP:
    return SparseMLP(list(sizes), epsilon=5, activation="relu",
                     rng=np.random.default_rng(seed), n_threads=1)


def cfg_for(model) -> TrainConfig:
    return TrainConfig(hidden=list(model.sizes[1:-1]), epsilon=5, activation="relu")


def save_epochs(ckdir: CheckpointDir, model, epochs) -> None:
    for e in epochs:
        ckdir.save(cfg=cfg_for(model), model=model, state=TrainState(epoch=e, step=10 * e),
                   streams=RandomStreams(1))


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp" in p.name]


# ---------------------------------------------------------------------- full disk, simulated
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_failing_disk_mid_save_is_one_checkpoint_error(tmp_path, monkeypatch, code):
    """The write fails under HDF5 after a few blocks: one CheckpointError, no
    temporary, the older checkpoints (keep=2) intact and loadable."""
    model = sparse_model()
    ckdir = CheckpointDir(tmp_path / "checkpoints", keep=2)
    save_epochs(ckdir, model, [1, 2])
    before = {p.name: p.read_bytes() for p in ckdir.list()}
    real = os.pwrite
    calls = []

    def failing(fd, data, pos):
        calls.append(pos)
        if len(calls) > 3:
            raise OSError(code, os.strerror(code))
        return real(fd, data, pos)

    monkeypatch.setattr(os, "pwrite", failing)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*ckpt_e000003") \
            as exc:
        save_epochs(ckdir, model, [3])
    monkeypatch.setattr(os, "pwrite", real)
    assert os.strerror(code) in str(exc.value) and "untouched" in str(exc.value)
    assert {p.name: p.read_bytes() for p in ckdir.list()} == before
    assert not temporaries(ckdir.folder)
    assert latest_checkpoint(ckdir.folder).state.epoch == 2
    save_epochs(ckdir, model, [3])  # the disk has room again: saving works
    assert [load_checkpoint(p).state.epoch for p in ckdir.list()] == [2, 3]


@pytest.mark.parametrize("error", [
    RuntimeError("Can't decrement id ref count (file write failed: errno = 28, error "
                 "message = 'No space left on device')"),
    ValueError("Unable to synchronously create dataset (no space)"),
    OSError(errno.EACCES, "Permission denied"),
])
def test_any_h5py_error_while_saving_is_a_checkpoint_error(tmp_path, monkeypatch, error):
    model = sparse_model()
    create = h5py.Group.create_dataset
    calls = []

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise error
        return create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*m\.h5: "):
        save_checkpoint(tmp_path / "m.h5", cfg=None, model=model, state=None, streams=None)
    assert list(tmp_path.iterdir()) == []


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    class Full:
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    with pytest.raises(CheckpointError, match=r"needs about .* MiB free.*Free some disk"):
        save_checkpoint(tmp_path / "m.h5", cfg=None, model=sparse_model(), state=None,
                        streams=None)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_topology_append_keeps_the_file_and_stops_the_log(tmp_path, monkeypatch,
                                                                  caplog):
    path = tmp_path / "topology.h5"
    model = sparse_model()
    log_ = TopologyLog(path, model.sizes)
    log_.start(model)
    assert log_.append(1, model)
    before = path.read_bytes()
    real = os.pwrite

    def full(fd, data, pos):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with caplog.at_level(logging.WARNING):
        assert log_.append(2, model) is False
        assert log_.append(3, model) is False  # skipped, no second warning
    monkeypatch.setattr(os, "pwrite", real)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "snapshot 2" in warnings[0].getMessage()
    assert "No space left" in warnings[0].getMessage()
    assert path.read_bytes() == before  # cut back to exactly what was there
    assert load_topology(path).epochs == [0, 1]
    assert not temporaries(tmp_path)


# ---------------------------------------------------------------------- full disk, real
FULL_DISK = textwrap.dedent("""
    import json, logging, os, subprocess, sys
    import numpy as np
    d = sys.argv[1]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                      capture_output=True).returncode:
        sys.exit(77)
    logging.basicConfig(level=logging.WARNING, format="WARNING %(message)s")
    from sparse_mlp import checkpoint as ckmod
    from sparse_mlp.checkpoint import CheckpointDir, load_checkpoint
    from sparse_mlp.config import TrainConfig
    from sparse_mlp.errors import CheckpointError
    from sparse_mlp.model import SparseMLP
    from sparse_mlp.topology_log import TopologyLog, load_topology
    from sparse_mlp.training import RandomStreams, TrainState
    model = SparseMLP([300, 300, 10], epsilon=30, rng=np.random.default_rng(0), n_threads=1)
    cfg = TrainConfig(hidden=[300], epsilon=30)
    ckdir = CheckpointDir(d + "/checkpoints", keep=2)
    topo = TopologyLog(d + "/topology.h5", model.sizes)
    topo.start(model)
    out = {"errors": []}
    def save(e):
        try:
            ckdir.save(cfg=cfg, model=model, state=TrainState(epoch=e, step=e),
                       streams=RandomStreams(0))
        except CheckpointError as exc:
            out["errors"].append(str(exc))
    for e in (1, 2):
        save(e)
        topo.append(e, model)
    fd = os.open(d + "/filler", os.O_WRONLY | os.O_CREAT)  # fill the disk to the last block
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    os.close(fd)
    out["topo_3"] = topo.append(3, model)
    out["topo_4"] = topo.append(4, model)
    save(3)                         # refused by the free-space check
    ckmod._check_space = lambda *a: None
    os.remove(d + "/filler")
    with open(d + "/filler", "wb") as fh:  # leave ~120 KB: the write itself fails
        fh.write(b"x" * (os.statvfs(d).f_bavail * 4096 - 120_000))
    save(4)
    out["checkpoints"] = sorted(os.listdir(d + "/checkpoints"))
    out["epochs"] = [load_checkpoint(p).state.epoch for p in ckdir.list()]
    out["topology"] = load_topology(d + "/topology.h5").epochs
    print("RESULT " + json.dumps(out))
""")


def test_a_real_full_disk(tmp_path):
    """A 1 MiB tmpfs, mounted in a private mount namespace (root, unshare):
    a full disk never crashes the process nor damages what is there."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a private tmpfs")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                           FULL_DISK, str(mnt)], capture_output=True, text=True, env=env,
                          timeout=120)
    if proc.returncode in (1, 77) and "RESULT" not in proc.stdout and (
            proc.returncode == 77 or "unshare" in proc.stderr):
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount namespaces): "
                    f"{proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr[-3000:]  # 139: SIGSEGV
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert "Traceback" not in proc.stderr and "HDF5-DIAG" not in proc.stderr, proc.stderr
    assert out["topo_3"] is False and out["topo_4"] is False
    assert proc.stderr.count("WARNING") == 1 and "snapshot 3" in proc.stderr
    assert out["topology"] == [0, 1, 2]
    assert len(out["errors"]) == 2 and all("No space left" in e for e in out["errors"])
    assert out["checkpoints"] == ["ckpt_e000001_s0000000001.h5", "ckpt_e000002_s0000000002.h5"]
    assert out["epochs"] == [1, 2]


# ---------------------------------------------------------------------- busy files
HOLD = ("import h5py, sys; f = h5py.File(sys.argv[1], {mode!r}); print('open', flush=True); "
        "sys.stdin.read(); f.close()")  # holds the file until its stdin closes


@pytest.fixture
def holder(monkeypatch):
    """Start a process that holds an HDF5 file open (and its lock)."""
    procs = []

    def start(path: Path, mode: str = "a"):
        if os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() == "FALSE" or \
                os.environ.get(ckmod.LOCKING_ENV, "").lower() in ("false", "0", "no", "off"):
            pytest.skip("HDF5 file locking is switched off in this environment")
        p = subprocess.Popen([sys.executable, "-c", HOLD.format(mode=mode), str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() == "open"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def release(p: subprocess.Popen) -> None:
    p.stdin.close()
    assert p.wait(timeout=20) == 0


def test_a_checkpoint_open_elsewhere_is_busy_not_damaged(tmp_path, holder):
    model = sparse_model()
    ckdir = CheckpointDir(tmp_path / "run" / "checkpoints", keep=3)
    save_epochs(ckdir, model, [1, 2])
    newest = ckdir.list()[-1]
    names = sorted(p.name for p in ckdir.folder.iterdir())
    p = holder(newest, "a")
    with pytest.raises(CheckpointBusyError, match=rf"{newest.name} is open in another process"):
        latest_checkpoint(ckdir.folder)
    with pytest.raises(CheckpointBusyError):
        ckdir.latest()
    with pytest.raises(CheckpointBusyError, match="another process"):
        resolve_checkpoint(tmp_path / "run")
    with pytest.raises(CheckpointBusyError, match=newest.name):
        load_checkpoint(newest)
    assert sorted(p.name for p in ckdir.folder.iterdir()) == names  # nothing renamed
    assert quarantined_checkpoints(tmp_path / "run") == []
    release(p)
    assert latest_checkpoint(ckdir.folder).state.epoch == 2


def test_a_checkpoint_left_marked_open_by_a_killed_writer_is_busy(tmp_path, holder):
    """A process killed while it had the file open for writing leaves HDF5's
    "open for write" mark in the superblock: not damaged, never quarantined."""
    model = sparse_model()
    ckdir = CheckpointDir(tmp_path / "checkpoints", keep=3)
    save_epochs(ckdir, model, [1, 2])
    newest = ckdir.list()[-1]
    p = holder(newest, "a")
    p.kill()
    p.wait()
    with pytest.raises(CheckpointBusyError, match=r"marked as open for writing.*h5clear -s"):
        latest_checkpoint(ckdir.folder)
    assert newest.exists() and quarantined_checkpoints(ckdir.folder) == []


def test_a_topology_log_open_elsewhere(tmp_path, holder, monkeypatch, caplog):
    model = sparse_model()
    path = tmp_path / "topology.h5"
    log_ = TopologyLog(path, model.sizes)
    log_.start(model)
    p = holder(path, "r")
    with pytest.raises(CheckpointBusyError):  # never moved aside as damaged
        TopologyLog(path, model.sizes).resume(0, model)
    monkeypatch.setattr(topology_log, "BUSY_WAITS", (0.01,))
    with caplog.at_level(logging.WARNING):
        assert log_.append(1, model) is False
    assert "another process" in caplog.text
    release(p)
    assert load_topology(path).epochs == [0]
    assert not path.with_name("topology.h5.damaged").exists()


# ---------------------------------------------------------------------- quarantine
def test_quarantined_checkpoints_are_listed_every_time(tmp_path):
    model = sparse_model()
    ckdir = CheckpointDir(tmp_path / "run" / "checkpoints", keep=3)
    save_epochs(ckdir, model, [1, 2])
    for p in ckdir.list():
        p.write_bytes(p.read_bytes()[:3000])
    (ckdir.folder / "notes.corrupt").write_text("x")
    assert latest_checkpoint(ckdir.folder) is None
    names = ["ckpt_e000001_s0000000010.h5.corrupt", "ckpt_e000002_s0000000020.h5.corrupt"]
    for where in (tmp_path / "run", ckdir.folder):
        assert [p.name for p in quarantined_checkpoints(where)] == names
    assert latest_checkpoint(ckdir.folder) is None  # a second look: still listed
    assert [p.name for p in ckdir.quarantined()] == names
    assert quarantined_checkpoints(tmp_path / "nothing") == []


# ---------------------------------------------------------------------- write_json
WRITER = textwrap.dedent("""
    import sys
    from sparse_mlp.report import write_json
    tag = sys.argv[2]
    for i in range(150):
        write_json(sys.argv[1], {"writer": tag, "i": i, "pad": [tag * 50] * 200})
""")


def test_concurrent_write_json_always_leaves_one_document(tmp_path):
    path = tmp_path / "config.json"
    write_json(path, {"writer": "start"})
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], env=env)
             for tag in "ab"]
    seen = set()
    while any(p.poll() is None for p in procs):
        doc = json.loads(path.read_text())  # never two documents glued, never half of one
        seen.add(doc["writer"])
        assert doc["writer"] == "start" or len(doc["pad"]) == 200
    assert [p.wait() for p in procs] == [0, 0]
    doc = json.loads(path.read_text())
    assert doc["writer"] in "ab" and doc["i"] == 149
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_write_json_failure_removes_its_temporary(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    write_json(path, {"a": 1, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1, "nan": None}

    def broken(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_json(path, {"a": 2})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    assert json.loads(path.read_text())["a"] == 1


# ---------------------------------------------------------------------- dense checkpoints
@pytest.fixture
def dense():
    streams = RandomStreams(4)
    model = DenseMLP([9, 7, 5, 3], activation="srelu", dropout=0.2, rng=streams.init,
                     n_threads=1)
    rng = np.random.default_rng(2)
    for lay in model.layers:
        lay.velocity[:] = rng.standard_normal(lay.velocity.size).astype(np.float32)
        lay.bias[:] = rng.standard_normal(lay.n_out).astype(np.float32)
        lay.bias_velocity[:] = rng.standard_normal(lay.n_out).astype(np.float32)
    for act in model.acts:
        act.velocity[:] = rng.standard_normal(act.velocity.shape).astype(np.float32)
    streams.shuffle.permutation(50)
    cfg = TrainConfig(hidden=[7, 5], activation="srelu", alpha=None, dropout=0.2)
    state = TrainState(epoch=2, step=14, history=[{"epoch": 0, "train_loss": 0.5},
                                                  {"epoch": 1, "train_loss": 0.4}])
    return cfg, model, state, streams


def assert_same_dense(a: DenseMLP, b: DenseMLP) -> None:
    assert isinstance(b, DenseMLP) and a.sizes == b.sizes
    assert (a.activation, a.alpha, a.init, a.output, a.dropout) == \
        (b.activation, b.alpha, b.init, b.output, b.dropout)
    for la, lb in zip(a.layers, b.layers):
        assert la.init == lb.init
        for name in ("W", "velocity", "bias", "bias_velocity"):
            x, y = getattr(la, name), getattr(lb, name)
            assert x.dtype == y.dtype == np.float32 and x.shape == y.shape
            assert np.array_equal(x.view(np.uint32), y.view(np.uint32)), name  # bit-exact
    for xa, xb in zip(a.acts, b.acts):
        assert (xa.name, xa.kind, xa.slope) == (xb.name, xb.kind, xb.slope)
        assert np.array_equal(xa.params, xb.params) and np.array_equal(xa.velocity, xb.velocity)


def test_dense_round_trip_is_bit_exact(tmp_path, dense):
    cfg, model, state, streams = dense
    path = save_checkpoint(tmp_path / "d.h5", cfg=cfg, model=model, state=state,
                           streams=streams, extra={"note": "dense"})
    with h5py.File(path, "r") as f:
        assert f["model"].attrs["kind"] == b"dense"
        assert f["model/layers/0/W"].shape == (7, 9) and f["model/layers/0/W"].fletcher32
    ck = load_checkpoint(path, n_threads=1)
    assert ck.kind == "dense" and ck.resumable and ck.cfg == cfg
    assert_same_dense(model, ck.model)
    assert ck.state.epoch == 2 and ck.state.history == state.history
    assert ck.streams().state() == streams.state() and ck.extra == {"note": "dense"}
    X = np.random.default_rng(3).standard_normal((20, 9)).astype(np.float32)
    assert np.array_equal(ck.model.predict(X), model.predict(X))
    assert isinstance(sparse_mlp.load(path).network, DenseMLP)


def test_dense_checkpoint_dir_and_load(tmp_path, dense):
    cfg, model, state, streams = dense
    ckdir = CheckpointDir(tmp_path / "run" / "checkpoints", keep=2)
    for e in (1, 2, 3):
        ckdir.save(cfg=cfg, model=model, state=TrainState(epoch=e, step=7 * e),
                   streams=streams)
    assert [p.name[:12] for p in ckdir.list()] == ["ckpt_e000002", "ckpt_e000003"]
    ck = ckdir.latest()
    assert ck.state.epoch == 3
    assert_same_dense(model, ck.model)
    assert_same_dense(model, sparse_mlp.load(tmp_path / "run").network)
    assert ck.kind == "dense" and ck.path == ckdir.list()[-1]
    assert_same_dense(model, load_checkpoint(ck.path).model)


def test_a_damaged_dense_checkpoint_is_refused(tmp_path, dense):
    cfg, model, state, streams = dense
    path = save_checkpoint(tmp_path / "d.h5", cfg=cfg, model=model, state=state,
                           streams=streams)
    with h5py.File(path, "a") as f:
        del f["model/layers/1/W"]
        f.create_dataset("model/layers/1/W", data=np.zeros((5, 6), np.float32))
    with pytest.raises(CheckpointError, match=r"d\.h5 .*layer 1 W is float32 \(5, 6\), "
                                              r"expected float32 \(5, 7\)"):
        load_checkpoint(path)
    model.layers[0].W[0, 0] = np.inf
    with pytest.raises(DivergenceError, match="not saving"):
        save_checkpoint(tmp_path / "e.h5", cfg=cfg, model=model, state=state, streams=streams)


def old_sparse_file(tmp_path: Path, source: str) -> Path:
    """A sparse checkpoint of the layout before dense models were stored: no
    /model ``kind`` attribute.  "fixture": tests/fixtures/ckpt_sparse_schema1_v0.h5,
    written by that code (``*.h5`` is git-ignored: add it with ``git add -f``);
    "rebuilt": one written now, with the attribute removed by plain h5py."""
    if source == "fixture":
        if not OLD_SPARSE.is_file():
            pytest.skip(f"{OLD_SPARSE} is missing (*.h5 files are git-ignored)")
        return OLD_SPARSE
    streams = RandomStreams(3)
    model = SparseMLP([6, 8, 5, 3], epsilon=2, activation="srelu", rng=streams.init,
                      n_threads=1)
    path = save_checkpoint(tmp_path / "old.h5", model=model, streams=streams,
                           cfg=TrainConfig(hidden=[8, 5], epsilon=2, activation="srelu",
                                           alpha=None, seed=3),
                           state=TrainState(epoch=1, step=4), extra={"note": "fixture"})
    with h5py.File(path, "a") as f:
        del f["model"].attrs["kind"]
    return path


@pytest.mark.parametrize("source", ["fixture", "rebuilt"])
def test_an_old_sparse_checkpoint_still_loads(tmp_path, source):
    path = old_sparse_file(tmp_path, source)
    with h5py.File(path, "r") as f:
        assert "kind" not in f["model"].attrs
        raw = [{k: f[f"model/layers/{li}/{k}"][()] for k in ckmod.LAYER_ARRAYS}
               for li in range(3)]
    ck = load_checkpoint(path, n_threads=1)
    assert ck.kind == "sparse" and isinstance(ck.model, SparseMLP) and ck.resumable
    assert ck.model.sizes == [6, 8, 5, 3] and ck.state.epoch == 1
    assert ck.extra == {"note": "fixture"}
    for layer, arrays in zip(ck.model.layers, raw):
        for k, a in arrays.items():
            assert np.array_equal(getattr(layer, k), a), k
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(path, folder / "ckpt_e000001_s0000000004.h5")
    assert list_checkpoints(folder) and latest_checkpoint(folder).state.step == 4
