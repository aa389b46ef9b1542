"""Atomic writes: a killed write leaves only a named temporary folder, which a rerun removes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hybridcap.errors import HybridcapError
from hybridcap.io import atomic_path, atomic_write_text, remove_stale_temporary_files

KILLED_WRITE = """
import os, signal, sys
import torch
from safetensors.torch import save_file
from hybridcap.io import atomic_path

with atomic_path(sys.argv[1]) as temporary:
    save_file({"weights": torch.zeros(1000)}, str(temporary))
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_atomic_path_replaces_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")

    atomic_write_text(target, "new")

    assert target.read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]


def test_atomic_path_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")

    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temporary:
            temporary.write_text("half")
            raise RuntimeError("writer failed")

    assert target.read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["config.json"]


def test_atomic_path_file_permissions_follow_umask(tmp_path: Path) -> None:
    target = tmp_path / "weights.bin"
    previous = os.umask(0o022)
    try:
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"data")
            temporary.chmod(0o600)
    finally:
        os.umask(previous)

    assert target.stat().st_mode & 0o777 == 0o644


def test_killed_write_leaves_named_folder(tmp_path: Path) -> None:
    target = tmp_path / "last.safetensors"

    completed = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target)], capture_output=True, check=False)

    assert completed.returncode == -9
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1
    assert leftovers[0].is_dir()
    assert leftovers[0].name.startswith(".last.safetensors.")
    assert leftovers[0].name.endswith(".tmp")

    removed = remove_stale_temporary_files(tmp_path, ["last.safetensors"])

    assert removed == leftovers
    assert list(tmp_path.iterdir()) == []


def test_remove_stale_keeps_other_files(tmp_path: Path) -> None:
    unrelated = [tmp_path / name for name in ("best.safetensors", ".notes.tmp", ".best.safetensors.tmp", "other.abc.tmp")]
    for path in unrelated:
        path.write_text("keep")
    stale = [tmp_path / ".best.safetensors.x1y2.tmp", tmp_path / ".archive.tar.gz.z9.partial"]
    for path in stale:
        path.write_text("stale")

    removed = remove_stale_temporary_files(tmp_path, ["best.safetensors", "archive.tar.gz"])

    assert sorted(removed) == sorted(stale)
    assert all(path.exists() for path in unrelated)


def test_atomic_path_unwritable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")

    with pytest.raises(HybridcapError, match=f"cannot write to {blocker}"):
        atomic_write_text(blocker / "config.json", "{}")
