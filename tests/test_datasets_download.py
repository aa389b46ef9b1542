"""Downloads from a local HTTP server on 127.0.0.1 and from file:// addresses."""

from __future__ import annotations

import hashlib
import http.server
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from hybridcap.datasets import load_prepared, prepare_cifar100
from hybridcap.datasets.download import download_archive
from hybridcap.errors import DataError


class _TruncatingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, but for paths ending in .cut announces 1000 bytes more than it sends."""

    def do_GET(self) -> None:
        if not self.path.endswith(".cut"):
            super().do_GET()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2000")
        self.end_headers()
        self.wfile.write(b"x" * 1000)
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def served_folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1 and its base address."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_TruncatingHandler, directory=str(folder)))
    # A short poll interval lets shutdown() return quickly at teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_archive_success_with_progress(tmp_path: Path, served_folder, generated_archive: Path) -> None:
    folder, base = served_folder
    (folder / "cifar-100-python.tar.gz").write_bytes(generated_archive.read_bytes())
    calls: list[tuple[int, int | None]] = []

    destination = download_archive(
        f"{base}/cifar-100-python.tar.gz",
        tmp_path / "downloads" / "archive.tar.gz",
        expected_md5=_md5(generated_archive),
        progress=lambda received, total: calls.append((received, total)),
    )

    assert destination.read_bytes() == generated_archive.read_bytes()
    size = generated_archive.stat().st_size
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    assert [path.name for path in destination.parent.iterdir()] == ["archive.tar.gz"]


def test_download_archive_checksum_mismatch_leaves_nothing(tmp_path: Path, served_folder, generated_archive: Path) -> None:
    folder, base = served_folder
    (folder / "cifar-100-python.tar.gz").write_bytes(generated_archive.read_bytes())
    downloads = tmp_path / "downloads"

    with pytest.raises(DataError, match=r"has MD5 [0-9a-f]{32}, expected 0{32}; the file was deleted"):
        download_archive(f"{base}/cifar-100-python.tar.gz", downloads / "archive.tar.gz", expected_md5="0" * 32)
    assert not downloads.exists()


def test_download_archive_truncated_transfer(tmp_path: Path, served_folder) -> None:
    _, base = served_folder
    downloads = tmp_path / "downloads"

    with pytest.raises(DataError, match=f"download of {base}/archive.cut"):
        download_archive(f"{base}/archive.cut", downloads / "archive.tar.gz", expected_md5="0" * 32)
    assert not downloads.exists()


def test_download_archive_http_error(tmp_path: Path, served_folder) -> None:
    _, base = served_folder

    with pytest.raises(DataError, match="HTTP 404"):
        download_archive(f"{base}/missing.tar.gz", tmp_path / "downloads" / "a.tar.gz", expected_md5="0" * 32)
    assert not (tmp_path / "downloads").exists()


def test_download_archive_rejects_other_schemes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="must start with http://, https:// or file://"):
        download_archive("ftp://127.0.0.1/archive.tar.gz", tmp_path / "a.tar.gz", expected_md5="0" * 32)


def test_download_archive_file_url(tmp_path: Path, generated_archive: Path) -> None:
    destination = download_archive(generated_archive.as_uri(), tmp_path / "copy.tar.gz", expected_md5=_md5(generated_archive))

    assert _md5(destination) == _md5(generated_archive)


def test_prepare_from_local_server(tmp_path: Path, served_folder, generated_archive: Path) -> None:
    folder, base = served_folder
    (folder / "cifar-100-python.tar.gz").write_bytes(generated_archive.read_bytes())
    root = tmp_path / "root"

    result = prepare_cifar100(root, url=f"{base}/cifar-100-python.tar.gz", val_per_class=1, expected_md5=_md5(generated_archive))

    assert result.rebuilt
    assert result.manifest["source"]["kind"] == "url"
    assert result.manifest["source"]["md5"] == _md5(generated_archive)
    assert (root / "downloads" / "cifar-100-python.tar.gz").is_file()
    assert len(load_prepared(root).split("val")) == 100

    # The verified download is reused: --force rebuilds without the server.
    (folder / "cifar-100-python.tar.gz").unlink()
    rebuilt = prepare_cifar100(root, url=f"{base}/cifar-100-python.tar.gz", val_per_class=1, expected_md5=_md5(generated_archive), force=True)
    assert rebuilt.rebuilt


def test_prepare_download_checksum_failure_leaves_nothing(tmp_path: Path, served_folder, generated_archive: Path) -> None:
    folder, base = served_folder
    (folder / "cifar-100-python.tar.gz").write_bytes(generated_archive.read_bytes())
    root = tmp_path / "root"

    # Without expected_md5 the download must match the official archive's MD5, which it does not.
    with pytest.raises(DataError, match="expected eb9058c3a382ffc7106e4002c42a8d85"):
        prepare_cifar100(root, url=f"{base}/cifar-100-python.tar.gz", val_per_class=1)
    assert not root.exists()
    assert list(tmp_path.iterdir()) == [folder]


def test_prepare_from_file_url(tmp_path: Path, generated_archive: Path) -> None:
    result = prepare_cifar100(tmp_path / "root", url=generated_archive.as_uri(), val_per_class=1, expected_md5=_md5(generated_archive))

    assert result.manifest["source"] == {
        "kind": "url",
        "location": generated_archive.as_uri(),
        "md5": _md5(generated_archive),
        "official_md5": False,
    }
    assert (tmp_path / "root" / "downloads" / "cifar-100-python.tar.gz").is_file()


class _StallingHandler(http.server.BaseHTTPRequestHandler):
    """Sends the first bytes of a large download, then waits until the test releases it."""

    request_seen = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000000")
        self.end_headers()
        self.wfile.write(b"\x1f\x8b" + b"x" * 998)
        self.wfile.flush()
        type(self).request_seen.set()
        type(self).release.wait(timeout=60)

    def log_message(self, format: str, *args) -> None:
        pass


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_cli_data_interrupted_download(tmp_path: Path, signal_number: int) -> None:
    _StallingHandler.request_seen.clear()
    _StallingHandler.release.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    root = tmp_path / "root"
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-100-python.tar.gz"
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hybridcap", "data", "--url", url, "--root", str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert _StallingHandler.request_seen.wait(timeout=60)
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=60)
    finally:
        _StallingHandler.release.set()
        server.shutdown()
        server.server_close()
        thread.join()

    assert process.returncode == 130
    assert stderr.strip() == f"error: interrupted; rerun this command to finish preparing {root}"
    assert not root.exists() or not any(root.rglob("*.partial"))
