"""--augment cifar: the augmented gather against its NumPy twin, threads,
the draws, the refusal of non-images, and exact mid-epoch resume."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from conftest import StopAfter

from sparse_mlp.augment import MAX_SHIFT, augment_reference, check_augment, gather_batch
from sparse_mlp.checkpoint import load_checkpoint, save_checkpoint
from sparse_mlp.config import TrainConfig
from sparse_mlp.errors import ConfigError
from sparse_mlp.kernels import spmm
from sparse_mlp.model import SparseMLP
from sparse_mlp.training import PreemptedError, RandomStreams, Trainer


def images(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3072), dtype=np.float32)


def test_gather_augment_equals_numpy_reference():
    X = images(40)
    rows = np.random.default_rng(1).permutation(40)[:32].astype(np.int64)
    for step in (0, 1, 977):
        out = np.full((3072, rows.size), np.nan, dtype=np.float32)
        gather_batch(X, rows, out, "cifar", 7, step)
        np.testing.assert_array_equal(out, augment_reference(X, rows, 7, step))
    # without --augment: exactly gather_columns
    plain = np.empty((3072, rows.size), dtype=np.float32)
    gather_batch(X, rows, plain, None, 7, 0)
    np.testing.assert_array_equal(plain, X[rows].T)


def test_gather_augment_small_images_and_no_shift():
    # another image shape through the kernel directly: 2 channels of 5 x 4
    X = images(6)[:, :40].copy()
    rows = np.arange(6, dtype=np.int64)
    key = spmm.augment_key(3, 5)
    out = np.empty((40, 6), dtype=np.float32)
    spmm.gather_augment(X, rows, out, key, 2, 5, 4, 2)
    np.testing.assert_array_equal(out, augment_reference(X, rows, 3, 5, 2, 5, 4, 2))
    # max_shift 0: flips only
    spmm.gather_augment(X, rows, out, key, 2, 5, 4, 0)
    dy, dx, fl = (np.empty(6, np.int32) for _ in range(3))
    spmm.augment_draws(key, 0, dy, dx, fl)
    assert not dy.any() and not dx.any()
    imgs = X.reshape(6, 2, 5, 4)
    want = np.where(fl[:, None, None, None] == 1, imgs[..., ::-1], imgs).reshape(6, 40).T
    np.testing.assert_array_equal(out, want)


def test_gather_augment_identical_for_1_and_2_threads():
    X = images(64)
    rows = np.random.default_rng(2).permutation(64).astype(np.int64)
    old = spmm.min_parallel_work()
    spmm.min_parallel_work(0)
    try:
        a = np.empty((3072, 64), dtype=np.float32)
        b = np.empty_like(a)
        gather_batch(X, rows, a, "cifar", 11, 3, n_threads=1)
        gather_batch(X, rows, b, "cifar", 11, 3, n_threads=2)
    finally:
        spmm.min_parallel_work(old)
    np.testing.assert_array_equal(a, b)


def test_draws_cover_the_shifts_and_flip_half():
    n = 20000
    dy, dx, fl = (np.empty(n, np.int32) for _ in range(3))
    spmm.augment_draws(spmm.augment_key(0, 0), MAX_SHIFT, dy, dx, fl)
    for d in (dy, dx):
        counts = np.bincount(d + MAX_SHIFT, minlength=2 * MAX_SHIFT + 1)
        assert counts.size == 2 * MAX_SHIFT + 1
        assert np.all(np.abs(counts / n - 1 / 7) < 0.01)
    assert abs(fl.mean() - 0.5) < 0.015
    assert abs(np.corrcoef(dy, dx)[0, 1]) < 0.03
    # other steps, other draws; the key is not a dropout key
    dy2 = np.empty(n, np.int32)
    spmm.augment_draws(spmm.augment_key(0, 1), MAX_SHIFT, dy2, dx, fl)
    assert (dy2 != dy).mean() > 0.8
    from sparse_mlp.kernels import activation
    assert spmm.augment_key(0, 0) != activation.dropout_key(0, 0, 0)


def test_refused_for_data_that_are_not_cifar_images():
    check_augment(None, 500)
    check_augment("cifar", 3072)
    with pytest.raises(ConfigError, match="32 x 32 colour images"):
        check_augment("cifar", 500)
    with pytest.raises(ConfigError, match="invalid configuration"):
        TrainConfig(augment="mnist").validate()
    X = np.zeros((16, 500), np.float32)
    y = np.zeros(16, np.int32)
    cfg = TrainConfig(hidden=[4], epsilon=1, batch_size=8, augment="cifar")
    model = SparseMLP([500, 4, 2], epsilon=1, rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="drop --augment"):
        Trainer(cfg, model, X, y, X, y, RandomStreams(0))


# ---------------------------------------------------------------------- exact resume
def _data():
    rng = np.random.default_rng(5)
    X = images(80, 4)
    y = rng.integers(0, 3, 80).astype(np.int32)
    return SimpleNamespace(X_train=X[:64], y_train=y[:64], X_test=X[64:], y_test=y[64:])


def _cfg(augment="cifar"):
    return TrainConfig(hidden=[16], epsilon=2, epochs=3, batch_size=8, lr=0.01, dropout=0.2,
                       alpha=0.6, augment=augment, checkpoint_every=0, eval_every=1)


def _trainer(cfg, data, state=None, streams=None, model=None, stop=None, on_checkpoint=None):
    if streams is None:
        streams = RandomStreams(cfg.seed)
        model = SparseMLP([3072, 16, 3], epsilon=cfg.epsilon, activation=cfg.activation,
                          alpha=cfg.alpha, dropout=cfg.dropout, rng=streams.init, n_threads=1)
    return Trainer(cfg, model, data.X_train, data.y_train, data.X_test, data.y_test, streams,
                   state=state, stop=stop, on_checkpoint=on_checkpoint)


def _same(a: SparseMLP, b: SparseMLP) -> None:
    for la, lb in zip(a.layers, b.layers):
        for name in ("indptr", "indices", "data", "velocity", "bias", "bias_velocity"):
            np.testing.assert_array_equal(getattr(la, name), getattr(lb, name), err_msg=name)


def test_resume_mid_epoch_with_augmentation_is_bit_identical(tmp_path):
    data = _data()
    cfg = _cfg()
    straight = _trainer(cfg, data)
    straight.run(progress=False)
    plain = _trainer(_cfg(None), data)
    plain.run(progress=False)
    assert not np.array_equal(plain.model.layers[0].data, straight.model.layers[0].data)

    path = tmp_path / "stop.h5"

    def on_checkpoint(trainer, reason):
        return save_checkpoint(path, cfg=cfg, model=trainer.model, state=trainer.state,
                               streams=trainer.streams_state())

    # 8 batches per epoch, one poll after each and one at each epoch's end
    first = _trainer(cfg, data, stop=StopAfter(12), on_checkpoint=on_checkpoint)
    with pytest.raises(PreemptedError, match="after batch 4/8 of epoch 2"):
        first.run(progress=False)
    ck = load_checkpoint(path)
    assert ck.cfg.augment == "cifar" and ck.state.batch == 4
    second = _trainer(ck.cfg, data, state=ck.state, streams=ck.streams(), model=ck.model)
    second.run(progress=False)
    _same(second.model, straight.model)
    assert [r["train_loss"] for r in second.state.history] == [
        r["train_loss"] for r in straight.state.history]
