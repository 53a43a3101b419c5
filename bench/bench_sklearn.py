"""SparseMLPRegressor / SparseMLPClassifier beside scikit-learn (issue 18).

1. scikit-learn's diabetes data (442 x 10): 5-fold R^2 (KFold, shuffle,
   seed 0; the same folds for every model) of SparseMLPRegressor with its
   defaults, Ridge and MLPRegressor (both after a StandardScaler; the sparse
   estimator standardises features and targets itself).
2. digits (1797 x 64): a stratified 75/25 split (seed 0); SparseMLPClassifier
   with early stopping beside MLPClassifier with early stopping (both
   validation_fraction 0.1, n_iter_no_change 10): held-out accuracy and fit
   time.

    python bench/bench_sklearn.py            # writes results/sklearn_comparison.{json,md}

One process, one thread for the sparse kernels (n_threads=1) and whatever
BLAS uses for scikit-learn.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from sklearn.datasets import load_diabetes, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold, cross_validate, train_test_split
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sparse_mlp import SparseMLPClassifier, SparseMLPRegressor  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "results"


def regression() -> list[dict]:
    X, y = load_diabetes(return_X_y=True)
    cv = KFold(5, shuffle=True, random_state=0)
    models = {
        "SparseMLPRegressor (defaults: hidden (100,), epsilon 10, All-ReLU 0.5, dropout 0.3, "
        "lr 0.001, momentum 0.9, weight_decay 2e-5, batch 32, 100 epochs)":
            SparseMLPRegressor(random_state=0),
        "SparseMLPRegressor, early_stopping=True, max_iter=300":
            SparseMLPRegressor(early_stopping=True, max_iter=300, random_state=0),
        "Ridge (alpha 1.0), StandardScaler": make_pipeline(StandardScaler(), Ridge()),
        "MLPRegressor (hidden (100,), adam, max_iter 1000), StandardScaler":
            make_pipeline(StandardScaler(), MLPRegressor(max_iter=1000, random_state=0)),
    }
    rows = []
    for name, model in models.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = cross_validate(model, X, y, cv=cv, scoring="r2")
        s = res["test_score"]
        rows.append({"model": name, "r2_mean": float(s.mean()), "r2_std": float(s.std()),
                     "r2_folds": s.tolist(), "fit_s_mean": float(res["fit_time"].mean())})
        print(f"diabetes  {name[:60]:60s} R^2 {s.mean():.3f} +- {s.std():.3f}", flush=True)
    return rows


def classification() -> list[dict]:
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    models = {
        "SparseMLPClassifier (hidden (100,), epsilon 10, All-ReLU 0.5, lr 0.01, dropout 0.3, "
        "early_stopping, max_iter 200)":
            SparseMLPClassifier(early_stopping=True, max_iter=200, random_state=0),
        "MLPClassifier (hidden (100,), adam, early_stopping, max_iter 200), StandardScaler":
            make_pipeline(StandardScaler(), MLPClassifier(early_stopping=True, max_iter=200,
                                                          random_state=0)),
    }
    rows = []
    for name, model in models.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(Xtr, ytr)
        fit_s = time.perf_counter() - t0
        est = model[-1] if hasattr(model, "steps") else model
        rows.append({"model": name, "test_accuracy": float(model.score(Xte, yte)),
                     "fit_s": fit_s, "epochs": int(est.n_iter_),
                     "best_validation_score": float(est.best_validation_score_)})
        print(f"digits    {name[:60]:60s} acc {rows[-1]['test_accuracy']:.4f} "
              f"fit {fit_s:.2f}s epochs {est.n_iter_}", flush=True)
    return rows


def main() -> None:
    reg, clf = regression(), classification()
    meta = {"command": "python bench/bench_sklearn.py", "python": platform.python_version(),
            "sklearn": sklearn.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "n_threads": 1}
    OUT.mkdir(exist_ok=True)
    (OUT / "sklearn_comparison.json").write_text(json.dumps(
        {"meta": meta, "diabetes_5fold_r2": reg, "digits_holdout": clf}, indent=2) + "\n")
    lines = ["# SparseMLPRegressor / SparseMLPClassifier beside scikit-learn", "",
             f"`{meta['command']}` (scikit-learn {meta['sklearn']}, one kernel thread)", "",
             "## diabetes, 5-fold R^2 (KFold, shuffle, seed 0; the same folds)", "",
             "| model | R^2 mean ± std | fit s / fold |", "|---|---|---|"]
    lines += [f"| {r['model']} | {r['r2_mean']:.3f} ± {r['r2_std']:.3f} | {r['fit_s_mean']:.2f} |"
              for r in reg]
    lines += ["", "## digits, stratified 75/25 split (seed 0), early stopping", "",
              "| model | test accuracy | fit s | epochs |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {100 * r['test_accuracy']:.2f}% | {r['fit_s']:.2f} | "
              f"{r['epochs']} |" for r in clf]
    (OUT / "sklearn_comparison.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT / 'sklearn_comparison.json'} and .md")


if __name__ == "__main__":
    main()
