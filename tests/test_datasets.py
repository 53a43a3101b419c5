"""Tests of the dataset layer: every loader on small files in the real formats.

Every file is written by the test itself into ``tmp_path``; the only real
dataset used is Madelon from ``../shared/data/madelon`` (skipped when absent).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sparse_mlp import datasets
from sparse_mlp.datasets import (
    PAPER_DATASETS,
    Dataset,
    default_data_dir,
    load_dataset,
    make_classification_float32,
    read_idx,
    standardize_inplace,
)
from sparse_mlp.errors import ConfigError, DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MADELON_DIR = Path(os.environ.get("SPARSE_MLP_MADELON_DIR", SHARED_DATA / "madelon"))
needs_madelon = pytest.mark.skipif(
    not (MADELON_DIR / "madelon_train.data").is_file(),
    reason=f"the UCI Madelon files are not in {MADELON_DIR} (a plain clone does not have them; "
           "set SPARSE_MLP_MADELON_DIR to run these tests)")

MADELON_FILES = ("madelon_train.data", "madelon_train.labels", "madelon_valid.data",
                 "madelon_valid.labels")


# ---------------------------------------------------------------------------
# Writers of tiny files in the real formats
# ---------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, magic_type: int = 0x08, gz: bool = True) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.tobytes()
    if gz:
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_fashion(directory: Path, n_train: int = 30, n_test: int = 10, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tr = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    te = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    ytr = np.arange(n_train, dtype=np.uint8) % 10
    yte = np.arange(n_test, dtype=np.uint8) % 10
    directory.mkdir(parents=True, exist_ok=True)
    write_idx(directory / "train-images-idx3-ubyte.gz", tr)
    write_idx(directory / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(directory / "t10k-images-idx3-ubyte.gz", te)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", yte)
    return tr, ytr, te, yte


def _tar_add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar(path: Path, rows: int = 4, test_rows: int = 5, skip: str | None = None,
                evil: bool = False) -> tuple[np.ndarray, list, np.ndarray, list]:
    rng = np.random.default_rng(1)
    data, labels = [], []
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            d = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
            lab = [int((i * rows + r) % 10) for r in range(rows)]
            data.append(d)
            labels.extend(lab)
            name = f"cifar-10-batches-py/data_batch_{i}"
            if name != skip:
                obj = {b"batch_label": b"training batch", b"data": d, b"labels": lab}
                _tar_add(tar, name, pickle.dumps(obj, protocol=2))
        dt = rng.integers(0, 256, size=(test_rows, 3072), dtype=np.uint8)
        lt = [r % 10 for r in range(test_rows)]
        if evil:
            payload = pickle.dumps(EvilPayload(), protocol=2)
        else:
            payload = pickle.dumps({b"data": dt, b"labels": lt}, protocol=2)
        if skip != "cifar-10-batches-py/test_batch":
            _tar_add(tar, "cifar-10-batches-py/test_batch", payload)
        names = [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                      "frog", "horse", "ship", "truck")]
        _tar_add(tar, "cifar-10-batches-py/batches.meta",
                 pickle.dumps({b"label_names": names}, protocol=2))
    return np.concatenate(data), labels, dt, lt


class EvilPayload:
    """Unpickling this would call os.system; the loader must refuse it."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def higgs_rows(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((n, 29))
    rows[:, 0] = np.arange(n) % 2
    return rows


def write_higgs(path: Path, rows: np.ndarray) -> None:
    text = "\n".join(",".join(f"{v:.18e}" for v in row) for row in rows) + "\n"
    path.write_bytes(gzip.compress(text.encode()))


def write_geo(path: Path, n_probes: int = 6, per_class: int = 4, with_label: bool = True,
              bad_value: bool = False, end: bool = True) -> tuple[np.ndarray, list[str]]:
    classes = ["T-ALL", "CLL", "AML with t(8;21)"]
    labels = [c for c in classes for _ in range(per_class)]
    n = len(labels)
    rng = np.random.default_rng(2)
    values = rng.uniform(2, 14, size=(n_probes, n)).round(4)
    gsm = [f"GSM{330000 + i}" for i in range(n)]
    lines = ['!Series_title\t"Synthetic MILE-like series"',
             '!Series_geo_accession\t"GSE13159"',
             "!Sample_title\t" + "\t".join(f'"sample {i}"' for i in range(n)),
             "!Sample_geo_accession\t" + "\t".join(f'"{g}"' for g in gsm),
             "!Sample_characteristics_ch1\t" + "\t".join('"tissue: bone marrow"' for _ in gsm)]
    if with_label:
        lines.append("!Sample_characteristics_ch1\t"
                     + "\t".join(f'"leukemia class: {c}"' for c in labels))
    lines.append("!series_matrix_table_begin")
    lines.append('"ID_REF"\t' + "\t".join(f'"{g}"' for g in gsm))
    for p in range(n_probes):
        cells = [f"{v:g}" for v in values[p]]
        if bad_value and p == 3:
            cells[2] = "null"
        lines.append(f'"{1000 + p}_at"\t' + "\t".join(cells))
    if end:
        lines.append("!series_matrix_table_end")
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return values.T.astype(np.float32), labels


def assert_dataset_contract(ds: Dataset) -> None:
    for X in (ds.X_train, ds.X_test):
        assert X.dtype == np.float32 and X.ndim == 2 and X.flags["C_CONTIGUOUS"]
        assert np.isfinite(X).all()
    for y in (ds.y_train, ds.y_test):
        assert y.dtype == np.int32 and y.ndim == 1
        assert y.min() >= 0 and y.max() < ds.n_classes
    assert ds.X_train.shape == (ds.y_train.shape[0], ds.n_features)
    assert ds.X_test.shape == (ds.y_test.shape[0], ds.n_features)
    assert set(np.unique(ds.y_train)) == set(range(ds.n_classes))
    json.dumps(ds.info)
    json.dumps(ds.classes)


# ---------------------------------------------------------------------------
# Built-in datasets: digits, synthetic
# ---------------------------------------------------------------------------


def test_digits_default_split_and_standardisation():
    ds = load_dataset("digits")
    assert_dataset_contract(ds)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (1347, 450, 64, 10)
    assert ds.classes == list(range(10))
    mean, std = ds.X_train.mean(axis=0), ds.X_train.std(axis=0)
    constant = std < 1e-6
    assert constant.any()  # digits has always-blank pixels
    assert np.allclose(mean, 0, atol=1e-5)
    assert np.allclose(std[~constant], 1, atol=1e-4)
    assert (ds.X_train[:, constant] == 0).all() and (ds.X_test[:, constant] == 0).all()
    # stratified: class proportions of the test set follow the whole set's
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47
    assert ds.info["constant_features"] == int(constant.sum())


def test_digits_seed_and_sizes():
    a = load_dataset("digits", seed=1)
    b = load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert np.array_equal(a.X_test, b.X_test) and np.array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_test, c.y_test)
    d = load_dataset("digits", test_fraction=0.5, n_train=100, seed=3)
    assert d.n_test == 899 and d.n_train == 100
    assert np.bincount(d.y_train, minlength=10).min() >= 9
    e = load_dataset("digits", n_test=100, standardize=False)
    assert e.n_test == 100 and e.X_train.max() == 16.0


def test_synthetic_small_equals_sklearn():
    from sklearn.datasets import make_classification

    ds = load_dataset("synthetic", n_features=40, n_samples=100, seed=3, standardize=False)
    X, y = make_classification(n_samples=100, n_features=40, n_classes=2, random_state=3)
    assert (ds.n_train, ds.n_test, ds.n_features) == (70, 30, 40)
    assert np.array_equal(ds.X_train, X[:70].astype(np.float32))
    assert np.array_equal(ds.X_test, X[70:].astype(np.float32))
    assert np.array_equal(ds.y_train, y[:70]) and np.array_equal(ds.y_test, y[70:])
    assert ds.info["parameters"]["n_informative"] == 2


@pytest.mark.parametrize("shape", [(200, 50, 2, 2, 0), (333, 17, 3, 3, 5), (120, 3, 2, 2, 9)])
def test_make_classification_float32_is_sklearn_in_float32(shape):
    from sklearn.datasets import make_classification

    n, f, c, ni, seed = shape
    nr = min(2, f - ni)
    X, y = make_classification(n_samples=n, n_features=f, n_informative=ni, n_redundant=nr,
                               n_classes=c, random_state=seed)
    X32, y32 = make_classification_float32(n, f, n_informative=ni, n_redundant=nr,
                                           n_classes=c, seed=seed, chunk_rows=7)
    assert X32.dtype == np.float32 and X32.flags["C_CONTIGUOUS"]
    assert np.array_equal(X32, X.astype(np.float32))
    assert np.array_equal(y32, y)


def test_synthetic_chunked_path_used_for_big_shapes(monkeypatch):
    small = load_dataset("synthetic", n_features=30, n_samples=80, n_classes=3, seed=4)
    monkeypatch.setattr(datasets.synthetic, "SYNTHETIC_SKLEARN_MAX_ENTRIES", 0)
    big = load_dataset("synthetic", n_features=30, n_samples=80, n_classes=3, seed=4)
    assert "make_classification_float32" in big.info["generator"]
    assert "sklearn.datasets" in small.info["generator"]
    assert big.n_classes == 3
    assert np.array_equal(small.X_train, big.X_train)
    assert np.array_equal(small.y_test, big.y_test)


def test_synthetic_sizes_default_to_table4():
    opts = datasets.base._make_options(None, None, None, None, None, None, None, 0, True, None,
                                       True)
    assert datasets.synthetic._synthetic_sizes(opts) == (10000, 7000, 3000)
    opts.n_train = 700
    assert datasets.synthetic._synthetic_sizes(opts) == (1000, 700, 300)
    opts.n_train, opts.n_samples = None, 500
    assert datasets.synthetic._synthetic_sizes(opts) == (500, 350, 150)
    opts.n_train, opts.n_test = 100, 100
    with pytest.raises(ConfigError, match="n_samples"):
        datasets.synthetic._synthetic_sizes(opts)


def test_synthetic_rejects_label_column_and_tiny_features():
    with pytest.raises(ConfigError, match="label_column"):
        load_dataset("synthetic", n_features=10, n_samples=20, label_column=0)
    with pytest.raises(ConfigError, match="--n-features"):
        load_dataset("synthetic", n_features=2, n_samples=50, n_classes=8)


# ---------------------------------------------------------------------------
# Madelon (real files)
# ---------------------------------------------------------------------------


def _madelon_checksums() -> tuple[float, float]:
    sums = {}
    for line in (MADELON_DIR / "madelon.param").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] in ("Train", "Valid"):
            sums[parts[0]] = float(parts[-1])
    return sums["Train"], sums["Valid"]


@needs_madelon
def test_madelon_real_files_parse_exactly(tmp_path):
    for f in MADELON_FILES:
        shutil.copy(MADELON_DIR / f, tmp_path / f)
    ds = load_dataset("madelon", tmp_path, standardize=False)
    assert_dataset_contract(ds)
    assert (ds.n_train, ds.n_test, ds.n_features) == (2000, 600, 500)
    assert ds.classes == [-1, 1]
    assert np.bincount(ds.y_train).tolist() == [1000, 1000]
    assert np.bincount(ds.y_test).tolist() == [300, 300]
    train_sum, valid_sum = _madelon_checksums()
    assert ds.X_train.astype(np.float64).sum() == train_sum
    assert ds.X_test.astype(np.float64).sum() == valid_sum
    first_label = int((MADELON_DIR / "madelon_train.labels").read_text().split()[0])
    assert ds.classes[ds.y_train[0]] == first_label
    assert ds.info["cache_hit"] is False and Path(ds.info["cache"]).is_file()


@needs_madelon
def test_madelon_cache_hit_and_invalidation(tmp_path):
    for f in MADELON_FILES:
        shutil.copy(MADELON_DIR / f, tmp_path / f)
    first = load_dataset("madelon", tmp_path)
    second = load_dataset("madelon", tmp_path)
    assert second.info["cache_hit"] is True
    assert np.array_equal(first.X_train, second.X_train)
    assert np.array_equal(first.y_test, second.y_test)
    caches = list(tmp_path.glob("sparse_mlp-cache-madelon-*.npz"))
    assert len(caches) == 1 and not list(tmp_path.glob(".*tmp"))
    # change a source file: same size, new content and mtime -> re-parse
    labels = (tmp_path / "madelon_valid.labels").read_text().split()
    labels[0] = "1" if labels[0] == "-1" else "-1"
    labels[1] = "1" if labels[1] == "-1" else "-1"
    (tmp_path / "madelon_valid.labels").write_text("\n".join(labels))
    os.utime(tmp_path / "madelon_valid.labels", ns=(1, 1))
    third = load_dataset("madelon", tmp_path)
    assert third.info["cache_hit"] is False
    assert not np.array_equal(third.y_test[:2], first.y_test[:2])


@needs_madelon
def test_madelon_from_shared_dir_subfolder_and_subsample():
    before = sorted(os.listdir(MADELON_DIR))
    ds = load_dataset("madelon", MADELON_DIR.parent, n_train=100, n_test=60, seed=5)
    assert (ds.n_train, ds.n_test) == (100, 60)
    assert np.bincount(ds.y_train).tolist() == [50, 50]
    if not MADELON_DIR.stat().st_mode & 0o222:  # a read-only folder gets no cache, even as root
        assert sorted(os.listdir(MADELON_DIR)) == before
    with pytest.raises(ConfigError, match="--n-train"):
        load_dataset("madelon", MADELON_DIR.parent, n_train=5000)


def test_madelon_missing_without_download(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("madelon", tmp_path, download=False)
    msg = str(err.value)
    for f in MADELON_FILES:
        assert f in msg
    assert str(tmp_path) in msg and "archive.ics.uci.edu" in msg


def test_madelon_mismatched_files(tmp_path):
    rng = np.random.default_rng(0)
    np.savetxt(tmp_path / "madelon_train.data", rng.integers(0, 999, (10, 5)), fmt="%d")
    (tmp_path / "madelon_train.labels").write_text("1\n-1\n" * 4)  # 8 labels for 10 rows
    np.savetxt(tmp_path / "madelon_valid.data", rng.integers(0, 999, (4, 5)), fmt="%d")
    (tmp_path / "madelon_valid.labels").write_text("1\n-1\n1\n-1\n")
    with pytest.raises(DatasetError, match="do not belong together"):
        load_dataset("madelon", tmp_path)
    (tmp_path / "madelon_train.labels").write_text("1\n-1\n" * 5)
    (tmp_path / "madelon_valid.data").write_text("1 2 3 x 5\n" * 4)
    with pytest.raises(DatasetError, match="madelon_valid.data"):
        load_dataset("madelon", tmp_path)


def test_madelon_empty_file(tmp_path):
    for f in MADELON_FILES:
        (tmp_path / f).write_text("1 2\n" if f.endswith(".data") else "1\n")
    (tmp_path / "madelon_valid.data").write_text("")
    with pytest.raises(DatasetError, match="madelon_valid.data is empty"):
        load_dataset("madelon", tmp_path)


def test_no_cache_in_read_only_folder(tmp_path):
    rng = np.random.default_rng(1)
    np.savetxt(tmp_path / "madelon_train.data", rng.integers(0, 9, (8, 3)), fmt="%d")
    (tmp_path / "madelon_train.labels").write_text("1\n-1\n" * 4)
    np.savetxt(tmp_path / "madelon_valid.data", rng.integers(0, 9, (4, 3)), fmt="%d")
    (tmp_path / "madelon_valid.labels").write_text("1\n-1\n" * 2)
    tmp_path.chmod(0o555)
    try:
        ds = load_dataset("madelon", tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert ds.info["cache"] is None and ds.info["cache_hit"] is False
    assert not list(tmp_path.glob("*cache*")) and ds.n_train == 8


def test_madelon_small_real_format(tmp_path):
    rng = np.random.default_rng(0)
    Xtr = rng.integers(400, 600, (20, 5))
    Xte = rng.integers(400, 600, (6, 5))
    np.savetxt(tmp_path / "madelon_train.data", Xtr, fmt="%d ")  # UCI lines end with a space
    (tmp_path / "madelon_train.labels").write_text("\n".join(["1", "-1"] * 10) + "\n")
    np.savetxt(tmp_path / "madelon_valid.data", Xte, fmt="%d ")
    (tmp_path / "madelon_valid.labels").write_text("\n".join(["-1", "1"] * 3))
    ds = load_dataset("madelon", tmp_path, standardize=False)
    assert np.array_equal(ds.X_train, Xtr.astype(np.float32))
    assert ds.y_test.tolist() == [0, 1] * 3


# ---------------------------------------------------------------------------
# Fashion-MNIST (IDX)
# ---------------------------------------------------------------------------


def test_fashionmnist_idx(tmp_path):
    tr, ytr, te, yte = write_fashion(tmp_path / "fashionmnist")
    ds = load_dataset("fashionmnist", tmp_path, standardize=False)
    assert_dataset_contract(ds)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (30, 10, 784, 10)
    assert np.array_equal(ds.X_train, tr.reshape(30, -1).astype(np.float32))
    assert np.array_equal(ds.y_test, yte.astype(np.int32))
    assert ds.info["class_names"]["9"] == "Ankle boot"
    std = load_dataset("fashionmnist", tmp_path)
    assert std.info["cache_hit"] is True
    mu = tr.reshape(30, -1).astype(np.float64).mean(0)
    sd = tr.reshape(30, -1).astype(np.float64).std(0)
    expected = (te.reshape(10, -1) - mu) / sd
    assert np.allclose(std.X_test, expected, atol=1e-4)


def test_idx_bad_magic_and_dimensions(tmp_path):
    write_fashion(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(bad, np.zeros((30, 28, 28)), magic_type=0x07)
    with pytest.raises(DatasetError, match="not an IDX file"):
        load_dataset("fashionmnist", tmp_path)
    # images file given a labels (1-D) header
    write_idx(bad, np.zeros(30))
    with pytest.raises(DatasetError, match="1 dimensions"):
        load_dataset("fashionmnist", tmp_path)
    # header says 30 images, payload holds 29
    data = gzip.decompress(bad.read_bytes())
    write_idx(bad, np.zeros((30, 28, 28)))
    data = gzip.decompress(bad.read_bytes())[:-784]
    bad.write_bytes(gzip.compress(data))
    with pytest.raises(DatasetError, match="truncated or damaged"):
        load_dataset("fashionmnist", tmp_path)
    # 31 labels for 30 images
    write_idx(bad, np.zeros((30, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(31))
    with pytest.raises(DatasetError, match="30 images but"):
        load_dataset("fashionmnist", tmp_path)


def test_idx_truncated_gzip(tmp_path):
    write_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="truncated or not a valid gzip"):
        load_dataset("fashionmnist", tmp_path)


def test_read_idx_plain(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.idx", arr, gz=False)
    out = read_idx(tmp_path / "x.idx", ndim=3)
    assert np.array_equal(out, arr)


# ---------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------


def test_cifar10_tarball(tmp_path):
    Xtr, ytr, Xte, yte = write_cifar(tmp_path / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10", tmp_path, standardize=False)
    assert_dataset_contract(ds)
    assert (ds.n_train, ds.n_test, ds.n_features, ds.n_classes) == (20, 5, 3072, 10)
    assert np.array_equal(ds.X_train, Xtr.astype(np.float32))
    assert ds.y_train.tolist() == ytr and ds.y_test.tolist() == yte
    assert ds.info["class_names"]["0"] == "airplane"
    assert not (tmp_path / "cifar-10-batches-py").exists()  # nothing extracted


def test_cifar10_missing_member_truncated_and_unsafe_pickle(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_cifar(path, skip="cifar-10-batches-py/test_batch")
    with pytest.raises(DatasetError, match="lacks cifar-10-batches-py/test_batch"):
        load_dataset("cifar10", tmp_path)
    write_cifar(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("cifar10", tmp_path)
    write_cifar(path, evil=True)
    with pytest.raises(DatasetError, match="refusing to load"):
        load_dataset("cifar10", tmp_path)


# ---------------------------------------------------------------------------
# HIGGS
# ---------------------------------------------------------------------------


@pytest.fixture
def small_higgs(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets.higgs, "HIGGS_TEST_START", 30)
    monkeypatch.setattr(datasets.higgs, "HIGGS_TEST_ROWS", 20)
    rows = higgs_rows(50)
    (tmp_path / "higgs").mkdir()
    write_higgs(tmp_path / "higgs" / "HIGGS.csv.gz", rows)
    return rows, tmp_path


def test_higgs_rows_used(small_higgs):
    rows, root = small_higgs
    ds = load_dataset("higgs", root, n_train=10, n_test=6, standardize=False)
    assert_dataset_contract(ds)
    assert (ds.n_train, ds.n_test, ds.n_features) == (10, 6, 28)
    assert np.array_equal(ds.X_train, rows[:10, 1:].astype(np.float32))
    assert np.array_equal(ds.X_test, rows[30:36, 1:].astype(np.float32))
    assert ds.y_test.tolist() == rows[30:36, 0].astype(int).tolist()
    assert ds.classes == [0, 1]
    assert ds.info["train_rows"] == [0, 10] and ds.info["test_rows"] == [30, 36]
    again = load_dataset("higgs", root, n_train=10, n_test=6, standardize=False)
    assert again.info["cache_hit"] is True and np.array_equal(again.X_test, ds.X_test)
    other = load_dataset("higgs", root, n_train=12, n_test=6, standardize=False)
    assert other.info["cache_hit"] is False and other.n_train == 12


def test_higgs_bad_sizes_and_truncation(small_higgs):
    rows, root = small_higgs
    with pytest.raises(ConfigError, match="training part has only 30"):
        load_dataset("higgs", root)  # default n_train 105000 > 30
    with pytest.raises(ConfigError, match="test_fraction"):
        load_dataset("higgs", root, n_train=10, n_test=5, test_fraction=0.2)
    write_higgs(root / "higgs" / "HIGGS.csv.gz", rows[:33])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("higgs", root, n_train=10, n_test=6)
    write_higgs(root / "higgs" / "HIGGS.csv.gz", rows[:20])
    with pytest.raises(DatasetError, match="test part starts at row 30"):
        load_dataset("higgs", root, n_train=10, n_test=6)
    data = (root / "higgs" / "HIGGS.csv.gz").read_bytes()
    write_higgs(root / "higgs" / "HIGGS.csv.gz", rows)
    data = (root / "higgs" / "HIGGS.csv.gz").read_bytes()
    (root / "higgs" / "HIGGS.csv.gz").write_bytes(data[: len(data) - 40])
    with pytest.raises(DatasetError, match="truncated or not a valid gzip"):
        load_dataset("higgs", root, n_train=10, n_test=6)


def test_higgs_ragged_row(small_higgs):
    rows, root = small_higgs
    text = "\n".join(",".join(f"{v:g}" for v in r) for r in rows)
    lines = text.split("\n")
    lines[3] = lines[3].rsplit(",", 1)[0]
    (root / "higgs" / "HIGGS.csv.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(DatasetError, match="not 29 comma-separated"):
        load_dataset("higgs", root, n_train=10, n_test=6)


def test_line_reader_block_boundaries():
    text = b"".join(f"{i},{i * i}\n".encode() for i in range(100)) + b"100,10000"
    reader = datasets.higgs._LineReader(io.BytesIO(text), block=7)
    first, n = reader.take(3)
    assert n == 3 and first == b"0,0\n1,1\n2,4\n"
    assert reader.skip(50) == 50
    chunk, n = reader.take(2)
    assert chunk == b"53,2809\n54,2916\n"
    rest, n = reader.take(1000)
    assert n == 46 and rest.endswith(b"100,10000\n") and reader.line == 101


# ---------------------------------------------------------------------------
# Leukemia (GEO series matrix)
# ---------------------------------------------------------------------------


def test_leukemia_series_matrix(tmp_path):
    X, labels = write_geo(tmp_path / "GSE13159_series_matrix.txt.gz")
    ds = load_dataset("leukemia", tmp_path, standardize=False)
    assert_dataset_contract(ds)
    assert ds.classes == ["AML with t(8;21)", "CLL", "T-ALL"]  # sorted by label
    assert (ds.n_train, ds.n_test, ds.n_features) == (8, 4, 6)
    assert sorted(np.bincount(ds.y_test).tolist()) == [1, 1, 2]
    # every sample appears exactly once, with its own label and values
    allX = np.concatenate([ds.X_train, ds.X_test])
    ally = np.concatenate([ds.y_train, ds.y_test])
    for x, y in zip(allX, ally, strict=True):
        i = int(np.flatnonzero((X == x).all(axis=1))[0])
        assert ds.classes[y] == labels[i]
    assert ds.info["label_mapping"] == {"AML with t(8;21)": 0, "CLL": 1, "T-ALL": 2}
    again = load_dataset("leukemia", tmp_path, n_test=3, seed=1)
    assert again.info["cache_hit"] is True and again.n_test == 3


def test_leukemia_bad_files(tmp_path):
    path = tmp_path / "GSE13159_series_matrix.txt.gz"
    write_geo(path, with_label=False)
    with pytest.raises(DatasetError, match="leukemia class"):
        load_dataset("leukemia", tmp_path)
    write_geo(path, bad_value=True)
    with pytest.raises(DatasetError, match="not all numbers"):
        load_dataset("leukemia", tmp_path)
    write_geo(path, end=False)
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset("leukemia", tmp_path)


# ---------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------


def _blobs(n: int = 60, f: int = 4, classes: tuple = (0, 1, 2), seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.array([classes[i % len(classes)] for i in range(n)])
    idx = np.array([classes.index(v) for v in y])
    X = rng.standard_normal((n, f)) + idx[:, None] * 3.0
    return X, y


def test_npz_with_and_without_test(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "d.npz", X_train=X[:40], y_train=y[:40], X_test=X[40:], y_test=y[40:])
    ds = load_dataset(tmp_path / "d.npz", standardize=False)
    assert_dataset_contract(ds)
    assert ds.name == "d.npz" and (ds.n_train, ds.n_test) == (40, 20)
    assert np.array_equal(ds.X_test, X[40:].astype(np.float32))
    with pytest.raises(ConfigError, match="already has a test set"):
        load_dataset(tmp_path / "d.npz", test_fraction=0.3)
    np.savez(tmp_path / "e.npz", X=X, y=np.array(["b", "a", "c"] * 20))
    ds = load_dataset(str(tmp_path / "e.npz"), seed=7)
    assert ds.classes == ["a", "b", "c"] and (ds.n_train, ds.n_test) == (48, 12)
    assert np.bincount(ds.y_test).tolist() == [4, 4, 4]


def test_npz_bad_inputs(tmp_path):
    X, y = _blobs()
    np.savez(tmp_path / "a.npz", X_train=X)
    with pytest.raises(DatasetError, match="no y_train"):
        load_dataset(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", features=X, labels=y)
    with pytest.raises(DatasetError, match="expected X_train and y_train"):
        load_dataset(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", X_train=X, y_train=np.array([None, 1] * 30, dtype=object))
    with pytest.raises(DatasetError, match="Python objects"):
        load_dataset(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", X_train=X.reshape(60, 2, 2), y_train=y)
    with pytest.raises(DatasetError, match="2-D"):
        load_dataset(tmp_path / "d.npz")
    Xn = X.copy()
    Xn[5, 2] = np.nan
    np.savez(tmp_path / "e.npz", X_train=Xn, y_train=y)
    with pytest.raises(DatasetError, match="NaN or infinite.*feature 2"):
        load_dataset(tmp_path / "e.npz")
    np.savez(tmp_path / "f.npz", X_train=X, y_train=np.ones(60))
    with pytest.raises(DatasetError, match="single class"):
        load_dataset(tmp_path / "f.npz")
    np.savez(tmp_path / "g.npz", X_train=X[:30], y_train=np.zeros(30) + (np.arange(30) % 2),
             X_test=X[30:], y_test=np.arange(30) % 3)
    with pytest.raises(DatasetError, match=r"labels the training set lacks: \[2\]"):
        load_dataset(tmp_path / "g.npz")
    (tmp_path / "j.npz").write_bytes(b"\x93NUMPY this is a .npy, not an .npz")
    with pytest.raises(DatasetError, match="not an .npz archive"):
        load_dataset(tmp_path / "j.npz")
    (tmp_path / "h.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="not a valid .npz"):
        load_dataset(tmp_path / "h.npz")
    Xi = X.copy()
    Xi[0, 0] = np.inf
    np.savez(tmp_path / "i.npz", X_train=X, y_train=y, X_test=Xi, y_test=y)
    with pytest.raises(DatasetError, match="X_test has NaN or infinite"):
        load_dataset(tmp_path / "i.npz")


def test_csv_header_label_last_and_by_name(tmp_path):
    X, y = _blobs(classes=(3, 1, 2))
    lines = ["a,b,target,c,d"] + [f"{r[0]},{r[1]},{t},{r[2]},{r[3]}" for r, t in zip(X, y,
                                                                                      strict=True)]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path / "h.csv", label_column="target", standardize=False)
    assert_dataset_contract(ds)
    assert ds.classes == [1, 2, 3] and ds.n_features == 4
    assert ds.info["label_column"] == "target" and ds.info["header"] is True
    assert ds.info["feature_names"] == ["a", "b", "c", "d"]
    by_index = load_dataset(tmp_path / "h.csv", label_column=2, standardize=False)
    assert np.array_equal(by_index.X_train, ds.X_train)
    by_text_index = load_dataset(tmp_path / "h.csv", label_column="-3", standardize=False)
    assert np.array_equal(by_text_index.y_test, ds.y_test)
    with pytest.raises(ConfigError, match="label-column"):
        load_dataset(tmp_path / "h.csv")  # default label = last column d: 60 distinct values
    with pytest.raises(DatasetError, match="no column named 'label'"):
        load_dataset(tmp_path / "h.csv", label_column="label")
    with pytest.raises(DatasetError, match="out of range"):
        load_dataset(tmp_path / "h.csv", label_column=9)


def test_csv_without_header_and_string_labels(tmp_path):
    X, y = _blobs(classes=("setosa", "virginica", "versicolor"))
    text = "".join(f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{r[3]:.6f},{t}\n"
                   for r, t in zip(X, y, strict=True))
    (tmp_path / "iris.csv").write_text(text)
    ds = load_dataset(tmp_path / "iris.csv", standardize=False, test_fraction=0.25)
    assert ds.info["header"] is False
    assert ds.classes == ["setosa", "versicolor", "virginica"]
    assert (ds.n_train, ds.n_test) == (45, 15)
    expected = {tuple(r) for r in np.round(X, 6).astype(np.float32)}
    got = [tuple(r) for r in np.concatenate([ds.X_train, ds.X_test])]
    assert len(set(got)) == 60 and set(got) == expected


def test_csv_pandas_style_index_column(tmp_path):
    X, y = _blobs(classes=("cat", "dog"))
    lines = [",f0,f1,f2,f3,label"] + [
        f"{i}," + ",".join(repr(float(v)) for v in r) + f",{t}"
        for i, (r, t) in enumerate(zip(X, y, strict=True))]
    (tmp_path / "pd.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path / "pd.csv", standardize=False, n_test=10)
    assert_dataset_contract(ds)
    assert ds.info["dropped_index_column"] is True
    assert ds.n_features == 4 and ds.classes == ["cat", "dog"]
    rows = {tuple(r) for r in X.astype(np.float32)}
    assert all(tuple(r) in rows for r in ds.X_train)
    try:
        import pandas as pd
    except ImportError:
        return
    df = pd.DataFrame(X, columns=["f0", "f1", "f2", "f3"])
    df["label"] = y
    df.to_csv(tmp_path / "real_pd.csv")
    real = load_dataset(tmp_path / "real_pd.csv", standardize=False, n_test=10)
    assert np.array_equal(real.X_train, ds.X_train)


def test_tsv_and_whitespace_text(tmp_path):
    X, y = _blobs()
    (tmp_path / "d.tsv").write_text("x1\tx2\tx3\tx4\ty\n" + "".join(
        "\t".join(str(v) for v in r) + f"\t{t}\n" for r, t in zip(X, y, strict=True)))
    ds = load_dataset(tmp_path / "d.tsv", standardize=False)
    assert ds.info["delimiter"] == "\t" and ds.n_features == 4 and ds.n_classes == 3
    (tmp_path / "d.txt").write_text("".join(
        " ".join(str(v) for v in r) + f" {t}\n" for r, t in zip(X, y, strict=True)))
    ws = load_dataset(tmp_path / "d.txt", standardize=False)
    assert ws.info["delimiter"] == "whitespace"
    assert np.array_equal(ws.X_train, ds.X_train)


def test_csv_gz(tmp_path):
    X, y = _blobs()
    text = "".join(",".join(str(v) for v in r) + f",{t}\n" for r, t in zip(X, y, strict=True))
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    ds = load_dataset(tmp_path / "d.csv.gz")
    assert ds.n_features == 4 and ds.n_train + ds.n_test == 60


def test_csv_bad_inputs(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b,label\n1,2,x\n3,4,y\n5,6\n")
    with pytest.raises(DatasetError, match="line 4: 2 fields.*ragged"):
        load_dataset(p)
    p.write_text("a,b,label\n1,2,x\n3,hello,y\n5,6,x\n")
    with pytest.raises(DatasetError, match=r"line 3: feature column 'b' holds 'hello'"):
        load_dataset(p)
    p.write_text("a,b,label\n1,2,x\n3,,y\n5,6,x\n7,8,y\n")
    with pytest.raises(DatasetError, match="empty \\(missing\\) value"):
        load_dataset(p)
    p.write_text("a,b,label\n1,2,x\n3,inf,y\n5,6,x\n7,8,y\n")
    with pytest.raises(DatasetError, match="NaN or infinite"):
        load_dataset(p)
    p.write_text("a,b,label\n1,2,x\n3,4,x\n5,6,x\n")
    with pytest.raises(DatasetError, match="single class"):
        load_dataset(p)
    p.write_text("a,b,label\n")
    with pytest.raises(DatasetError, match="no data rows"):
        load_dataset(p)
    p.write_text("")
    with pytest.raises(DatasetError, match="no data rows"):
        load_dataset(p)
    p.write_text("1,2,x\n3,4,\n")
    with pytest.raises(DatasetError, match="label is empty"):
        load_dataset(p)
    p.write_bytes(b"\xff\xfe\x00bad,\xff\n1,2\n")
    with pytest.raises(DatasetError, match="UTF-8"):
        load_dataset(p)


def test_libsvm(tmp_path):
    lines = ["1 1:0.5 3:1.5", "-1 2:2.0", "1 1:1.0 2:1.0 3:1.0", "-1 3:0.25",
             "1 1:0.75", "-1 2:0.5 3:0.5"] * 3
    (tmp_path / "d.svm").write_text("\n".join(lines) + "\n")
    ds = load_dataset(tmp_path / "d.svm", standardize=False, n_test=6)
    assert_dataset_contract(ds)
    assert ds.classes == [-1, 1] and ds.n_features == 3 and ds.n_test == 6
    assert ds.info["format"] == "libsvm/svmlight"
    (tmp_path / "noext").write_text("\n".join(lines) + "\n")
    detected = load_dataset(tmp_path / "noext", standardize=False, n_test=6)
    assert detected.info["format"] == "libsvm/svmlight"
    assert np.array_equal(detected.X_train, ds.X_train)
    (tmp_path / "bad.libsvm").write_text("1 1:0.5 x:2\n")
    with pytest.raises(DatasetError, match="not a valid libsvm"):
        load_dataset(tmp_path / "bad.libsvm")
    with pytest.raises(ConfigError, match="label_column"):
        load_dataset(tmp_path / "d.svm", label_column=0)


def test_spec_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(DatasetError, match="is a directory"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist")
    for name in PAPER_DATASETS:
        assert name in str(err.value)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(DatasetError, match="to_csv"):
        load_dataset(tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="n_features"):
        load_dataset("digits", n_features=10)
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        load_dataset("digits", test_fraction=1.5)
    with pytest.raises(ConfigError, match="not both"):
        load_dataset("digits", test_fraction=0.3, n_test=20)
    with pytest.raises(ConfigError, match="seed"):
        load_dataset("digits", seed=-1)
    with pytest.raises(ConfigError, match="n_train"):
        load_dataset("digits", n_train=0)
    with pytest.raises(ConfigError, match="at most"):
        load_dataset("digits", n_test=1795)


def test_name_aliases_and_data_dir_errors(tmp_path, monkeypatch):
    write_fashion(tmp_path / "fashionmnist", n_train=20, n_test=10)
    ds = load_dataset("Fashion-MNIST", tmp_path)
    assert ds.name == "fashionmnist"
    monkeypatch.setenv("SPARSE_MLP_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert load_dataset("fashion_mnist").n_train == 20
    monkeypatch.delenv("SPARSE_MLP_DATA_DIR")
    monkeypatch.chdir(tmp_path)  # the default does not depend on the current directory
    first = default_data_dir()
    monkeypatch.chdir(tmp_path / "fashionmnist")
    assert default_data_dir() == first and first.is_absolute()
    assert first.name == "sparse_mlp" and tmp_path not in first.parents
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match="is a file"):
        load_dataset("madelon", tmp_path / "afile")
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").mkdir(parents=True)
    with pytest.raises(DatasetError, match="is a directory"):
        load_dataset("cifar10", tmp_path)


def test_standardize_inplace_matches_reference():
    rng = np.random.default_rng(3)
    Xtr = (rng.standard_normal((500, 7)) * [1, 2, 3, 0, 5, 6, 7] + 10).astype(np.float32)
    Xte = (rng.standard_normal((100, 7)) + 10).astype(np.float32)
    ref_tr, ref_te = Xtr.astype(np.float64), Xte.astype(np.float64)
    mu, sd = ref_tr.mean(0), ref_tr.std(0)
    a, b = Xtr, Xte
    mean, std, constant = standardize_inplace(a, b)
    assert a is Xtr and a.dtype == np.float32
    assert constant.tolist() == [False, False, False, True, False, False, False]
    safe = np.where(sd > 0, sd, 1)
    assert np.allclose(a[:, ~constant], ((ref_tr - mu) / safe)[:, ~constant], atol=1e-5)
    assert np.allclose(b[:, ~constant], ((ref_te - mu) / safe)[:, ~constant], atol=1e-5)
    assert (a[:, 3] == 0).all() and (b[:, 3] == 0).all()
    assert np.allclose(mean, mu) and np.allclose(std, sd)


@needs_madelon
def test_an_edited_cache_is_not_trusted(tmp_path):
    """A cache whose arrays were changed after it was written (same source
    files, same size and mtime) is parsed again, never used silently."""
    for f in MADELON_FILES:
        shutil.copy(MADELON_DIR / f, tmp_path / f)
    first = load_dataset("madelon", tmp_path)
    (cache,) = tmp_path.glob("sparse_mlp-cache-madelon-*.npz")
    with np.load(cache) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["y_train"] = arrays["y_train"].copy()
    arrays["y_train"][1] = 1 - arrays["y_train"][1]  # relabel one training sample
    with open(cache, "wb") as fh:
        np.savez(fh, **arrays)
    again = load_dataset("madelon", tmp_path)
    assert again.info["cache_hit"] is False
    assert np.array_equal(again.y_train, first.y_train)


# ---------------------------------------------------------------------- hostile files
def test_a_numbered_header_is_a_header_not_a_sample(tmp_path):
    """pd.DataFrame(array).to_csv(index=False) writes 0,1,...,n-1 as the header."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4)).round(3)
    y = np.arange(60) % 2
    rows = ["0,1,2,3,4"] + [",".join([*map(str, x), str(t)]) for x, t in zip(X, y)]
    path = tmp_path / "numbered.csv"
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(path), test_fraction=0.25)
    assert ds.n_train + ds.n_test == 60 and ds.classes == [0, 1]
    assert ds.info["header"] is True


def test_duplicate_column_names_are_refused(tmp_path):
    """header y,f0..f9,y with --label-column y used to take the first y and train on
    the real label as a feature."""
    rng = np.random.default_rng(1)
    names = ["y", *[f"f{i}" for i in range(10)], "y"]
    rows = [",".join(names)] + [",".join(map(str, [i % 2, *rng.integers(0, 9, 10), i % 2]))
                                for i in range(40)]
    path = tmp_path / "dup.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DatasetError, match=r"two columns 'y' \(columns 0 and 11"):
        load_dataset(str(path), label_column="y")


def test_a_trailing_delimiter_on_every_line_is_not_an_empty_label(tmp_path):
    rng = np.random.default_rng(2)
    rows = ["a,b,c,label,"] + [f"{rng.random():.3f},{rng.random():.3f},{rng.random():.3f},"
                                f"{'yes' if i % 2 else 'no'}," for i in range(40)]
    path = tmp_path / "trailing.csv"
    path.write_text("\n".join(rows) + "\n")
    ds = load_dataset(str(path), test_fraction=0.25)
    assert ds.n_features == 3 and ds.classes == ["no", "yes"]


def test_a_truncated_user_gzip_is_not_said_to_be_downloaded(tmp_path):
    import gzip
    body = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(2000))
    full = gzip.compress(body.encode())
    path = tmp_path / "mine.csv.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError) as exc:
        load_dataset(str(path))
    assert "truncated" in str(exc.value) and "downloaded" not in str(exc.value).replace(
        "never downloaded", "")


def test_an_empty_npz_says_it_is_empty(tmp_path):
    path = tmp_path / "empty.npz"
    np.savez(path, X=np.zeros((0, 5), np.float32), y=np.zeros(0, np.int64))
    with pytest.raises(DatasetError, match="holds no samples"):
        load_dataset(str(path))
