"""The real CIFAR-100 archive, when it is present next to the repository."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cifar_factory import COARSE_LABEL_NAMES, FINE_LABEL_NAMES, FINE_TO_COARSE

from hybridcap.datasets.cifar_source import read_cifar100_archive
from hybridcap.datasets.validation import validate_cifar100


@pytest.mark.real_data
def test_real_archive_reads_and_validates(real_archive: Path) -> None:
    # Reading and validating takes a few seconds; the full prepare is timed in benchmarks/.
    arrays = validate_cifar100(read_cifar100_archive(real_archive))

    assert arrays.train.images.shape == (50_000, 3, 32, 32)
    assert arrays.test.images.shape == (10_000, 3, 32, 32)
    assert arrays.train.images.dtype == np.uint8
    assert arrays.fine_label_names == FINE_LABEL_NAMES
    assert arrays.coarse_label_names == COARSE_LABEL_NAMES
    assert arrays.fine_to_coarse == FINE_TO_COARSE
    assert np.bincount(arrays.train.fine_labels, minlength=100).tolist() == [500] * 100
    assert np.bincount(arrays.test.fine_labels, minlength=100).tolist() == [100] * 100
    # Real photographs use the whole pixel range and are not constant.
    assert arrays.train.images[:100].min() == 0
    assert arrays.train.images[:100].max() == 255
    assert arrays.train.images[0].std() > 10

