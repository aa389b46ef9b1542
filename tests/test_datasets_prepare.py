"""prepare_cifar100 and load_prepared: split, reruns, --force, sources and incomplete folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cifar_factory import write_cifar100_archive, write_cifar100_folder

from hybridcap.datasets import OFFICIAL_MD5, OFFICIAL_URL, default_data_root, load_prepared, normalize_images, prepare_cifar100
from hybridcap.datasets.prepared import data_command
from hybridcap.datasets.split import split_per_class
from hybridcap.errors import DataError


def test_prepared_root_splits(prepared_root: Path) -> None:
    prepared = load_prepared(prepared_root)

    train, val, test = (prepared.split(name) for name in ("train", "val", "test"))
    assert train.images.shape == (500, 3, 32, 32)
    assert train.images.dtype == torch.uint8
    assert train.fine_labels.dtype == torch.int64
    assert val.images.shape == (100, 3, 32, 32)
    assert test.images.shape == (200, 3, 32, 32)
    assert len(prepared.fine_names) == 100
    assert len(prepared.coarse_names) == 20
    assert prepared.fine_names[1] == "aquarium fish"
    assert prepared.coarse_names[18] == "vehicles"
    for split in (train, val, test):
        expected_coarse = torch.tensor(prepared.fine_to_coarse)[split.fine_labels]
        assert torch.equal(split.coarse_labels, expected_coarse)


def test_prepared_root_val_is_per_class(prepared_root: Path) -> None:
    prepared = load_prepared(prepared_root)

    val_counts = torch.bincount(prepared.split("val").fine_labels, minlength=100)
    train_counts = torch.bincount(prepared.split("train").fine_labels, minlength=100)
    assert val_counts.tolist() == [1] * 100
    assert train_counts.tolist() == [5] * 100


def test_prepared_images_match_archive(tmp_path: Path) -> None:
    archive = write_cifar100_archive(tmp_path / "a.tar.gz", train_per_class=3, test_per_class=1, num_classes=4)
    from hybridcap.datasets.cifar_source import read_cifar100_archive

    raw = read_cifar100_archive(archive)
    prepare_cifar100(tmp_path / "root", archive=archive, val_per_class=1)
    prepared = load_prepared(tmp_path / "root")

    from safetensors.numpy import load_file

    stored = load_file(str(tmp_path / "root" / "images.safetensors"))
    for split_name in ("train", "val"):
        indices = stored[f"{split_name}_source_indices"]
        expected = raw.train["data"][indices].reshape(-1, 3, 32, 32)
        assert np.array_equal(prepared.split(split_name).images.numpy(), expected)
    assert np.array_equal(prepared.split("test").images.numpy(), raw.test["data"].reshape(-1, 3, 32, 32))
    assert sorted(np.concatenate([stored["train_source_indices"], stored["val_source_indices"]]).tolist()) == list(range(12))


def test_split_per_class_reproducible() -> None:
    labels = np.repeat(np.arange(10), 20)
    np.random.default_rng(1).shuffle(labels)
    names = [f"class{index}" for index in range(10)]

    train_a, val_a = split_per_class(labels, names, val_per_class=5, seed=3)
    train_b, val_b = split_per_class(labels, names, val_per_class=5, seed=3)
    _, val_other_seed = split_per_class(labels, names, val_per_class=5, seed=4)

    assert np.array_equal(val_a, val_b)
    assert np.array_equal(train_a, train_b)
    assert not np.array_equal(val_a, val_other_seed)
    assert np.bincount(labels[val_a], minlength=10).tolist() == [5] * 10
    assert np.bincount(labels[train_a], minlength=10).tolist() == [15] * 10
    assert len(np.intersect1d(train_a, val_a)) == 0
    assert np.array_equal(np.sort(np.concatenate([train_a, val_a])), np.arange(200))


def test_split_per_class_zero_validation() -> None:
    labels = np.array([0, 1, 0, 1])

    train, val = split_per_class(labels, ["a", "b"], val_per_class=0, seed=0)

    assert train.tolist() == [0, 1, 2, 3]
    assert val.tolist() == []


def test_prepare_seed_changes_split(tmp_path: Path, generated_archive: Path) -> None:
    first = prepare_cifar100(tmp_path / "first", archive=generated_archive, val_per_class=2, seed=0)
    same = prepare_cifar100(tmp_path / "same", archive=generated_archive, val_per_class=2, seed=0)
    other = prepare_cifar100(tmp_path / "other", archive=generated_archive, val_per_class=2, seed=1)

    def val_images(root: Path) -> torch.Tensor:
        return load_prepared(root).split("val").images

    assert first.rebuilt
    assert same.rebuilt
    assert other.rebuilt
    assert torch.equal(val_images(tmp_path / "first"), val_images(tmp_path / "same"))
    assert not torch.equal(val_images(tmp_path / "first"), val_images(tmp_path / "other"))


def test_prepare_rerun_is_noop(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    first = prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    images_mtime = (root / "images.safetensors").stat().st_mtime_ns

    second = prepare_cifar100(root, archive=generated_archive, val_per_class=1)

    assert first.rebuilt
    assert not second.rebuilt
    assert second.warnings == []
    assert second.manifest == first.manifest
    assert (root / "images.safetensors").stat().st_mtime_ns == images_mtime


def test_prepare_force_rebuilds(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    (root / "images.safetensors").write_bytes(b"damaged")

    result = prepare_cifar100(root, archive=generated_archive, val_per_class=1, force=True)

    assert result.rebuilt
    assert len(load_prepared(root).split("train")) == 500


def test_prepare_other_options_rebuild(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)

    result = prepare_cifar100(root, archive=generated_archive, val_per_class=2)

    assert result.rebuilt
    assert len(load_prepared(root).split("val")) == 200
    assert result.manifest["options"]["val_per_class"] == 2


def test_prepare_bad_source_keeps_existing_data(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(generated_archive.read_bytes()[:1000])

    with pytest.raises(DataError):
        prepare_cifar100(root, archive=broken, val_per_class=1, force=True)

    assert len(load_prepared(root).split("val")) == 100


def test_prepare_md5_warning(tmp_path: Path, generated_archive: Path) -> None:
    result = prepare_cifar100(tmp_path / "root", archive=generated_archive, val_per_class=1)

    assert len(result.warnings) == 1
    assert "differs from the official CIFAR-100 release" in result.warnings[0]
    assert OFFICIAL_MD5 in result.warnings[0]
    assert result.manifest["source"]["official_md5"] is False
    assert len(result.manifest["source"]["md5"]) == 32


@pytest.mark.parametrize("key_type", ["bytes", "str"])
def test_prepare_from_folder(tmp_path: Path, key_type: str) -> None:
    folder = write_cifar100_folder(tmp_path / "extracted", train_per_class=3, test_per_class=1, num_classes=10, key_type=key_type)

    # Both the cifar-100-python folder and the folder above it are accepted.
    result = prepare_cifar100(tmp_path / "root", directory=folder.parent, val_per_class=1)

    assert result.warnings == []
    assert result.manifest["source"]["kind"] == "directory"
    # The first ten CIFAR-100 classes belong to nine superclasses (beetle and bee share one).
    assert result.manifest["counts"]["train"] == {"images": 20, "classes": 10, "superclasses": 9}
    assert load_prepared(tmp_path / "root").fine_names[:2] == ["apple", "aquarium fish"]


def test_prepare_str_key_archive(tmp_path: Path) -> None:
    archive = write_cifar100_archive(tmp_path / "a.tar.gz", train_per_class=2, test_per_class=1, key_type="str")

    result = prepare_cifar100(tmp_path / "root", archive=archive, val_per_class=1)

    assert result.manifest["counts"]["val"]["images"] == 100


def test_prepare_rejects_two_sources(tmp_path: Path, generated_archive: Path) -> None:
    with pytest.raises(DataError, match="--url and --archive were given together"):
        prepare_cifar100(tmp_path / "root", url="http://127.0.0.1:1/a.tar.gz", archive=generated_archive)


@pytest.mark.parametrize(("options", "message"), [({"val_per_class": -1}, "--val-per-class must be 0 or more"), ({"seed": -5}, "--seed must be 0 or more")])
def test_prepare_rejects_negative_options(tmp_path: Path, generated_archive: Path, options, message: str) -> None:
    with pytest.raises(DataError, match=message):
        prepare_cifar100(tmp_path / "root", archive=generated_archive, **options)


def test_prepare_root_is_file(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    root.write_text("not a folder")

    with pytest.raises(DataError, match="is a file"):
        prepare_cifar100(root, archive=generated_archive)


def test_data_command_quotes_and_omits_defaults(tmp_path: Path) -> None:
    root = tmp_path / "my data"
    official = {"source": {"kind": "url", "location": OFFICIAL_URL}, "val_per_class": 50, "seed": 0}
    folder = {"source": {"kind": "directory", "location": "/data/cifar 100"}, "seed": 3}

    assert data_command(root, official) == f"hybridcap data --root '{root}' --val-per-class 50 --seed 0 --force"
    assert data_command(root, folder, force=False) == f"hybridcap data --root '{root}' --dir '/data/cifar 100' --seed 3"
    assert data_command(root) == f"hybridcap data --root '{root}' --force"


def test_load_prepared_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no prepared CIFAR-100 data in .*run `hybridcap data --root"):
        load_prepared(tmp_path / "nothing")


def test_load_prepared_without_manifest_is_incomplete(tmp_path: Path, generated_archive: Path) -> None:
    # An interrupted rebuild removes the manifest first, which is what this simulates.
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    (root / "manifest.json").unlink()

    with pytest.raises(DataError, match=r"is incomplete \(no manifest.json; was `hybridcap data` interrupted\?\); rerun `hybridcap data --root"):
        load_prepared(root)
    assert prepare_cifar100(root, archive=generated_archive, val_per_class=1).rebuilt


def test_load_prepared_missing_file(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    (root / "captions.json").unlink()

    with pytest.raises(DataError, match=r"incomplete \(missing captions.json\)"):
        load_prepared(root)


def test_load_prepared_other_format(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 999
    (root / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(DataError, match="unsupported format"):
        load_prepared(root)


def test_prepared_split_unknown_name(prepared_root: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        load_prepared(prepared_root).split("validation")


def test_prepare_removes_stale_temporary_files(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    stale = root / ".images.safetensors.abc123.tmp"
    stale.write_bytes(b"left by a killed run")

    prepare_cifar100(root, archive=generated_archive, val_per_class=1)

    assert not stale.exists()
    assert sorted(path.name for path in root.iterdir()) == ["captions.json", "classes.json", "images.safetensors", "manifest.json", "vocabulary.json"]


def test_default_data_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "cache" / "hybridcap" / "cifar100"

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_root() == tmp_path / "home" / ".cache" / "hybridcap" / "cifar100"


def test_normalize_images_range() -> None:
    images = torch.tensor([0, 127, 128, 255], dtype=torch.uint8)

    normalized = normalize_images(images)

    assert normalized.dtype == torch.float32
    assert normalized[0].item() == -1.0
    assert normalized[-1].item() == 1.0
    assert abs(normalized[1].item() - (127 / 127.5 - 1)) < 1e-7


def test_normalize_images_rejects_float() -> None:
    with pytest.raises(TypeError, match="expects uint8"):
        normalize_images(torch.zeros(2))
