"""``--augment cifar``: random shifts and horizontal flips of CIFAR-10 images
in the data path (the authors' parallel script applies them by default).

The training array is never copied or changed: the gather of a mini-batch
(``spmm.gather_augment``) writes each image shifted and flipped straight into
the feature-major batch buffer.  The draws of the sample at position b of a
step are a counter-based hash of (seed, step, b) (``spmm.augment_key``), so
they do not depend on the thread count, and a run resumed mid-epoch draws
exactly the bits of an uninterrupted one.

What the authors ran (``wasap_sgd/train/data.py``): Keras' ImageDataGenerator
with ``width_shift_range=0.1``, ``height_shift_range=0.1`` (up to 3.2 pixels of
a 32-pixel side, continuous, bilinear), fill mode 'nearest' (the default),
``horizontal_flip=True`` (probability 1/2) -- and ``rotation_range=10``.  Here:
integer shifts of up to :data:`MAX_SHIFT` = 3 pixels each way, uniform, fill
'nearest', flip with probability 1/2; no rotation.  As theirs, it acts on
the standardised features (the authors standardise per pixel, then augment).
"""

from __future__ import annotations

import numpy as np

from .config import AUGMENTS  # (the choices live with the other settings)
from .errors import ConfigError
from .kernels import spmm, spmm_for

# CIFAR-10's layout in this repository (datasets/cifar10.py): each row is 1024
# red, 1024 green, 1024 blue values, each channel row-major 32 x 32
CHANNELS, HEIGHT, WIDTH = 3, 32, 32
MAX_SHIFT = 3  # pixels: 0.1 x 32, rounded down (Keras: up to 3.2, interpolated)


def check_augment(augment: str | None, n_features: int) -> None:
    """Refuse ``augment`` for data that are not 3 x 32 x 32 images."""
    if augment is None:
        return
    if augment not in AUGMENTS:
        raise ConfigError(f"--augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if n_features != CHANNELS * HEIGHT * WIDTH:
        raise ConfigError(
            f"--augment {augment} shifts and flips 32 x 32 colour images (3072 features, "
            f"channel-planar as CIFAR-10's files); these data have {n_features} features: "
            f"drop --augment")


def gather_batch(X: np.ndarray, rows: np.ndarray, out: np.ndarray, augment: str | None,
                 seed: int, step: int, n_threads: int = 1) -> None:
    """A training mini-batch into ``out`` (features, B): the samples ``rows``
    of the sample-major ``X``, augmented under ``augment`` with the draws of
    (``seed``, ``step``); without ``augment`` exactly ``gather_columns``."""
    if augment is None:
        spmm_for(n_threads).gather_columns(X, rows, out, n_threads=n_threads)
        return
    spmm_for(n_threads).gather_augment(X, rows, out, spmm.augment_key(seed, step), CHANNELS,
                                       HEIGHT, WIDTH, MAX_SHIFT, n_threads=n_threads)


def augment_reference(X: np.ndarray, rows: np.ndarray, seed: int, step: int,
                      channels: int = CHANNELS, height: int = HEIGHT, width: int = WIDTH,
                      max_shift: int = MAX_SHIFT) -> np.ndarray:
    """The slow NumPy twin of :func:`gather_batch` with ``augment``: each
    image edge-padded by ``max_shift`` (np.pad 'edge' = fill 'nearest'),
    cropped at the drawn shift, flipped; returns float32 (features, B)."""
    from .kernels import spmm

    B = len(rows)
    dy, dx, flip = (np.empty(B, np.int32) for _ in range(3))
    spmm.augment_draws(spmm.augment_key(seed, step), max_shift, dy, dx, flip)
    s = max_shift
    out = np.empty((channels * height * width, B), dtype=np.float32)
    for b, r in enumerate(rows):
        img = X[r].reshape(channels, height, width)
        pad = np.pad(img, ((0, 0), (s, s), (s, s)), mode="edge")
        crop = pad[:, s + dy[b]:s + dy[b] + height, s + dx[b]:s + dx[b] + width]
        if flip[b]:
            crop = crop[:, :, ::-1]
        out[:, b] = crop.reshape(-1)
    return out
