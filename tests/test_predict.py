"""A trained model is a complete artifact: the checkpoint carries the
training standardisation, the feature names and the labels, so that
``sparse_mlp.load(run)`` predicts RAW features in the user's labels, in a
fresh process, and ``run_experiment.py --predict`` does the same from the
command line."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

import run_experiment
import sparse_mlp
from sparse_mlp.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from sparse_mlp.datasets import load_dataset
from sparse_mlp.errors import DatasetError
from sparse_mlp.preprocessing import MissingPreprocessingWarning, Preprocessing
from sparse_mlp.trained import TrainedModel

ROOT = Path(__file__).resolve().parents[1]
OLD_SPARSE = ROOT / "tests" / "fixtures" / "ckpt_sparse_schema1_v0.h5"  # before /preprocessing
NAMES = ["height", "weight", "age", "const"]
SCALE = np.array([1000.0, 0.001, 5.0, 0.0])
SHIFT = np.array([5e4, -3.0, 0.0, 1.5])


def _raw_data(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features in very different scales (and a constant one), string labels."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 4))
    y = np.where(Z[:, 0] + 0.5 * Z[:, 1] > 0, np.where(Z[:, 2] > 0, "cat", "dog"), "bird")
    return Z * SCALE + SHIFT, y


def _write_csv(path: Path, X: np.ndarray, y: np.ndarray | None, names=NAMES,
               label: str = "species") -> Path:
    with open(path, "w") as f:
        if names is not None:
            f.write(",".join([*names, *([label] if y is not None else [])]) + "\n")
        for i, row in enumerate(X):
            cells = [repr(float(v)) for v in row] + ([str(y[i])] if y is not None else [])
            f.write(",".join(cells) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run on a CSV with unscaled features and string labels."""
    tmp = tmp_path_factory.mktemp("predict")
    X, y = _raw_data()
    data = _write_csv(tmp / "train.csv", X, y)
    run = tmp / "run"
    code = run_experiment.main(["--dataset", str(data), "--hidden", "24,24", "--epsilon", "5",
                                "--epochs", "4", "--checkpoint-every", "1", "--threads", "1",
                                "--out", str(run), "--no-progress", "--quiet"])
    assert code == 0
    return {"csv": data, "run": run, "X": X, "y": y, "tmp": tmp}


def _main(capsys, *args: str) -> tuple[int, str]:
    code = run_experiment.main(list(args))
    cap = capsys.readouterr()
    return code, cap.out + cap.err


# ---------------------------------------------------------------------- datasets
def test_dataset_carries_its_preprocessing_and_it_reproduces_the_training_data(trained):
    std = load_dataset(trained["csv"])
    raw = load_dataset(trained["csv"], standardize=False)
    pre = std.preprocessing
    assert pre.feature_names == NAMES and pre.classes == ["bird", "cat", "dog"]
    assert pre.label_column == "species" and pre.task == "classification"
    assert pre.mean.dtype == np.float64 and pre.std.dtype == np.float64
    assert pre.constant.tolist() == [False, False, False, True]
    # bit for bit the training and test inputs of the run
    assert np.array_equal(pre.transform(raw.X_train), std.X_train)
    assert np.array_equal(pre.transform(raw.X_test), std.X_test)
    assert "_feature_names" not in std.info  # config.json stays small


# ---------------------------------------------------------------------- checkpoints
def test_every_checkpoint_of_the_run_carries_the_record(trained):
    ckpts = list_checkpoints(trained["run"] / "checkpoints")
    assert len(ckpts) >= 2
    expected = load_dataset(trained["csv"]).preprocessing
    for p in ckpts:
        assert load_checkpoint(p).preprocessing == expected
    with h5py.File(ckpts[-1], "r") as f:
        g = f["preprocessing"]
        assert g["mean"].dtype == np.float64 and g["mean"].fletcher32
        assert g["constant"].dtype == np.uint8 and g["meta"].fletcher32
        meta = json.loads(g["meta"][()].tobytes())
        assert meta["feature_names"] == NAMES and meta["classes"] == ["bird", "cat", "dog"]


def test_a_record_round_trips_with_regression_fields(tmp_path):
    from sparse_mlp.model import SparseMLP

    net = SparseMLP([3, 4, 2], epsilon=2, rng=np.random.default_rng(0), n_threads=1)
    pre = Preprocessing(3, mean=[1.0, 2.0, 3.0], std=[1.0, 0.0, 2.0], feature_names=None,
                        classes=[False, True], label_column=-1,
                        target_mean=[0.5], target_std=[2.0])
    path = save_checkpoint(tmp_path / "m.h5", cfg=None, model=net, state=None, streams=None,
                           preprocessing=pre)
    back = load_checkpoint(path).preprocessing
    assert back == pre and back.constant.tolist() == [False, True, False]
    assert back.classes == [False, True] and back.label_column == -1
    assert back.targets(np.array([1.0])).tolist() == [2.5]


# ---------------------------------------------------------------------- load() in a fresh process
FRESH = r"""
import json, sys, warnings
import numpy as np
warnings.simplefilter("error")
import sparse_mlp
from sparse_mlp.datasets import load_dataset
run, data = sys.argv[1], sys.argv[2]
m = sparse_mlp.load(run)
std = load_dataset(data)                     # what the run trained and evaluated on
raw = load_dataset(data, standardize=False)  # the same split, raw features
classes = np.asarray(std.classes)
out = {}
for part in ("train", "test"):
    X_raw, X_std = getattr(raw, "X_" + part), getattr(std, "X_" + part)
    y_ids = getattr(std, "y_" + part)
    pred = m.predict(X_raw)
    out[part] = {
        "same": bool(np.array_equal(pred, classes[m.network.predict(X_std)])),
        "kind": pred.dtype.kind,
        "score": m.score(X_raw, classes[y_ids]),
        "network_acc": m.network.evaluate(X_std, y_ids)[1],
        "proba_same": bool(np.array_equal(m.predict_proba(X_raw),
                                          m.network.predict_proba(X_std))),
    }
out["classes"] = m.classes_.tolist()
out["path"] = str(m.path)
print(json.dumps(out))
"""


def test_load_in_a_fresh_process_predicts_raw_features_in_the_users_labels(trained):
    res = subprocess.run([sys.executable, "-c", FRESH, str(trained["run"]), str(trained["csv"])],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["classes"] == ["bird", "cat", "dog"]
    assert Path(out["path"]) == list_checkpoints(trained["run"] / "checkpoints")[-1]
    summary = json.loads((trained["run"] / "summary.json").read_text())
    for part in ("train", "test"):
        assert out[part]["same"] and out[part]["proba_same"], part
        assert out[part]["kind"] == "U"  # strings stay strings
        assert out[part]["score"] == out[part]["network_acc"]
    assert out["test"]["score"] == summary["final_test_acc"]  # the run's own evaluation


# ---------------------------------------------------------------------- inputs
def test_dataframe_columns_by_name_missing_column_and_wrong_count(trained):
    pd = pytest.importorskip("pandas")
    m = sparse_mlp.load(trained["run"])
    X = trained["X"]
    df = pd.DataFrame(X, columns=NAMES)
    expected = m.predict(X)
    shuffled = df[["const", "age", "height", "weight"]].assign(species=trained["y"])
    assert np.array_equal(m.predict(shuffled), expected)  # by name; extra columns ignored
    assert np.array_equal(m.predict_proba(shuffled), m.predict_proba(X))
    with pytest.raises(DatasetError, match=r"lacks 1 of the 4 feature columns.*'weight'"):
        m.predict(df.drop(columns=["weight"]))
    with pytest.raises(DatasetError, match=r"has 3 features, the model was trained on 4"):
        m.predict(X[:, :3])
    with pytest.raises(DatasetError, match="1-D"):
        m.predict(X[0])
    bad = X[:5].copy()
    bad[2, 1] = np.nan
    with pytest.raises(DatasetError, match=r"sample 2, feature 1 \('weight'\)"):
        m.predict(bad)


def test_sparse_input_is_taken_block_by_block(trained):
    m = sparse_mlp.load(trained["run"])
    X = trained["X"].copy()
    X[::3, 2] = 0.0
    expected = m.predict(X)
    for fmt in ("csr", "csc", "coo"):
        Xs = sp.csr_matrix(X).asformat(fmt)
        assert np.array_equal(m.predict(Xs, batch_size=7), expected)
        assert np.array_equal(m.preprocessing.transform(Xs), m.preprocessing.transform(X))
    blocks = list(m.preprocessing.iter_blocks(sp.csr_matrix(X), 50))
    assert [s for s, _ in blocks] == [0, 50, 100, 150, 200]
    assert max(b.shape[0] for _, b in blocks) == 50


def test_labels_read_as_text_match_numeric_classes():
    pre = Preprocessing(2, classes=[0, 1, 5])
    assert pre.class_ids(np.array(["5", "1", "7", "0.0"])).tolist() == [2, 1, -1, 0]
    assert pre.class_ids([5, 0]).tolist() == [2, 0]
    assert pre.labels(np.array([2, 0])).tolist() == [5, 0]


# ---------------------------------------------------------------------- the CLI
def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_cli_predict_writes_labels_and_probabilities_and_prints_the_accuracy(trained, capsys):
    out = trained["tmp"] / "pred.csv"
    code, text = _main(capsys, "--predict", str(trained["csv"]), "--model", str(trained["run"]),
                       "--out", str(out), "--threads", "1")
    assert code == 0, text
    header, rows = _read_csv(out)
    assert header == ["prediction", "bird", "cat", "dog"]
    assert len(rows) == len(trained["y"])
    m = sparse_mlp.load(trained["run"])
    assert [r[0] for r in rows] == m.predict(trained["X"]).tolist()
    proba = np.array([[float(v) for v in r[1:]] for r in rows])
    assert np.allclose(proba, m.predict_proba(trained["X"]), atol=1e-6)
    acc = m.score(trained["X"], trained["y"])
    assert f"accuracy {100 * acc:.2f}% on {len(rows)} labelled samples" in text
    assert "'species'" in text

    # .npz output; a file without the label column, columns in another order
    Xr = trained["X"][:, [3, 1, 0, 2]]
    nolabel = _write_csv(trained["tmp"] / "new.csv", Xr, None, names=[NAMES[i] for i in
                                                                     (3, 1, 0, 2)])
    npz = trained["tmp"] / "pred.npz"
    code, text = _main(capsys, "--predict", str(nolabel), "--model", str(trained["run"]),
                       "--out", str(npz))
    assert code == 0, text
    assert "accuracy" not in text
    with np.load(npz, allow_pickle=False) as z:
        assert z["prediction"].tolist() == [r[0] for r in rows]
        assert z["probabilities"].shape == (len(rows), 3)
        assert z["classes"].tolist() == ["bird", "cat", "dog"]


def test_cli_predict_reads_npz_libsvm_and_headerless_files(trained, capsys):
    from sklearn.datasets import dump_svmlight_file

    m = sparse_mlp.load(trained["run"])
    X, y = trained["X"][:60], trained["y"][:60]
    expected = m.predict(X).tolist()
    tmp = trained["tmp"]
    np.savez(tmp / "new.npz", X=X, y=y)
    ids = np.searchsorted(["bird", "cat", "dog"], y)
    dump_svmlight_file(X, ids, str(tmp / "new.svm"), zero_based=False)
    _write_csv(tmp / "plain.csv", X, y, names=None)  # no header: the label is the last column
    for src in ("new.npz", "new.svm", "plain.csv"):
        out = tmp / f"{src}.out.csv"
        code, text = _main(capsys, "--predict", str(tmp / src), "--model", str(trained["run"]),
                           "--out", str(out))
        assert code == 0, (src, text)
        assert [r[0] for r in _read_csv(out)[1]] == expected, src
        assert "accuracy" in text, src
        # libsvm labels are numbers, not the run's labels: each counts as unknown (wrong)
        assert ("60 labels the model never saw" in text) == (src == "new.svm"), (src, text)


def test_cli_predict_refuses_other_flags_and_bad_input(trained, capsys):
    base = ["--predict", str(trained["csv"]), "--model", str(trained["run"])]
    code, text = _main(capsys, *base, "--epochs", "3", "--lr", "0.1")
    assert code == 2 and "--predict takes --model" in text and "--epochs, --lr" in text
    code, text = _main(capsys, "--predict", str(trained["csv"]))
    assert code == 2 and "needs --model" in text
    code, text = _main(capsys, "--model", str(trained["run"]))
    assert code == 2 and "add --predict" in text
    short = _write_csv(trained["tmp"] / "short.csv", trained["X"][:5, :3], None, names=None)
    code, text = _main(capsys, "--predict", str(short), "--model", str(trained["run"]),
                       "--out", str(trained["tmp"] / "x.csv"))
    assert code == 2 and "3 feature columns, the model was trained on 4" in text
    renamed = _write_csv(trained["tmp"] / "renamed.csv", trained["X"][:5], None,
                         names=["height", "WEIGHT", "age", "const"])
    code, text = _main(capsys, "--predict", str(renamed), "--model", str(trained["run"]),
                       "--out", str(trained["tmp"] / "x.csv"))
    assert code == 2 and "lacks 1 of the 4 feature columns" in text and "'weight'" in text


# ---------------------------------------------------------------------- old checkpoints, best.h5
def test_a_checkpoint_from_before_loads_with_a_warning(tmp_path, capsys):
    with pytest.warns(MissingPreprocessingWarning, match="no preprocessing record"):
        m = sparse_mlp.load(OLD_SPARSE)
    assert isinstance(m, TrainedModel) and m.preprocessing is None and m.classes_ is None
    assert load_checkpoint(OLD_SPARSE).preprocessing is None
    X = np.random.default_rng(0).standard_normal((10, m.sizes[0])).astype(np.float32)
    assert np.array_equal(m.predict(X), m.network.predict(X))  # class ids, as before
    assert m.layers is m.network.layers  # the network's attributes, as before
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",")
    code, text = _main(capsys, "--predict", str(data), "--model", str(OLD_SPARSE),
                       "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "no preprocessing record" in text


def test_load_prefers_best_h5_in_a_run_folder(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"] / "checkpoints", run / "checkpoints")
    ckpts = list_checkpoints(run / "checkpoints")
    shutil.copy(ckpts[0], run / "checkpoints" / "best.h5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sparse_mlp.load(run).path.name == "best.h5"
        assert sparse_mlp.load(run, which="last").path == ckpts[-1]
    (run / "checkpoints" / "best.h5").write_bytes(b"damaged")
    assert sparse_mlp.load(run).path == ckpts[-1]  # a damaged best.h5: the newest instead


def test_best_h5_of_a_validation_run_carries_the_record(trained, tmp_path):
    run = tmp_path / "val"
    code = run_experiment.main(["--dataset", str(trained["csv"]), "--hidden", "16",
                                "--epochs", "2", "--threads", "1", "--val-fraction", "0.2",
                                "--out", str(run), "--no-progress", "--quiet"])
    assert code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = sparse_mlp.load(run)
    assert m.path.name == "best.h5"
    assert m.preprocessing.feature_names == NAMES and m.classes_.tolist() == ["bird", "cat", "dog"]
    assert m.predict(trained["X"][:5]).dtype.kind == "U"
