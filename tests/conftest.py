"""Shared fixtures: generated archives, a prepared-data folder made from one, and the real archive."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cifar_factory import write_cifar100_archive  # noqa: E402

# The real archive lies outside the repository, in ../shared/data seen from the repository root.
REAL_ARCHIVE = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar-100-python.tar.gz").resolve()


@pytest.fixture(scope="session")
def generated_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated archive with 100 classes, 6 training and 2 test images per class."""
    return write_cifar100_archive(tmp_path_factory.mktemp("archive") / "cifar-100-python.tar.gz", train_per_class=6, test_per_class=2)


@pytest.fixture(scope="session")
def prepared_root(generated_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data folder: 500 train, 100 val (1 per class) and 200 test images."""
    from hybridcap.datasets import prepare_cifar100

    root = tmp_path_factory.mktemp("prepared") / "cifar100"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1, seed=0)
    return root


@pytest.fixture(scope="session")
def real_archive() -> Path:
    """The real CIFAR-100 archive; tests that use it are skipped when it is absent."""
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-100 archive not found at {REAL_ARCHIVE}")
    return REAL_ARCHIVE
