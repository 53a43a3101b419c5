"""Tests of the downloader against a local HTTP server on 127.0.0.1.

No test reaches beyond the loopback interface: every URL is either served
by the in-process server below or overridden with ``SPARSE_MLP_DATA_URL``.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sparse_mlp import download
from sparse_mlp.datasets import load_dataset
from sparse_mlp.download import (
    DATA_URL_ENV,
    REMOTE_FILES,
    RemoteFile,
    download_dataset,
    download_file,
    expected_files,
    file_url,
    verify_file,
)
from sparse_mlp.errors import DatasetError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MADELON_DIR = Path(os.environ.get("SPARSE_MLP_MADELON_DIR", SHARED_DATA / "madelon"))


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (kind, body)``; kind: ok, truncated, slow."""

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        kind, body = route
        if kind == "slow":
            time.sleep(1.0)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        declared = len(body) * 2 if kind == "truncated" else len(body)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.routes = {}
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    httpd.base = f"http://{host}:{port}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _remote(body: bytes, name: str = "blob.bin", url: str = "http://127.0.0.1:9/blob.bin",
            **kw) -> RemoteFile:
    fields = dict(size=len(body), md5=hashlib.md5(body).hexdigest(),
                  sha256=hashlib.sha256(body).hexdigest(), checksum_source="test")
    fields.update(kw)
    return RemoteFile("testset", name, url, **fields)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_success_atomic_and_verified(server, tmp_path):
    body = os.urandom(3 * (1 << 20) + 123)
    server.routes["/blob.bin"] = ("ok", body)
    remote = _remote(body, url=f"{server.base}/blob.bin")
    dest = download_file(remote, tmp_path / "d", progress=False)
    assert dest == tmp_path / "d" / "blob.bin"
    assert dest.read_bytes() == body
    assert _leftovers(tmp_path / "d") == ["blob.bin"]  # no .part file left
    assert dest.stat().st_mode & 0o777 == 0o644
    verify_file(dest, remote)


def test_download_progress_bar_and_log_lines(server, tmp_path, caplog):
    body = os.urandom(2 * (1 << 20))
    server.routes["/blob.bin"] = ("ok", body)
    remote = _remote(body, url=f"{server.base}/blob.bin")
    with caplog.at_level(logging.INFO, logger="sparse_mlp.download"):
        download_file(remote, tmp_path / "a", progress=False)
    assert any(re.search(r"download blob\.bin: 100%", r.getMessage()) for r in caplog.records)
    assert download_file(remote, tmp_path / "b", progress=True).read_bytes() == body


def test_download_404(server, tmp_path):
    remote = _remote(b"x", url=f"{server.base}/missing.bin", name="missing.bin")
    with pytest.raises(DatasetError) as err:
        download_file(remote, tmp_path, progress=False)
    msg = str(err.value)
    assert "HTTP error 404" in msg and f"{server.base}/missing.bin" in msg
    assert "missing.bin" in msg and str(tmp_path) in msg
    assert _leftovers(tmp_path) == []


def test_download_truncated_body(server, tmp_path):
    body = os.urandom(100_000)
    server.routes["/blob.bin"] = ("truncated", body)
    with pytest.raises(DatasetError, match="truncated"):
        download_file(_remote(body, url=f"{server.base}/blob.bin"), tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_download_wrong_checksum_and_size(server, tmp_path):
    body = os.urandom(10_000)
    server.routes["/blob.bin"] = ("ok", body)
    url = f"{server.base}/blob.bin"
    with pytest.raises(DatasetError, match="MD5 .* != expected 0{32}"):
        download_file(_remote(body, url=url, md5="0" * 32), tmp_path, progress=False)
    assert _leftovers(tmp_path) == []
    with pytest.raises(DatasetError, match="SHA-256"):
        download_file(_remote(body, url=url, sha256="f" * 64), tmp_path, progress=False)
    with pytest.raises(DatasetError, match="10000 bytes, expected 9999"):
        download_file(_remote(body, url=url, size=9999), tmp_path, progress=False)
    assert _leftovers(tmp_path) == []


def test_download_connection_refused(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/blob.bin"
    with pytest.raises(DatasetError, match="cannot connect") as err:
        download_file(_remote(b"abc", url=url), tmp_path, progress=False, timeout=5)
    assert url in str(err.value)
    assert _leftovers(tmp_path) == []


def test_download_timeout(server, tmp_path):
    server.routes["/blob.bin"] = ("slow", b"abc")
    with pytest.raises(DatasetError, match="timed out after 0.3 s"):
        download_file(_remote(b"abc", url=f"{server.base}/blob.bin"), tmp_path,
                      progress=False, timeout=0.3)
    assert _leftovers(tmp_path) == []


def test_gzip_without_checksum_is_crc_checked(server, tmp_path, caplog):
    good = gzip.compress(b"payload\n" * 1000)
    bad = good[:-12] + b"\x00" * 12  # same length, broken CRC/size trailer
    server.routes["/good.gz"] = ("ok", good)
    server.routes["/bad.gz"] = ("ok", bad)
    with caplog.at_level(logging.INFO, logger="sparse_mlp.download"):
        ok = download_file(RemoteFile("t", "good.gz", f"{server.base}/good.gz", verify_gzip=True),
                           tmp_path, progress=False)
    assert ok.read_bytes() == good
    assert hashlib.sha256(good).hexdigest() in caplog.text  # logged for the record
    with pytest.raises(DatasetError, match="damaged or truncated"):
        download_file(RemoteFile("t", "bad.gz", f"{server.base}/bad.gz", verify_gzip=True),
                      tmp_path, progress=False)
    assert _leftovers(tmp_path) == ["good.gz"]


def test_base_url_override(server, tmp_path, monkeypatch):
    body = b"mirror content"
    server.routes["/blob.bin"] = ("ok", body)
    remote = _remote(body, url="http://example.invalid/canonical/blob.bin")
    assert file_url(remote) == remote.url
    assert file_url(remote, base_url=server.base + "/") == f"{server.base}/blob.bin"
    monkeypatch.setenv(DATA_URL_ENV, server.base)
    assert file_url(remote) == f"{server.base}/blob.bin"
    assert download_file(remote, tmp_path, progress=False).read_bytes() == body
    assert server.hits == ["/blob.bin"]


def test_registry_is_complete():
    assert set(REMOTE_FILES) == {"madelon", "higgs", "fashionmnist", "cifar10", "leukemia"}
    assert expected_files("madelon") == ("madelon_train.data", "madelon_train.labels",
                                         "madelon_valid.data", "madelon_valid.labels")
    assert expected_files("higgs") == ("HIGGS.csv.gz",)
    for remotes in REMOTE_FILES.values():
        for r in remotes:
            assert r.url.startswith(("https://", "http://"))
            assert r.url.rsplit("/", 1)[1] == r.filename
            assert r.md5 is None or re.fullmatch(r"[0-9a-f]{32}", r.md5)
            assert r.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", r.sha256)
            assert r.checksum_source
            assert r.md5 or r.sha256 or r.verify_gzip  # every file is verified somehow
    assert REMOTE_FILES["cifar10"][0].md5 == "c58f30108f718f92721af3b95e74349a"


def _write_idx_bytes(array: np.ndarray) -> bytes:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def test_load_dataset_downloads_missing_files(server, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _write_idx_bytes(rng.integers(0, 255, (20, 28, 28))),
        "train-labels-idx1-ubyte.gz": _write_idx_bytes(np.arange(20) % 10),
        "t10k-images-idx3-ubyte.gz": _write_idx_bytes(rng.integers(0, 255, (10, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _write_idx_bytes(np.arange(10) % 10),
    }
    remotes = []
    for name, body in files.items():
        server.routes[f"/{name}"] = ("ok", body)
        remotes.append(_remote(body, name=name, url=f"http://example.invalid/{name}"))
    remotes = [RemoteFile("fashionmnist", r.filename, r.url, r.size, r.md5, r.sha256, "test")
               for r in remotes]
    monkeypatch.setitem(REMOTE_FILES, "fashionmnist", tuple(remotes))
    monkeypatch.setenv(DATA_URL_ENV, server.base)
    # one file already present: only the other three are fetched
    (tmp_path / "fashionmnist").mkdir()
    (tmp_path / "fashionmnist" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        files["t10k-labels-idx1-ubyte.gz"])
    ds = load_dataset("fashionmnist", tmp_path, progress=False)
    assert (ds.n_train, ds.n_test, ds.n_features) == (20, 10, 784)
    assert sorted(server.hits) == sorted(f"/{n}" for n in list(files)[:3])
    assert download_dataset("fashionmnist", tmp_path / "fashionmnist") == [
        tmp_path / "fashionmnist" / n for n in files]
    assert len(server.hits) == 3  # nothing fetched again


def test_load_dataset_offline_message(server, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_URL_ENV, server.base)  # serves nothing: every file is a 404
    with pytest.raises(DatasetError) as err:
        load_dataset("cifar10", tmp_path, progress=False)
    msg = str(err.value)
    assert "cifar-10-python.tar.gz" in msg and f"{server.base}/cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "cifar10") in msg and DATA_URL_ENV in msg
    assert _leftovers(tmp_path / "cifar10") == []


@pytest.mark.skipif(not (MADELON_DIR / "madelon_train.data").is_file(),
                    reason=f"the UCI Madelon files are not in {MADELON_DIR}")
def test_madelon_download_end_to_end_with_real_checksums(server, tmp_path, monkeypatch):
    for name in expected_files("madelon"):
        server.routes[f"/{name}"] = ("ok", (MADELON_DIR / name).read_bytes())
    monkeypatch.setenv(DATA_URL_ENV, server.base)
    ds = load_dataset("madelon", tmp_path, progress=False)
    assert (ds.n_train, ds.n_test, ds.n_features) == (2000, 600, 500)
    target = tmp_path / "madelon"
    for remote in REMOTE_FILES["madelon"]:
        verify_file(target / remote.filename, remote)
    assert any(p.name.startswith("sparse_mlp-cache-madelon-") for p in target.iterdir())


def test_verify_file_reports_mismatch(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello")
    verify_file(path, _remote(b"hello"))
    with pytest.raises(DatasetError, match="Delete it and download it again"):
        verify_file(path, _remote(b"hellO"))


def test_unwritable_destination(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DatasetError, match="Cannot write"):
        download_file(_remote(b"x"), blocker / "sub", progress=False)
    assert download.base_url_override("http://h/x/") == "http://h/x"
