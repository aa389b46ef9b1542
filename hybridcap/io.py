"""Atomic file writes and safetensors weights that carry the config needed to rebuild them.

Every file that hybridcap writes goes through a temporary file next to it and an
``os.replace``, so a killed process leaves either the old file or the new one, never half of one.
Torch is imported inside the functions that need it, to keep ``hybridcap --help`` fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import glob
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hybridcap.errors import HybridcapError, RunFolderError

if TYPE_CHECKING:
    import torch

CONFIG_METADATA_KEY = "hybridcap_config"
TEMPORARY_SUFFIX = ".tmp"
PARTIAL_SUFFIX = ".partial"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` and move it onto ``path`` when the block succeeds.

    The temporary path lies in a new hidden folder ``.<name>.<random>.tmp`` next to ``path``, so
    that writers which make their own temporary files (safetensors 0.8 does) make them there too.
    On any exception that folder is removed and ``path`` is left as it was; after a kill,
    ``remove_stale_temporary_files`` removes it. Raises HybridcapError when the folder cannot be
    created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary_folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX, dir=path.parent))
    except OSError as error:
        raise HybridcapError(f"cannot write to {path.parent}: {error.strerror or error}") from error
    temporary = temporary_folder / path.name
    try:
        yield temporary
        # Writers such as safetensors leave the file readable by its owner only; give it the
        # permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    finally:
        shutil.rmtree(temporary_folder, ignore_errors=True)


def remove_stale_temporary_files(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete what killed writes of the files ``names`` left in ``folder`` and return the deleted paths.

    That is the ``.<name>.<random>.tmp`` folders of ``atomic_path`` (files, in older versions)
    and the ``.<name>.<random>.partial`` files of downloads. Call it only while no other process
    writes those files.
    """
    folder = Path(folder)
    removed = []
    for name in names:
        for suffix in (TEMPORARY_SUFFIX, PARTIAL_SUFFIX):
            for stale in folder.glob(f".{glob.escape(name)}.*{suffix}"):
                if stale.is_dir() and not stale.is_symlink():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, raising RunFolderError with the path when it is missing or invalid."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RunFolderError(f"missing file {path}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"invalid JSON in {path}: {error}") from error


def save_weights(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any] | None = None,
) -> None:
    """Write tensors to a safetensors file atomically, with ``config`` as JSON in its metadata.

    Tensors are made contiguous and moved to the CPU first. ``config`` must be JSON-serialisable;
    it is what a loader needs to rebuild the network before loading the weights.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    cpu_tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    metadata = {CONFIG_METADATA_KEY: json.dumps(dict(config or {}), sort_keys=True)}
    with atomic_path(path) as temporary:
        try:
            save_file(cpu_tensors, str(temporary), metadata=metadata)
        except SafetensorError as error:
            # safetensors reports a full disk or a write failure as its own error type, not OSError.
            raise HybridcapError(f"cannot write {path}: {error}; free some disk space or choose another folder") from error


def load_weights(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by ``save_weights`` and return ``(tensors, config)``.

    Raises RunFolderError when the file is missing or is not a valid safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"missing weights file {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise RunFolderError(f"invalid weights file {path}: {error}") from error
    try:
        config = json.loads(metadata.get(CONFIG_METADATA_KEY, "{}"))
    except json.JSONDecodeError as error:
        raise RunFolderError(f"invalid config metadata in {path}: {error}") from error
    return tensors, config


def state_dict_mismatch(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Describe the first missing, unexpected and wrongly shaped entries of ``tensors`` for ``module``, or return None."""
    expected = module.state_dict()
    problems = []
    missing = [name for name in expected if name not in tensors]
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {missing[0]}")
    unexpected = [name for name in tensors if name not in expected]
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {unexpected[0]}")
    wrong_shapes = [name for name in expected if name in tensors and tuple(tensors[name].shape) != tuple(expected[name].shape)]
    if wrong_shapes:
        name = wrong_shapes[0]
        problems.append(f"{len(wrong_shapes)} of another shape, e.g. {name} is {tuple(tensors[name].shape)}, expected {tuple(expected[name].shape)}")
    return "; ".join(problems) or None
