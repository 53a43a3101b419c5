"""``--alpha auto``: the All-ReLU slope from the skewness of the inputs.

The paper (section 5.2) proposes to pick All-ReLU's slope alpha from "the
observed skewness of the input data distribution" and leaves the rule open.
This module fixes one, concrete and cheap:

1. s = the MEDIAN over the non-constant input features of each feature's
   sample skewness g1 = m3 / m2**1.5 (central moments of the training set,
   float64; rows subsampled with a fixed stride beyond ``MAX_ROWS``).  The
   median, not the mean: image-like data has border features that are
   almost always 0 and have enormous skewness, and a few of those must not
   decide the slope of the whole network.  (g1 does not change under the
   engine's standardisation, so raw or standardised inputs give the same s.)

2. alpha = clip(ALPHA_SYMMETRIC * exp(-s), ALPHA_MIN, ALPHA_MAX)
        = clip(0.5 * exp(-s), 0.05, 0.75).

Reading of the rule: All-ReLU passes the positive side unchanged and the
negative side scaled by alpha (folded on odd hidden layers).  Symmetric
inputs (s = 0; Madelon, whose grid-searched alpha is 0.5) get the middle of
the paper's grid range.  Right-skewed inputs (s > 0: a short negative side
that holds little of the variance, a long positive tail, as in Higgs'
momenta, grid alpha 0.05) get a smaller slope, closer to ReLU; left-skewed
inputs (s < 0: the long tail, and the information, on the negative side)
get a larger one.  exp makes the rule symmetric in log-space,
alpha(s) * alpha(-s) = 0.25; the clip keeps alpha inside the range the
paper's grid searches selected (0.05 .. 0.75).  The rule is a heuristic,
not a law: the README reports how it compares with the grid-searched
alpha on the data available here.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import scipy.sparse as sp

log = logging.getLogger(__name__)

ALPHA_SYMMETRIC = 0.5
ALPHA_MIN = 0.05
ALPHA_MAX = 0.75
MAX_ROWS = 20000


def feature_skewness(X, max_rows: int = MAX_ROWS) -> np.ndarray:
    """Sample skewness g1 of every non-constant column of X (n_samples,
    n_features), dense or scipy.sparse (never densified); float64 array of
    the non-constant features only."""
    n = X.shape[0]
    if n == 0:
        return np.empty(0)
    step = max(1, math.ceil(n / max_rows))
    Xs = X[::step]
    m = Xs.shape[0]
    if sp.issparse(Xs):
        Xs = sp.csr_matrix(Xs, dtype=np.float64)
        s1 = np.asarray(Xs.sum(axis=0)).ravel() / m
        s2 = np.asarray(Xs.multiply(Xs).sum(axis=0)).ravel() / m
        s3 = np.asarray(Xs.multiply(Xs).multiply(Xs).sum(axis=0)).ravel() / m
        mu2 = s2 - s1 * s1
        mu3 = s3 - 3.0 * s1 * s2 + 2.0 * s1 ** 3
        scale2 = s2
    else:
        Xd = np.asarray(Xs, dtype=np.float64)
        c = Xd - Xd.mean(axis=0)
        mu2 = (c * c).mean(axis=0)
        mu3 = (c * c * c).mean(axis=0)
        scale2 = (Xd * Xd).mean(axis=0)
    ok = np.isfinite(mu2) & np.isfinite(mu3) & (mu2 > 1e-12 * np.maximum(scale2, 1e-300))
    return mu3[ok] / mu2[ok] ** 1.5


def input_skewness(X, max_rows: int = MAX_ROWS) -> float:
    """The pooled skewness s of the rule: median of the per-feature g1
    (0 when every feature is constant)."""
    g = feature_skewness(X, max_rows)
    return float(np.median(g)) if g.size else 0.0


def alpha_from_skewness(s: float) -> float:
    """clip(0.5 * exp(-s), 0.05, 0.75)."""
    return float(min(ALPHA_MAX, max(ALPHA_MIN, ALPHA_SYMMETRIC * math.exp(-s))))


def auto_alpha(X, max_rows: int = MAX_ROWS) -> float:
    """The All-ReLU slope the rule picks for the training inputs X."""
    return alpha_from_skewness(input_skewness(X, max_rows))


def resolve_alpha(cfg, X):
    """``cfg`` with ``alpha`` set by the rule when ``cfg.alpha_auto``
    (otherwise ``cfg`` unchanged)."""
    if not getattr(cfg, "alpha_auto", False):
        return cfg
    s = input_skewness(X)
    alpha = alpha_from_skewness(s)
    log.info("--alpha auto: median input skewness %.3f -> All-ReLU alpha %.3f", s, alpha)
    return cfg.replace(alpha=alpha)
