"""Download the paper's datasets from their canonical public sources.

Every file of every paper dataset is described by a :class:`RemoteFile`:
its name on disk, its canonical URL, its expected size and the checksums
used to verify it.  :func:`download_file` streams one file to a temporary
file in the destination directory (with a tqdm progress bar on a terminal,
periodic log lines otherwise), verifies it and renames it into place
atomically, so an interrupted or failed download never leaves a
half-written file behind.  Every failure (no network, DNS failure, HTTP
error, truncated body, wrong size or checksum, disk full) is raised as a
:class:`~sparse_mlp.errors.DatasetError` whose message names the URL, the
exact file names expected and the directory to put them in.

Checksums and where they come from (see also ``data/README.md``):

* Fashion-MNIST: MD5 published by Zalando in the fashion-mnist README;
  sizes and SHA-256 as recorded by TensorFlow Datasets
  (``tensorflow_datasets/url_checksums/fashion_mnist.txt``).
* CIFAR-10 (python version): MD5 published on the Toronto CIFAR page;
  size as reported by downloads of that URL (not published by Toronto).
* HIGGS: UCI publishes no checksum.  Size and SHA-256 as recorded by
  TensorFlow Datasets (``tensorflow_datasets/url_checksums/higgs.txt``):
  a third-party record, not UCI's.
* Madelon: UCI publishes no checksum.  Sizes, MD5 and SHA-256 were
  computed here from a copy of the UCI files; they are **unverified**
  against any publication.
* Leukemia (GEO GSE13159 series matrix): NCBI publishes no checksum and
  regenerates series-matrix files from time to time, so neither size nor
  checksum is pinned.  Instead the downloaded gzip is decompressed once in
  full, which verifies gzip's own CRC-32 and length of every byte, and the
  SHA-256 of what was received is logged so it can be recorded.

The base URL can be overridden for mirrors and tests: set the environment
variable ``SPARSE_MLP_DATA_URL`` (or pass ``base_url=``); every file is
then fetched as ``<base_url>/<file name>``.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sparse_mlp.errors import DatasetError

logger = logging.getLogger(__name__)

#: Environment variable that overrides the base URL of every download.
DATA_URL_ENV = "SPARSE_MLP_DATA_URL"

#: Seconds to wait for a connection or for the next bytes of a response.
DEFAULT_TIMEOUT = 60.0

_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset and how to fetch and verify it.

    Attributes
    ----------
    dataset : str
        Name of the dataset the file belongs to (e.g. ``"higgs"``).
    filename : str
        Name of the file on disk, exactly as the loader expects it.
    url : str
        Canonical public URL.
    size : int or None
        Expected size in bytes, or None where none can be pinned.
    md5, sha256 : str or None
        Expected hex digests, or None where unknown.
    checksum_source : str
        Where the size and checksums come from; says "unverified" when no
        publisher vouches for them.
    verify_gzip : bool
        Decompress the whole file once after download to check gzip's CRC.
    """

    dataset: str
    filename: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = "unverified"
    verify_gzip: bool = False


_UCI = "https://archive.ics.uci.edu/ml/machine-learning-databases"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
_TFDS = "TensorFlow Datasets url_checksums (third-party record)"

#: Every file of every downloadable paper dataset, keyed by dataset name.
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "madelon": (
        RemoteFile(
            "madelon", "madelon_train.data", f"{_UCI}/madelon/MADELON/madelon_train.data",
            size=4001995, md5="a484bd3dd24fec0e6cc1df7079df1466",
            sha256="0b6e37711efdc7ab74250c51e7d6966bffd9f8f2b0e9971e882c3a7a380c2314",
            checksum_source="unverified: computed from a copy of the UCI file "
            "(UCI publishes no checksum)",
        ),
        RemoteFile(
            "madelon", "madelon_train.labels", f"{_UCI}/madelon/MADELON/madelon_train.labels",
            size=5000, md5="7c0c3363967eb43ab2c36e2fa90f18e6",
            sha256="10bffcc3b017467cb810d326b931951adcbde2b4870faf981da2991993b48689",
            checksum_source="unverified: computed from a copy of the UCI file "
            "(UCI publishes no checksum)",
        ),
        RemoteFile(
            "madelon", "madelon_valid.data", f"{_UCI}/madelon/MADELON/madelon_valid.data",
            size=1200599, md5="9e8d7e33a891953378aa140b8009c8aa",
            sha256="cb9a46475147de1a58d9f15ef4c318e5b85de344e0f9ab92626fa446aa815dc9",
            checksum_source="unverified: computed from a copy of the UCI file "
            "(UCI publishes no checksum)",
        ),
        RemoteFile(
            "madelon", "madelon_valid.labels", f"{_UCI}/madelon/madelon_valid.labels",
            size=1499, md5="4a72410a1028c4cd96d581789057711c",
            sha256="1aa311db914031ce44fc1dcf00fe4a0c31becb6c5c4e809db7fec13eead58fcc",
            checksum_source="unverified: computed from a copy of the UCI file "
            "(UCI publishes no checksum)",
        ),
    ),
    "higgs": (
        RemoteFile(
            "higgs", "HIGGS.csv.gz", f"{_UCI}/00280/HIGGS.csv.gz",
            size=2816407858,
            sha256="ea302c18164d4e3d916a1e2e83a9a8d07069fa6ebc7771e4c0540d54e593b698",
            checksum_source=f"size and SHA-256 from {_TFDS}; UCI publishes none",
        ),
    ),
    "fashionmnist": (
        RemoteFile(
            "fashionmnist", "train-images-idx3-ubyte.gz",
            f"{_FASHION}/train-images-idx3-ubyte.gz",
            size=26421880, md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            checksum_source=f"MD5 published by Zalando (fashion-mnist README); "
            f"size and SHA-256 from {_TFDS}",
        ),
        RemoteFile(
            "fashionmnist", "train-labels-idx1-ubyte.gz",
            f"{_FASHION}/train-labels-idx1-ubyte.gz",
            size=29515, md5="25c81989df183df01b3e8a0aad5dffbe",
            sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            checksum_source=f"MD5 published by Zalando (fashion-mnist README); "
            f"size and SHA-256 from {_TFDS}",
        ),
        RemoteFile(
            "fashionmnist", "t10k-images-idx3-ubyte.gz",
            f"{_FASHION}/t10k-images-idx3-ubyte.gz",
            size=4422102, md5="bef4ecab320f06d8554ea6380940ec79",
            sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            checksum_source=f"MD5 published by Zalando (fashion-mnist README); "
            f"size and SHA-256 from {_TFDS}",
        ),
        RemoteFile(
            "fashionmnist", "t10k-labels-idx1-ubyte.gz",
            f"{_FASHION}/t10k-labels-idx1-ubyte.gz",
            size=5148, md5="bb300cfdad3c16e7a12a480ee83cd310",
            sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            checksum_source=f"MD5 published by Zalando (fashion-mnist README); "
            f"size and SHA-256 from {_TFDS}",
        ),
    ),
    "cifar10": (
        RemoteFile(
            "cifar10", "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            size=170498071, md5="c58f30108f718f92721af3b95e74349a",
            checksum_source="MD5 published on the Toronto CIFAR page; size as "
            "reported by downloads of that URL (not published)",
        ),
    ),
    "leukemia": (
        RemoteFile(
            "leukemia", "GSE13159_series_matrix.txt.gz",
            "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE13nnn/GSE13159/matrix/"
            "GSE13159_series_matrix.txt.gz",
            checksum_source="none published (NCBI regenerates series matrices); "
            "verified by a full gzip CRC check, SHA-256 logged",
            verify_gzip=True,
        ),
    ),
}


def expected_files(dataset: str) -> tuple[str, ...]:
    """Return the file names a paper dataset needs on disk.

    Parameters
    ----------
    dataset : str
        Canonical dataset name, a key of :data:`REMOTE_FILES`.

    Returns
    -------
    tuple of str
        The exact file names, in the order the loader reads them.
    """
    return tuple(r.filename for r in _remote_files(dataset))


def _remote_files(dataset: str) -> tuple[RemoteFile, ...]:
    try:
        return REMOTE_FILES[dataset]
    except KeyError:
        raise DatasetError(
            f"Dataset {dataset!r} has no files to download. Downloadable datasets: "
            f"{', '.join(sorted(REMOTE_FILES))}."
        ) from None


def base_url_override(base_url: str | None = None) -> str | None:
    """Return the base URL that replaces the canonical ones, if any.

    Parameters
    ----------
    base_url : str or None
        Explicit override; when None, ``$SPARSE_MLP_DATA_URL`` is used if set.

    Returns
    -------
    str or None
        The base URL without a trailing slash, or None for canonical URLs.
    """
    if base_url is None:
        base_url = os.environ.get(DATA_URL_ENV) or None
    if base_url is None:
        return None
    return base_url.rstrip("/")


def file_url(remote: RemoteFile, base_url: str | None = None) -> str:
    """Return the URL a file is fetched from.

    Parameters
    ----------
    remote : RemoteFile
        The file.
    base_url : str or None
        Override of the canonical URL (see :func:`base_url_override`).

    Returns
    -------
    str
        ``<base_url>/<filename>`` with an override, else ``remote.url``.
    """
    base = base_url_override(base_url)
    if base is None:
        return remote.url
    return f"{base}/{remote.filename}"


def manual_download_help(dataset: str, directory: str | os.PathLike,
                         base_url: str | None = None) -> str:
    """Return a sentence telling the user how to provide a dataset by hand.

    Parameters
    ----------
    dataset : str
        Canonical dataset name.
    directory : path-like
        Directory the files must be put in.
    base_url : str or None
        Base URL override, as for :func:`file_url`.

    Returns
    -------
    str
        The files, where to get them and where to put them.
    """
    remotes = _remote_files(dataset)
    parts = ", ".join(f"{r.filename} ({file_url(r, base_url)})" for r in remotes)
    return (
        f"Download {parts} and put {'it' if len(remotes) == 1 else 'them'} in {directory} "
        f"(see data/README.md), or set {DATA_URL_ENV} to a mirror that serves these file names."
    )


def _use_tqdm(progress: bool | None) -> bool:
    if progress is not None:
        return bool(progress)
    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


class _Progress:
    """A tqdm bar on a terminal, else a log line every 10% or 30 seconds."""

    def __init__(self, total: int | None, desc: str, progress: bool | None,
                 unit: str = "bytes") -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.done = 0
        self.bar = None
        self._last_log = time.monotonic()
        self._last_frac = 0.0
        if _use_tqdm(progress):
            from tqdm import tqdm

            if unit == "bytes":
                self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                                unit_divisor=1024, leave=False)
            else:
                self.bar = tqdm(total=total, desc=desc, unit=f" {unit}", unit_scale=True,
                                leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        frac = self.done / self.total if self.total else 0.0
        if frac - self._last_frac >= 0.1 or now - self._last_log >= 30.0:
            self._last_frac = frac
            self._last_log = now
            if self.total:
                logger.info("%s: %.0f%% (%d of %d %s)", self.desc, 100 * frac,
                            self.done, self.total, self.unit)
            else:
                logger.info("%s: %d %s", self.desc, self.done, self.unit)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fail(remote: RemoteFile, url: str, directory: Path, reason: str,
          base_url: str | None) -> DatasetError:
    head = f"Could not download {remote.filename!r} from {url}: {reason}. Nothing was written. "
    if remote.dataset in REMOTE_FILES:
        fix = manual_download_help(remote.dataset, directory, base_url)
    else:
        fix = (f"Download it yourself and put it in {directory}, or set {DATA_URL_ENV} to a "
               "mirror that serves it.")
    return DatasetError(head + fix)


def _check_gzip(path: Path) -> None:
    """Decompress a gzip file completely; raise ValueError if it is damaged."""
    try:
        with gzip.open(path, "rb") as f:
            while f.read(_CHUNK * 8):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"the gzip data is damaged or truncated ({exc})") from exc


def _digests(path: Path) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def verify_file(path: str | os.PathLike, remote: RemoteFile) -> None:
    """Check a file on disk against its expected size and checksums.

    Parameters
    ----------
    path : path-like
        The file.
    remote : RemoteFile
        What it should be.

    Raises
    ------
    DatasetError
        If the size or a checksum differs, or the gzip data is damaged.
    """
    path = Path(path)
    problem = _verification_problem(path, remote)
    if problem is not None:
        raise DatasetError(
            f"{path} is not the expected {remote.filename}: {problem}. Delete it and "
            f"download it again from {remote.url}."
        )


def _verification_problem(path: Path, remote: RemoteFile) -> str | None:
    size = path.stat().st_size
    if remote.size is not None and size != remote.size:
        return f"it has {size} bytes, expected {remote.size} ({remote.checksum_source})"
    if remote.md5 is not None or remote.sha256 is not None:
        md5, sha = _digests(path)
        if remote.md5 is not None and md5 != remote.md5:
            return f"MD5 {md5} != expected {remote.md5} ({remote.checksum_source})"
        if remote.sha256 is not None and sha != remote.sha256:
            return f"SHA-256 {sha} != expected {remote.sha256} ({remote.checksum_source})"
    if remote.verify_gzip:
        try:
            _check_gzip(path)
        except ValueError as exc:
            return str(exc)
    return None


def download_file(remote: RemoteFile, directory: str | os.PathLike, *,
                  base_url: str | None = None, progress: bool | None = None,
                  timeout: float = DEFAULT_TIMEOUT) -> Path:
    """Download one file, verify it and move it into ``directory`` atomically.

    Parameters
    ----------
    remote : RemoteFile
        The file to fetch.
    directory : path-like
        Destination directory (created if missing).
    base_url : str or None
        Base URL override; defaults to ``$SPARSE_MLP_DATA_URL`` or the
        canonical URL.
    progress : bool or None
        Show a tqdm bar (True), log periodically (False), or decide by
        whether stderr is a terminal (None).
    timeout : float
        Seconds to wait for the connection and for each read.

    Returns
    -------
    pathlib.Path
        Path of the verified file.

    Raises
    ------
    DatasetError
        On any network, HTTP, size, checksum or disk problem; no partial
        file is left behind.
    """
    directory = Path(directory)
    url = file_url(remote, base_url)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part",
                                        dir=directory)
    except OSError as exc:
        raise DatasetError(
            f"Cannot write to {directory} to download {remote.filename}: {exc}. Choose a "
            "writable data directory (--data-dir or $SPARSE_MLP_DATA_DIR)."
        ) from exc
    tmp = Path(tmp_name)
    dest = directory / remote.filename
    logger.info("downloading %s from %s to %s", remote.filename, url, dest)
    try:
        received, declared = _stream_to(url, fd, remote, progress, timeout)
        if declared is not None and received != declared:
            raise _fail(remote, url, directory,
                        f"the response was truncated ({received} of {declared} bytes)",
                        base_url)
        problem = _verification_problem(tmp, remote)
        if problem is not None:
            raise _fail(remote, url, directory, f"verification failed: {problem}", base_url)
        if remote.md5 is None and remote.sha256 is None:
            _, sha = _digests(tmp)
            logger.info("%s has no published checksum; SHA-256 of this download: %s",
                        remote.filename, sha)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise _fail(remote, url, directory, f"HTTP error {exc.code} ({exc.reason})",
                    base_url) from exc
    except urllib.error.URLError as exc:
        raise _fail(remote, url, directory, f"cannot connect ({exc.reason}); are you "
                    "offline?", base_url) from exc
    except TimeoutError as exc:
        raise _fail(remote, url, directory, f"timed out after {timeout:g} s", base_url) from exc
    except http.client.IncompleteRead as exc:
        raise _fail(remote, url, directory,
                    f"the response was truncated ({len(exc.partial)} bytes in the last read)",
                    base_url) from exc
    except (http.client.HTTPException, ConnectionError) as exc:
        raise _fail(remote, url, directory, f"the connection failed ({exc!r})",
                    base_url) from exc
    except OSError as exc:
        raise _fail(remote, url, directory, f"I/O error ({exc})", base_url) from exc
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
    logger.info("downloaded and verified %s", dest)
    return dest


def _stream_to(url: str, fd: int, remote: RemoteFile, progress: bool | None,
               timeout: float) -> tuple[int, int | None]:
    """Copy the body at ``url`` into the open file ``fd``; return (received, declared)."""
    from sparse_mlp import __version__

    request = urllib.request.Request(url, headers={"User-Agent": f"sparse_mlp/{__version__}"})
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
        length = resp.headers.get("Content-Length")
        declared = int(length) if length is not None and length.isdigit() else None
        bar = _Progress(declared if declared is not None else remote.size,
                        f"download {remote.filename}", progress)
        received = 0
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()
        out.flush()
        os.fsync(out.fileno())
    return received, declared


def download_dataset(dataset: str, directory: str | os.PathLike, *,
                     base_url: str | None = None, progress: bool | None = None,
                     timeout: float = DEFAULT_TIMEOUT,
                     only: Iterable[str] | None = None) -> list[Path]:
    """Download the files of a paper dataset that are missing from ``directory``.

    Parameters
    ----------
    dataset : str
        Canonical dataset name (a key of :data:`REMOTE_FILES`).
    directory : path-like
        Destination directory.
    base_url : str or None
        Base URL override (default ``$SPARSE_MLP_DATA_URL``).
    progress : bool or None
        As for :func:`download_file`.
    timeout : float
        Seconds to wait for the connection and for each read.
    only : iterable of str or None
        Restrict to these file names (default: every file not yet present).

    Returns
    -------
    list of pathlib.Path
        Paths of all the dataset's files in ``directory``.
    """
    directory = Path(directory)
    wanted = None if only is None else set(only)
    paths = []
    for remote in _remote_files(dataset):
        dest = directory / remote.filename
        if (wanted is None and not dest.is_file()) or (wanted is not None
                                                       and remote.filename in wanted):
            download_file(remote, directory, base_url=base_url, progress=progress,
                          timeout=timeout)
        paths.append(dest)
    return paths
