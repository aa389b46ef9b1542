"""Check the unpickled CIFAR-100 files and turn them into typed arrays.

Each check raises a DataError that names the file, the value found and what was expected,
so that a corrupt or tampered archive fails before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridcap.datasets.cifar_pickle import decode_text
from hybridcap.datasets.cifar_source import RawCifar100
from hybridcap.errors import DataError

IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
# One row of ``data`` is a 32x32 image stored channel by channel: 1024 red, 1024 green, 1024 blue values.
ROW_LENGTH = IMAGE_CHANNELS * IMAGE_SIZE * IMAGE_SIZE


@dataclass
class LabelledImages:
    """Images and labels of one official CIFAR-100 file."""

    images: np.ndarray  # (N, 3, 32, 32) uint8
    fine_labels: np.ndarray  # (N,) int64
    coarse_labels: np.ndarray  # (N,) int64


@dataclass
class Cifar100Arrays:
    """The validated official train and test sets with their class names."""

    train: LabelledImages
    test: LabelledImages
    fine_label_names: list[str]  # as stored, e.g. "aquarium_fish"
    coarse_label_names: list[str]  # as stored, e.g. "vehicles_1"
    fine_to_coarse: list[int]


def validate_cifar100(raw: RawCifar100) -> Cifar100Arrays:
    """Validate the three files and return their arrays.

    Raises:
        DataError: on a missing key or data that is not N x 3072 uint8. Also on a label list
            of the wrong length or type, or a label outside the class-name lists. Also on a
            name list with unused or repeated names, or a fine class under two superclasses.
    """
    meta_path = raw.member_paths["meta"]
    fine_label_names = _read_names(raw.meta, "fine_label_names", meta_path)
    coarse_label_names = _read_names(raw.meta, "coarse_label_names", meta_path)

    train = _read_labelled_images(raw.train, raw.member_paths["train"], len(fine_label_names), len(coarse_label_names))
    test = _read_labelled_images(raw.test, raw.member_paths["test"], len(fine_label_names), len(coarse_label_names))

    fine_to_coarse = _fine_to_coarse(train, test, fine_label_names, coarse_label_names, raw.member_paths)
    return Cifar100Arrays(
        train=train,
        test=test,
        fine_label_names=fine_label_names,
        coarse_label_names=coarse_label_names,
        fine_to_coarse=fine_to_coarse,
    )


def _require_key(contents: dict[str, Any], key: str, path: str) -> Any:
    if key not in contents:
        raise DataError(f"{path} has no key '{key}'; it is not a CIFAR-100 python file")
    return contents[key]


def _read_names(meta: dict[str, Any], key: str, path: str) -> list[str]:
    value = _require_key(meta, key, path)
    if not isinstance(value, list) or not value:
        raise DataError(f"'{key}' in {path} is a {type(value).__name__} of length {_length(value)}, expected a non-empty list of names")

    names = [decode_text(item, path) for item in value]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"'{key}' in {path} lists the name '{name}' twice; class names must be unique")
        seen.add(name)
    return names


def _read_labelled_images(contents: dict[str, Any], path: str, fine_count: int, coarse_count: int) -> LabelledImages:
    data = _require_key(contents, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"'data' in {path} is a {found}, expected an N x {ROW_LENGTH} uint8 array (one 32x32 RGB image per row)")

    count = data.shape[0]
    fine_labels = _read_labels(contents, "fine_labels", path, count, fine_count, "fine_label_names")
    coarse_labels = _read_labels(contents, "coarse_labels", path, count, coarse_count, "coarse_label_names")

    # (N, 3072) -> (N, 3, 32, 32): each row contains the red plane, then green, then blue, row-major.
    images = data.reshape(count, IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    return LabelledImages(images=images, fine_labels=fine_labels, coarse_labels=coarse_labels)


def _read_labels(contents: dict[str, Any], key: str, path: str, count: int, class_count: int, names_key: str) -> np.ndarray:
    value = _require_key(contents, key, path)
    if not isinstance(value, (list, np.ndarray)):
        raise DataError(f"'{key}' in {path} is a {type(value).__name__}, expected a list of integers")

    labels = np.asarray(value)
    if labels.ndim != 1 or len(labels) != count:
        raise DataError(f"'{key}' in {path} has {_length(value)} entries for {count} images; expected one label per image")
    if count and labels.dtype.kind not in "iu":
        raise DataError(f"'{key}' in {path} contains {labels.dtype} values, expected integers")

    labels = labels.astype(np.int64)
    out_of_range = (labels < 0) | (labels >= class_count)
    if out_of_range.any():
        position = int(np.flatnonzero(out_of_range)[0])
        raise DataError(
            f"'{key}' in {path} contains the label {int(labels[position])} at position {position}, "
            f"outside the {class_count} names in '{names_key}'; the file is corrupt or does not match its meta file"
        )
    return labels


def _fine_to_coarse(
    train: LabelledImages,
    test: LabelledImages,
    fine_label_names: list[str],
    coarse_label_names: list[str],
    member_paths: dict[str, str],
) -> list[int]:
    fine_to_coarse: list[int] = []
    for fine_label, fine_name in enumerate(fine_label_names):
        in_train = train.fine_labels == fine_label
        if not in_train.any():
            raise DataError(
                f"{member_paths['train']} has no image of class {fine_label} ('{fine_name}') although '{member_paths['meta']}' "
                f"lists {len(fine_label_names)} fine class names; the files do not belong together"
            )

        coarse_found = np.unique(np.concatenate([train.coarse_labels[in_train], test.coarse_labels[test.fine_labels == fine_label]]))
        if len(coarse_found) != 1:
            found = ", ".join(f"'{coarse_label_names[label]}'" for label in coarse_found)
            raise DataError(f"fine class '{fine_name}' appears under the superclasses {found}; each fine class must belong to one superclass")
        fine_to_coarse.append(int(coarse_found[0]))

    unused = sorted(set(range(len(coarse_label_names))) - set(fine_to_coarse))
    if unused:
        raise DataError(
            f"'coarse_label_names' in {member_paths['meta']} lists {len(coarse_label_names)} superclasses, "
            f"but no image belongs to '{coarse_label_names[unused[0]]}'; the files do not belong together"
        )
    return fine_to_coarse


def _length(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "unknown"
