"""Corrupt, truncated and inconsistent archives fail with one clear DataError and write nothing."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from cifar_factory import cifar100_members, python2_pickle, write_cifar100_archive, write_members_archive

from hybridcap.datasets import prepare_cifar100
from hybridcap.datasets import cifar_source
from hybridcap.datasets.cifar_source import read_cifar100_archive
from hybridcap.errors import DataError


def _members():
    return cifar100_members(train_per_class=2, test_per_class=1, num_classes=100)


def _prepare_fails(tmp_path: Path, members, pattern: str) -> str:
    archive = write_members_archive(tmp_path / "archive.tar.gz", members)
    root = tmp_path / "root"
    with pytest.raises(DataError, match=pattern) as caught:
        prepare_cifar100(root, archive=archive, val_per_class=1)
    assert not root.exists()
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_prepare_truncated_archive(tmp_path: Path) -> None:
    archive = write_cifar100_archive(tmp_path / "full.tar.gz", train_per_class=2, test_per_class=1)
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[: len(data) // 2])

    with pytest.raises(DataError, match="truncated, corrupt or not a tar.gz file"):
        prepare_cifar100(tmp_path / "root", archive=truncated, val_per_class=1)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("position", "expected"),
    [
        (0.5, "CRC check failed"),  # a damaged byte inside the compressed data
        (-8, "CRC check failed"),  # the CRC-32 in the gzip trailer
        (-2, "Incorrect length of data produced"),  # the length in the gzip trailer
    ],
)
def test_prepare_corrupt_gzip(tmp_path: Path, position: float, expected: str) -> None:
    archive = write_cifar100_archive(tmp_path / "full.tar.gz", train_per_class=2, test_per_class=1)
    data = bytearray(archive.read_bytes())
    index = int(len(data) * position) if isinstance(position, float) else position
    data[index] ^= 0xFF
    corrupt = tmp_path / "corrupt.tar.gz"
    corrupt.write_bytes(bytes(data))

    with pytest.raises(DataError) as caught:
        prepare_cifar100(tmp_path / "root", archive=corrupt, val_per_class=1)

    assert "truncated, corrupt or not a tar.gz file" in str(caught.value)
    assert expected in str(caught.value)
    assert not (tmp_path / "root").exists()


def test_prepare_uncompressed_tar(tmp_path: Path) -> None:
    archive = write_cifar100_archive(tmp_path / "full.tar.gz", train_per_class=2, test_per_class=1)
    plain = tmp_path / "plain.tar"
    plain.write_bytes(gzip.decompress(archive.read_bytes()))

    result = prepare_cifar100(tmp_path / "root", archive=plain, val_per_class=1)

    assert result.manifest["counts"]["train"]["images"] == 100


def test_oversized_member_rejected_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = write_cifar100_archive(tmp_path / "full.tar.gz", train_per_class=2, test_per_class=1)
    with tarfile.open(archive) as opened:
        opened.extractall(tmp_path / "extracted", filter="data")
        train_size = opened.getmember("cifar-100-python/train").size
    # The limit guards against files far larger than CIFAR-100; here it is lowered below the train file.
    monkeypatch.setattr(cifar_source, "MAX_MEMBER_BYTES", train_size - 1)

    with pytest.raises(DataError, match=rf"member cifar-100-python/train of {archive} is \d+ MB, larger than any CIFAR-100 file"):
        read_cifar100_archive(archive)
    with pytest.raises(DataError, match=r"cifar-100-python/train is \d+ MB, larger than any CIFAR-100 file"):
        cifar_source.read_cifar100_folder(tmp_path / "extracted")


def test_prepare_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"<html>not found</html>")

    with pytest.raises(DataError, match="truncated, corrupt or not a tar.gz file"):
        prepare_cifar100(tmp_path / "root", archive=bogus)


def test_prepare_missing_archive(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        prepare_cifar100(tmp_path / "root", archive=tmp_path / "absent.tar.gz")


def test_prepare_missing_meta(tmp_path: Path) -> None:
    members = _members()
    del members["meta"]
    _prepare_fails(tmp_path, members, "has no member cifar-100-python/meta")


def test_prepare_missing_key(tmp_path: Path) -> None:
    members = _members()
    del members["train"]["fine_labels"]
    _prepare_fails(tmp_path, members, "cifar-100-python/train has no key 'fine_labels'")


@pytest.mark.parametrize(
    "data",
    [
        np.zeros((200, 3000), dtype=np.uint8),
        np.zeros((200, 3072), dtype=np.int32),
        np.zeros((200, 3, 32, 32), dtype=np.uint8),
        [1, 2, 3],
    ],
    ids=["wrong-width", "wrong-dtype", "four-dimensional", "list"],
)
def test_prepare_wrong_data_shape(tmp_path: Path, data) -> None:
    members = _members()
    members["train"]["data"] = data
    _prepare_fails(tmp_path, members, r"'data' in cifar-100-python/train is a .*expected an N x 3072 uint8 array")


def test_prepare_fine_label_out_of_range(tmp_path: Path) -> None:
    members = _members()
    members["test"]["fine_labels"][5] = 100
    message = _prepare_fails(tmp_path, members, "'fine_labels' in cifar-100-python/test contains the label 100 at position 5")
    assert "100 names in 'fine_label_names'" in message


def test_prepare_negative_coarse_label(tmp_path: Path) -> None:
    members = _members()
    members["train"]["coarse_labels"][0] = -1
    # A negative int does not fit the factory's unsigned opcodes, so store it as a numpy array.
    members["train"]["coarse_labels"] = np.array(members["train"]["coarse_labels"], dtype=np.int8)
    _prepare_fails(tmp_path, members, "contains the label -1 at position 0")


def test_prepare_label_count_mismatch(tmp_path: Path) -> None:
    members = _members()
    members["train"]["fine_labels"].pop()
    _prepare_fails(tmp_path, members, "'fine_labels' in cifar-100-python/train has 199 entries for 200 images")


def test_prepare_inconsistent_fine_to_coarse(tmp_path: Path) -> None:
    members = _members()
    labels = members["train"]["fine_labels"]
    first_apple = labels.index(0)
    members["train"]["coarse_labels"][first_apple] = 5
    _prepare_fails(tmp_path, members, "fine class 'apple' appears under the superclasses 'fruit_and_vegetables', 'household_electrical_devices'")


def test_prepare_too_few_fine_names(tmp_path: Path) -> None:
    members = _members()
    members["meta"]["fine_label_names"] = members["meta"]["fine_label_names"][:99]
    _prepare_fails(tmp_path, members, "outside the 99 names in 'fine_label_names'")


def test_prepare_too_many_fine_names(tmp_path: Path) -> None:
    members = _members()
    members["meta"]["fine_label_names"].append("unicorn")
    _prepare_fails(tmp_path, members, r"no image of class 100 \('unicorn'\)")


def test_prepare_too_many_coarse_names(tmp_path: Path) -> None:
    members = _members()
    members["meta"]["coarse_label_names"].append("dragons")
    _prepare_fails(tmp_path, members, "lists 21 superclasses, but no image belongs to 'dragons'")


def test_prepare_repeated_fine_name(tmp_path: Path) -> None:
    members = _members()
    members["meta"]["fine_label_names"][1] = "apple"
    _prepare_fails(tmp_path, members, "lists the name 'apple' twice")


def test_prepare_val_per_class_too_large(tmp_path: Path) -> None:
    archive = write_cifar100_archive(tmp_path / "archive.tar.gz", train_per_class=2, test_per_class=1)
    with pytest.raises(DataError, match="class 'apple' has 2 training images, too few to hold out 2"):
        prepare_cifar100(tmp_path / "root", archive=archive, val_per_class=2)
    assert not (tmp_path / "root").exists()


def test_read_archive_ignores_traversal_member(tmp_path: Path) -> None:
    # A member named ../escaped must never be written; members are read in memory only.
    members = _members()
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, contents in members.items():
            data = python2_pickle(contents)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        payload = b"escaped"
        info = tarfile.TarInfo("../escaped")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))

    raw = read_cifar100_archive(archive)

    assert len(raw.train["fine_labels"]) == 200
    assert not (tmp_path.parent / "escaped").exists()
    assert not (Path.cwd().parent / "escaped").exists()
