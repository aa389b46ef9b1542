"""Generated CIFAR-100 archives and folders in the official layout, for tests.

The files are written opcode by opcode as Python 2 pickles (protocol 2) the way the official
release stores them: strings as SHORT_BINSTRING (bytes) unless ``key_type="str"``, arrays
rebuilt through ``numpy.core.multiarray._reconstruct``. Images are class-dependent patterns
plus noise, so a small network can learn to tell classes apart.
"""

from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

FINE_LABEL_NAMES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]  # fmt: skip

COARSE_LABEL_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
]  # fmt: skip

# Superclass of each fine class in the official release.
FINE_TO_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip

KeyType = Literal["bytes", "str"]


# --- pickle writing ---------------------------------------------------------------------------


class RawGlobal:
    """A reference to ``module.name`` written as a GLOBAL opcode, for pickles that must be rejected."""

    def __init__(self, module: str, name: str, arguments: tuple[Any, ...] = ()) -> None:
        self.module = module
        self.name = name
        # Written as a REDUCE call, so an unsafe unpickler would call module.name(*arguments).
        self.arguments = arguments


class _Python2PickleWriter:
    def __init__(self, key_type: KeyType) -> None:
        self.key_type = key_type
        self.out = io.BytesIO()

    def dumps(self, value: Any) -> bytes:
        self.out.write(b"\x80\x02")  # PROTO 2
        self.write(value)
        self.out.write(b".")  # STOP
        return self.out.getvalue()

    def write(self, value: Any) -> None:
        if value is None:
            self.out.write(b"N")
        elif isinstance(value, bool):
            self.out.write(b"\x88" if value else b"\x89")
        elif isinstance(value, (int, np.integer)):
            self.write_int(int(value))
        elif isinstance(value, bytes):
            self.write_byte_string(value)
        elif isinstance(value, str):
            self.write_text(value)
        elif isinstance(value, list):
            self.out.write(b"](")  # EMPTY_LIST, MARK
            for item in value:
                self.write(item)
            self.out.write(b"e")  # APPENDS
        elif isinstance(value, tuple):
            self.out.write(b"(")
            for item in value:
                self.write(item)
            self.out.write(b"t")  # TUPLE
        elif isinstance(value, dict):
            self.out.write(b"}(")  # EMPTY_DICT, MARK
            for key, item in value.items():
                self.write(key.encode("ascii") if self.key_type == "bytes" and isinstance(key, str) else key)
                self.write(item)
            self.out.write(b"u")  # SETITEMS
        elif isinstance(value, np.ndarray):
            self.write_array(value)
        elif isinstance(value, RawGlobal):
            self.write_global(value.module, value.name)
            self.write(value.arguments)
            self.out.write(b"R")  # REDUCE
        else:
            raise TypeError(f"cannot write {type(value).__name__} as a Python 2 pickle")

    def write_int(self, value: int) -> None:
        if 0 <= value < 256:
            self.out.write(b"K" + struct.pack("<B", value))
        elif 0 <= value < 65536:
            self.out.write(b"M" + struct.pack("<H", value))
        else:
            self.out.write(b"J" + struct.pack("<i", value))

    def write_byte_string(self, value: bytes) -> None:
        # Python 2 str: SHORT_BINSTRING up to 255 bytes, BINSTRING above.
        if len(value) < 256:
            self.out.write(b"U" + struct.pack("<B", len(value)) + value)
        else:
            self.out.write(b"T" + struct.pack("<i", len(value)) + value)

    def write_text(self, value: str) -> None:
        encoded = value.encode("utf-8")
        self.out.write(b"X" + struct.pack("<I", len(encoded)) + encoded)  # BINUNICODE

    def write_global(self, module: str, name: str) -> None:
        self.out.write(b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n")

    def write_array(self, array: np.ndarray) -> None:
        # _reconstruct(ndarray, (0,), b"b") makes an empty array; BUILD then sets
        # (version, shape, dtype, is_fortran, raw bytes), as numpy's own __reduce__ does.
        self.write_global("numpy.core.multiarray", "_reconstruct")
        self.write_global("numpy", "ndarray")
        self.write((0,))
        self.write_byte_string(b"b")
        self.out.write(b"\x87R")  # TUPLE3, REDUCE
        self.out.write(b"(")
        self.write_int(1)
        self.write(tuple(array.shape))
        self.write_dtype(array.dtype)
        self.out.write(b"\x89")  # C order
        self.write_byte_string(np.ascontiguousarray(array).tobytes())
        self.out.write(b"tb")  # TUPLE, BUILD

    def write_dtype(self, dtype: np.dtype) -> None:
        self.write_global("numpy", "dtype")
        self.write_text(dtype.str[1:])
        self.out.write(b"\x89\x88\x87R")  # False, True, TUPLE3, REDUCE
        byte_order = "|" if dtype.itemsize == 1 else "<"
        self.write((3, byte_order, None, None, None, -1, -1, 0))
        self.out.write(b"b")  # BUILD


def python2_pickle(value: Any, key_type: KeyType = "bytes") -> bytes:
    """Serialise dicts, lists, strings, ints, numpy arrays and RawGlobal as a protocol-2 pickle."""
    return _Python2PickleWriter(key_type).dumps(value)


# --- data ------------------------------------------------------------------------------------


def class_pattern(fine_label: int) -> np.ndarray:
    """Return the (3, 32, 32) float pattern of a class: a colour and a stripe direction and frequency."""
    generator = np.random.default_rng(10_000 + fine_label)
    colour = generator.uniform(40, 215, size=(3, 1, 1))
    rows, columns = np.mgrid[0:32, 0:32]
    angle = np.pi * (fine_label % 10) / 10
    frequency = 0.25 + 0.1 * (fine_label // 10)
    stripes = np.sin(frequency * (np.cos(angle) * columns + np.sin(angle) * rows))
    return colour + 35.0 * stripes[None, :, :]


def make_split(
    per_class: int, fine_to_coarse: list[int], generator: np.random.Generator, prefix: str, fine_names: list[str]
) -> dict[str, Any]:
    """Return the dict of one official file (train or test) with ``per_class`` images per class."""
    fine_labels = [label for label in range(len(fine_to_coarse)) for _ in range(per_class)]
    order = generator.permutation(len(fine_labels))
    fine_labels = [fine_labels[index] for index in order]

    images = np.empty((len(fine_labels), 3, 32, 32), dtype=np.uint8)
    for index, label in enumerate(fine_labels):
        noise = generator.normal(0, 12, size=(3, 32, 32))
        images[index] = np.clip(class_pattern(label) + noise, 0, 255).astype(np.uint8)

    return {
        "data": images.reshape(len(fine_labels), 3072),
        "fine_labels": fine_labels,
        "coarse_labels": [fine_to_coarse[label] for label in fine_labels],
        "filenames": [f"{fine_names[label]}_{prefix}_{index:05d}.png" for index, label in enumerate(fine_labels)],
        "batch_label": f"{prefix} batch 1 of 1",
    }


def cifar100_members(
    *, train_per_class: int = 5, test_per_class: int = 2, num_classes: int = 100, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Return the ``train``, ``test`` and ``meta`` dicts of a generated CIFAR-100.

    With ``num_classes`` below 100 the first classes are kept and superclasses are renumbered
    so that every listed superclass still has images.
    """
    used_coarse = sorted(set(FINE_TO_COARSE[:num_classes]))
    coarse_index = {coarse: position for position, coarse in enumerate(used_coarse)}
    fine_to_coarse = [coarse_index[coarse] for coarse in FINE_TO_COARSE[:num_classes]]
    fine_names = FINE_LABEL_NAMES[:num_classes]

    generator = np.random.default_rng(seed)
    return {
        "train": make_split(train_per_class, fine_to_coarse, generator, "train", fine_names),
        "test": make_split(test_per_class, fine_to_coarse, generator, "test", fine_names),
        "meta": {
            "fine_label_names": list(fine_names),
            "coarse_label_names": [COARSE_LABEL_NAMES[coarse] for coarse in used_coarse],
        },
    }


def write_members_archive(path: str | Path, members: dict[str, bytes | dict[str, Any]], key_type: KeyType = "bytes") -> Path:
    """Write a ``.tar.gz`` with one ``cifar-100-python/<name>`` member per entry.

    A dict value is pickled with ``python2_pickle``; a bytes value is stored as it is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        folder = tarfile.TarInfo("cifar-100-python")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        archive.addfile(folder)
        for name, contents in members.items():
            data = contents if isinstance(contents, bytes) else python2_pickle(contents, key_type)
            info = tarfile.TarInfo(name if "/" in name else f"cifar-100-python/{name}")
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
    return path


def write_cifar100_archive(
    path: str | Path,
    *,
    train_per_class: int = 5,
    test_per_class: int = 2,
    num_classes: int = 100,
    seed: int = 0,
    key_type: KeyType = "bytes",
) -> Path:
    """Write a generated ``cifar-100-python.tar.gz`` in the official layout and return its path."""
    members = cifar100_members(train_per_class=train_per_class, test_per_class=test_per_class, num_classes=num_classes, seed=seed)
    return write_members_archive(path, members, key_type)


def write_cifar100_folder(
    directory: str | Path,
    *,
    train_per_class: int = 5,
    test_per_class: int = 2,
    num_classes: int = 100,
    seed: int = 0,
    key_type: KeyType = "bytes",
) -> Path:
    """Write an extracted ``cifar-100-python`` folder inside ``directory`` and return the folder."""
    folder = Path(directory) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    members = cifar100_members(train_per_class=train_per_class, test_per_class=test_per_class, num_classes=num_classes, seed=seed)
    for name, contents in members.items():
        (folder / name).write_bytes(python2_pickle(contents, key_type))
    return folder
