"""The restricted unpickler: what the official files contain loads, any other global is rejected."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from cifar_factory import RawGlobal, cifar100_members, python2_pickle, write_members_archive

from hybridcap.datasets import prepare_cifar100
from hybridcap.datasets.cifar_pickle import load_cifar_pickle
from hybridcap.errors import DataError


class _TouchOnLoad:
    """Pickles to a call of Path.touch, so unpickling it with pickle.loads would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("key_type", ["bytes", "str"])
def test_load_cifar_pickle_key_types(key_type: str) -> None:
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    payload = python2_pickle({"data": data, "fine_labels": [3, 7], "batch_label": "training batch 1 of 1"}, key_type=key_type)

    loaded = load_cifar_pickle(payload, "cifar-100-python/train")

    assert sorted(loaded) == ["batch_label", "data", "fine_labels"]
    assert loaded["data"].dtype == np.uint8
    assert loaded["data"].shape == (2, 3072)
    assert np.array_equal(loaded["data"], data)
    assert loaded["fine_labels"] == [3, 7]


def test_load_cifar_pickle_numpy2_module_name() -> None:
    # numpy 2 writes arrays through numpy._core.multiarray; both spellings must load.
    data = np.full((1, 3072), 9, dtype=np.uint8)
    payload = python2_pickle({"data": data}).replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")

    loaded = load_cifar_pickle(payload, "train")

    assert np.array_equal(loaded["data"], data)


def test_load_cifar_pickle_python3_numpy_array() -> None:
    # Protocol 4 stores bytes natively, so numpy's own pickle needs no global beyond the array ones.
    data = np.arange(3072, dtype=np.int64).astype(np.uint8).reshape(1, 3072)
    payload = pickle.dumps({"data": data, "fine_labels": [1]}, protocol=4)

    loaded = load_cifar_pickle(payload, "train")

    assert np.array_equal(loaded["data"], data)
    assert loaded["fine_labels"] == [1]


def test_load_cifar_pickle_rejects_global_without_calling(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-pickle"
    payload = python2_pickle({"data": RawGlobal("builtins", "open", (str(marker), "w"))})

    with pytest.raises(DataError, match=r"builtins\.open.*rejected"):
        load_cifar_pickle(payload, "cifar-100-python/train")
    assert not marker.exists()


def test_load_cifar_pickle_rejects_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-shell"
    payload = python2_pickle({"data": RawGlobal("os", "system", (f"touch {marker}",))})

    with pytest.raises(DataError, match=r"os\.system"):
        load_cifar_pickle(payload, "cifar-100-python/train")
    assert not marker.exists()


def test_load_cifar_pickle_rejects_stack_global(tmp_path: Path) -> None:
    # Protocol 4 names globals with STACK_GLOBAL instead of GLOBAL; both go through the same check.
    marker = tmp_path / "created-by-reduce"
    payload = pickle.dumps({"data": _TouchOnLoad(marker)}, protocol=4)

    with pytest.raises(DataError, match=r"pathlib\.Path\.touch|pathlib\.Path"):
        load_cifar_pickle(payload, "cifar-100-python/train")
    assert not marker.exists()


def test_load_cifar_pickle_rejects_codecs_encode() -> None:
    # pickle.dumps(protocol=2) in Python 3 writes bytes through _codecs.encode, which the
    # official Python 2 files never use, so it is rejected like any other global.
    payload = pickle.dumps({"data": np.zeros((1, 3072), dtype=np.uint8)}, protocol=2)

    with pytest.raises(DataError, match=r"_codecs\.encode"):
        load_cifar_pickle(payload, "train")


def test_load_cifar_pickle_rejects_non_dict() -> None:
    with pytest.raises(DataError, match="contains a list, expected a dict"):
        load_cifar_pickle(python2_pickle([1, 2, 3]), "cifar-100-python/meta")


def test_load_cifar_pickle_rejects_garbage() -> None:
    with pytest.raises(DataError, match="not a valid CIFAR-100 pickle"):
        load_cifar_pickle(b"this is not a pickle", "cifar-100-python/meta")


def test_prepare_rejects_tampered_archive(tmp_path: Path) -> None:
    marker = tmp_path / "created-during-prepare"
    members = cifar100_members(train_per_class=2, test_per_class=1)
    members["meta"]["fine_label_names"] = RawGlobal("builtins", "open", (str(marker), "w"))
    archive = write_members_archive(tmp_path / "tampered.tar.gz", members)

    with pytest.raises(DataError, match="builtins.open"):
        prepare_cifar100(tmp_path / "root", archive=archive, val_per_class=1)
    assert not marker.exists()
    assert not (tmp_path / "root").exists()
