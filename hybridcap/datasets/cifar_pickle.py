"""A restricted unpickler for the CIFAR-100 python files.

The official files are Python 2 pickles (protocol 2) that contain only dicts, lists, byte
strings, ints and numpy arrays. Loading them with ``pickle.load`` would run any callable that a
tampered file names, so this unpickler resolves exactly the globals that numpy needs to rebuild
an array and rejects every other global before anything is called.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np

from hybridcap.errors import DataError


def _numpy_reconstruct() -> Any:
    # numpy 2 moved the module to numpy._core and warns when numpy.core is imported.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    # Pickles written by numpy 1.x name numpy.core; those written by numpy 2.x name numpy._core.
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, member: str) -> None:
        # encoding="bytes" keeps Python 2 byte strings as bytes, which numpy needs for array data.
        super().__init__(file, encoding="bytes")
        self.member = member

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise DataError(
                f"{self.member} references the Python global {module}.{name}, which CIFAR-100 files never contain; "
                "it was rejected without being called. Use an untampered copy of the archive"
            )
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self.member} contains a persistent reference, which CIFAR-100 files never contain; use an untampered copy of the archive")


def load_cifar_pickle(data: bytes, member: str) -> dict[str, Any]:
    """Unpickle one CIFAR-100 file and return its dict with ``str`` keys.

    Args:
        data: the file's bytes.
        member: the file's name in the archive or folder, used in error messages.

    Raises:
        DataError: when the bytes are not a pickle, name a global other than numpy's array
            reconstruction, or do not contain a dict.
    """
    try:
        value = _RestrictedUnpickler(io.BytesIO(data), member).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError) as error:
        raise DataError(f"{member} is not a valid CIFAR-100 pickle ({type(error).__name__}: {error}); use an untampered copy of the archive") from error

    if not isinstance(value, dict):
        raise DataError(f"{member} contains a {type(value).__name__}, expected a dict; use an untampered copy of the archive")

    return {decode_text(key, member): item for key, item in value.items()}


def decode_text(value: Any, member: str) -> str:
    """Return ``value`` as ``str``: Python 2 pickles store strings as bytes, newer ones as str."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{member} contains the string {value[:40]!r}, which is not valid UTF-8") from error
    raise DataError(f"{member} contains a {type(value).__name__} where a string was expected")
