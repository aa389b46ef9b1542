"""Download an archive with a progress callback and an MD5 check.

The bytes go to a temporary file beside the destination and are moved into place only after
the checksum matches, so a failed, interrupted or corrupt download leaves no file behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from hybridcap.errors import DataError

# Called with (bytes received so far, total bytes or None when the server does not send a length).
DownloadProgress = Callable[[int, "int | None"], None]

CHUNK_SIZE = 1 << 20
TIMEOUT_SECONDS = 60
SUPPORTED_SCHEMES = ("http", "https", "file")


def file_md5(path: Path) -> str:
    """Return the hex MD5 digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(url: str, destination: Path, *, expected_md5: str, progress: DownloadProgress | None = None) -> Path:
    """Download ``url`` to ``destination`` and check its MD5.

    Args:
        url: an http, https or file address.
        destination: where the verified file is moved; its folder is created when missing.
        expected_md5: hex MD5 digest that the downloaded bytes must have.
        progress: called after each chunk with the bytes received and the total size.

    Raises:
        DataError: when the address is invalid, the request fails or times out, the transfer
            ends early, or the MD5 differs. The temporary file is removed in every case.
    """
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SUPPORTED_SCHEMES:
        raise DataError(f"cannot download {url!r}: the address must start with http://, https:// or file://")

    created_folder = not destination.parent.exists()
    destination.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as file:
            received, total, md5 = _stream(url, file, progress)
        if total is not None and received != total:
            raise DataError(f"download of {url} ended after {received} of {total} bytes; try again")
        if md5 != expected_md5:
            raise DataError(f"download of {url} has MD5 {md5}, expected {expected_md5}; the file was deleted, try again or pass a local copy with --archive")
        os.replace(temporary, destination)
    except BaseException:
        temporary.unlink(missing_ok=True)
        if created_folder:
            _remove_if_empty(destination.parent)
        raise
    return destination


def _stream(url: str, file, progress: DownloadProgress | None) -> tuple[int, int | None, str]:
    digest = hashlib.md5()
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress is not None:
                progress(0, total)
            while chunk := response.read(CHUNK_SIZE):
                file.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if progress is not None:
                    progress(received, total)
    except urllib.error.HTTPError as error:
        raise DataError(f"download of {url} failed: HTTP {error.code} {error.reason}; check the address or pass a local copy with --archive") from error
    except urllib.error.URLError as error:
        raise DataError(f"download of {url} failed: {error.reason}; check the address and network or pass a local copy with --archive") from error
    except TimeoutError as error:
        raise DataError(f"download of {url} timed out after {TIMEOUT_SECONDS} s without data; try again or pass a local copy with --archive") from error
    except (http.client.HTTPException, OSError, ValueError) as error:
        # A connection closed early (http.client.IncompleteRead) or reset by the server.
        raise DataError(f"download of {url} failed: {error}; try again or pass a local copy with --archive") from error
    return received, total, digest.hexdigest()


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
