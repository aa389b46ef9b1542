"""Read the CIFAR-100 python files from the official archive or from an extracted folder.

Archive members are read straight from the tar stream and never extracted, so a member name
such as ``../../etc/passwd`` cannot write outside the prepared-data folder.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridcap.datasets.cifar_pickle import load_cifar_pickle
from hybridcap.errors import DataError

ARCHIVE_FOLDER = "cifar-100-python"
MEMBER_NAMES = ("train", "test", "meta")
GZIP_MAGIC = b"\x1f\x8b"
READ_CHUNK_BYTES = 1 << 20
# The largest official file, train, is about 155 MB: 50,000 rows of 3,072 bytes plus labels and
# names. A bigger member cannot be CIFAR-100, so it is rejected before it is read into memory.
MAX_MEMBER_BYTES = 512 * 1024 * 1024


@dataclass
class RawCifar100:
    """The three unpickled CIFAR-100 files, not yet validated."""

    train: dict[str, Any]
    test: dict[str, Any]
    meta: dict[str, Any]
    # Source path of each file for error messages, e.g. "cifar-100-python/train".
    member_paths: dict[str, str]


def read_cifar100_archive(path: Path) -> RawCifar100:
    """Read ``train``, ``test`` and ``meta`` from a ``cifar-100-python.tar.gz`` archive.

    Raises:
        DataError: when the file is missing, truncated, not a tar archive, or lacks a member.
    """
    if not path.exists():
        raise DataError(f"archive {path} not found; check the path or omit --archive to download the dataset")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an archive; pass it with --dir instead of --archive")

    expected_members = {f"{ARCHIVE_FOLDER}/{name}": name for name in MEMBER_NAMES}
    contents: dict[str, bytes] = {}
    try:
        with open(path, "rb") as file:
            is_gzip = file.read(len(GZIP_MAGIC)) == GZIP_MAGIC
            file.seek(0)
            # tarfile's own stream reader never checks the gzip trailer's CRC-32, and it stops at the
            # end of the tar data, so gzip is decoded here and read to its end below.
            stream = gzip.GzipFile(fileobj=file, mode="rb") if is_gzip else file
            # Stream mode decompresses the archive once, front to back, instead of seeking.
            with tarfile.open(fileobj=stream, mode="r|" if is_gzip else "r|*") as archive:
                for member in archive:
                    member_name = member.name.removeprefix("./")
                    if member_name not in expected_members or not member.isfile():
                        continue
                    _check_member_size(member.size, f"member {member_name} of {path}")
                    extracted = archive.extractfile(member)
                    if extracted is None:
                        continue
                    contents[expected_members[member_name]] = extracted.read()
            if is_gzip:
                # GzipFile compares the CRC-32 and length in the trailer once it reaches the end.
                while stream.read(READ_CHUNK_BYTES):
                    pass
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise DataError(f"cannot read archive {path}: it is truncated, corrupt or not a tar.gz file ({error}); download it again") from error

    for name in MEMBER_NAMES:
        if name not in contents:
            raise DataError(f"archive {path} has no member {ARCHIVE_FOLDER}/{name}; it is not the CIFAR-100 python archive")

    member_paths = {name: f"{ARCHIVE_FOLDER}/{name}" for name in MEMBER_NAMES}
    return _unpickle(contents, member_paths)


def read_cifar100_folder(path: Path) -> RawCifar100:
    """Read ``train``, ``test`` and ``meta`` from an extracted ``cifar-100-python`` folder.

    ``path`` may be the ``cifar-100-python`` folder itself or the folder that contains it.

    Raises:
        DataError: when the folder or one of the three files is missing.
    """
    if not path.is_dir():
        raise DataError(f"folder {path} not found; pass the extracted cifar-100-python folder with --dir")
    if not (path / "meta").exists() and (path / ARCHIVE_FOLDER).is_dir():
        path = path / ARCHIVE_FOLDER

    contents: dict[str, bytes] = {}
    member_paths: dict[str, str] = {}
    for name in MEMBER_NAMES:
        file_path = path / name
        if not file_path.is_file():
            raise DataError(f"folder {path} has no file {name}; it is not an extracted CIFAR-100 python archive")
        _check_member_size(file_path.stat().st_size, str(file_path))
        contents[name] = file_path.read_bytes()
        member_paths[name] = str(file_path)
    return _unpickle(contents, member_paths)


def _check_member_size(size: int, description: str) -> None:
    if size > MAX_MEMBER_BYTES:
        raise DataError(
            f"{description} is {size / 1e6:.0f} MB, larger than any CIFAR-100 file ({MAX_MEMBER_BYTES / 1e6:.0f} MB at most); "
            "it is not the CIFAR-100 python data"
        )


def _unpickle(contents: dict[str, bytes], member_paths: dict[str, str]) -> RawCifar100:
    loaded = {name: load_cifar_pickle(contents[name], member_paths[name]) for name in MEMBER_NAMES}
    return RawCifar100(train=loaded["train"], test=loaded["test"], meta=loaded["meta"], member_paths=member_paths)
