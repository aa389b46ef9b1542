"""The prepared-data folder: its file layout and the loader that trainers and evaluation use.

A folder is complete when ``manifest.json`` exists: ``prepare_cifar100`` deletes the manifest
before it writes anything else and writes it last, so an interrupted run leaves a folder that
``load_prepared`` rejects.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybridcap.datasets.vocabulary import Vocabulary
from hybridcap.errors import DataError

FORMAT_NAME = "hybridcap-cifar100"
FORMAT_VERSION = 1

MANIFEST_FILE = "manifest.json"
# Per split: {split}_images (N, 3, 32, 32) uint8, {split}_fine_labels and {split}_coarse_labels
# (N,) int64, and {split}_source_indices (N,) int64, the positions in the official train or test file.
IMAGES_FILE = "images.safetensors"
# Stored and readable class names and the fine-to-coarse mapping.
CLASSES_FILE = "classes.json"
CAPTIONS_FILE = "captions.json"
VOCABULARY_FILE = "vocabulary.json"
DATA_FILES = (IMAGES_FILE, CLASSES_FILE, CAPTIONS_FILE, VOCABULARY_FILE)

SPLIT_NAMES = ("train", "val", "test")
# The ``hybridcap data`` option of each source kind that a manifest records.
SOURCE_OPTIONS = {"url": "--url", "archive": "--archive", "directory": "--dir"}


@dataclass
class ImageSplit:
    """The images and labels of one split."""

    images: torch.Tensor  # (N, 3, 32, 32) uint8
    fine_labels: torch.Tensor  # (N,) int64
    coarse_labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.images.shape[0]


class PreparedCifar100:
    """A prepared CIFAR-100 folder: splits, class names, reference captions and vocabulary.

    Splits are read from disk on first use and kept in memory afterwards.
    """

    def __init__(
        self,
        root: Path,
        manifest: dict[str, Any],
        fine_names: list[str],
        coarse_names: list[str],
        fine_to_coarse: list[int],
        captions: list[list[str]],
        vocabulary: Vocabulary,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.fine_names = fine_names
        self.coarse_names = coarse_names
        self.fine_to_coarse = fine_to_coarse
        self.captions = captions
        self.vocabulary = vocabulary
        self._splits: dict[str, ImageSplit] = {}
        self._split_digest: str | None = None

    def split(self, name: str) -> ImageSplit:
        """Return the ``"train"``, ``"val"`` or ``"test"`` split.

        Raises:
            ValueError: for any other name.
            DataError: when the images file cannot be read.
        """
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLIT_NAMES)}")
        if name not in self._splits:
            self._splits[name] = self._read_split(name)
        return self._splits[name]

    def split_digest(self) -> str:
        """Return a short hash of which official training images went to the train and val splits.

        Runs record it, so that resuming or evaluating on a folder rebuilt with another
        ``--val-per-class`` or ``--seed`` is detected: its validation split may then contain
        images the run trained on. The test split is always the whole official test set.

        Raises:
            DataError: when the images file cannot be read.
        """
        if self._split_digest is None:
            from safetensors import SafetensorError, safe_open

            path = self.root / IMAGES_FILE
            digest = hashlib.sha256()
            try:
                with safe_open(str(path), framework="pt") as file:
                    for name in ("train", "val"):
                        indices = file.get_tensor(f"{name}_source_indices").to(torch.int64).contiguous()
                        digest.update(f"{name}:{indices.numel()}:".encode())
                        digest.update(indices.numpy().tobytes())
            except (SafetensorError, OSError, ValueError, KeyError) as error:
                raise DataError(f"cannot read the split indices from {path} ({error}); run `{self.data_command()}`") from error
            self._split_digest = digest.hexdigest()[:16]
        return self._split_digest

    def split_record(self) -> dict[str, Any]:
        """Return what a run records about this folder's split: its digest and the options that made it."""
        options = self.manifest.get("options", {})
        return {
            "digest": self.split_digest(),
            "val_per_class": options.get("val_per_class"),
            "seed": options.get("seed"),
            "source": options.get("source"),
        }

    def data_command(self, **changes: Any) -> str:
        """Return the ``hybridcap data --force`` command that rebuilds this folder, with options in ``changes`` replaced."""
        return data_command(self.root, {**self.manifest.get("options", {}), **changes})

    def _read_split(self, name: str) -> ImageSplit:
        from safetensors import SafetensorError, safe_open

        path = self.root / IMAGES_FILE
        try:
            with safe_open(str(path), framework="pt") as file:
                images = file.get_tensor(f"{name}_images")
                fine_labels = file.get_tensor(f"{name}_fine_labels")
                coarse_labels = file.get_tensor(f"{name}_coarse_labels")
        except (SafetensorError, OSError, ValueError, KeyError) as error:
            raise DataError(f"cannot read the {name} split from {path} ({error}); run `{self.data_command()}`") from error
        return ImageSplit(images=images, fine_labels=fine_labels, coarse_labels=coarse_labels)


def data_command(root: Path, options: Mapping[str, Any] | None = None, *, force: bool = True) -> str:
    """Return the ``hybridcap data`` command line that prepares ``root`` with ``options``, ready to paste.

    ``options`` is a manifest's ``options`` entry: ``source`` (``kind`` and ``location``),
    ``val_per_class`` and ``seed``. Missing entries are left to the command's defaults, and the
    official download address is left out because it is the default source.
    """
    from hybridcap.datasets.prepare import OFFICIAL_URL

    options = options or {}
    arguments = ["hybridcap", "data", "--root", str(root)]
    source = options.get("source") or {}
    flag = SOURCE_OPTIONS.get(source.get("kind"))
    if flag is not None and source.get("location") not in (None, OFFICIAL_URL):
        arguments += [flag, str(source["location"])]
    for option, key in (("--val-per-class", "val_per_class"), ("--seed", "seed")):
        if options.get(key) is not None:
            arguments += [option, str(options[key])]
    if force:
        arguments.append("--force")
    return shlex.join(arguments)


def load_prepared(root: str | Path) -> PreparedCifar100:
    """Open a folder written by ``prepare_cifar100``.

    Raises:
        DataError: when the folder is missing, incomplete or was written by an incompatible version.
    """
    root = Path(root).expanduser()
    manifest = read_manifest(root)
    if manifest is None:
        if any((root / name).is_file() for name in DATA_FILES):
            # prepare_cifar100 deletes the manifest first and writes it last.
            raise DataError(
                f"prepared data in {root} is incomplete (no {MANIFEST_FILE}; was `hybridcap data` interrupted?); "
                f"rerun `{data_command(root, force=False)}` with the source and split options you used"
            )
        raise DataError(f"no prepared CIFAR-100 data in {root}; run `{data_command(root, force=False)}` first")
    if manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"prepared data in {root} has an unsupported format; run `{data_command(root, manifest.get('options'))}` to rebuild it")

    missing = [name for name in DATA_FILES if not (root / name).is_file()]
    if missing:
        raise DataError(f"prepared data in {root} is incomplete (missing {', '.join(missing)}); run `{data_command(root, manifest.get('options'))}`")

    try:
        classes = _read_json(root / CLASSES_FILE)
        captions = _read_json(root / CAPTIONS_FILE)["captions"]
        vocabulary = Vocabulary.from_dict(_read_json(root / VOCABULARY_FILE))
        fine_names = list(classes["fine_names"])
        coarse_names = list(classes["coarse_names"])
        fine_to_coarse = [int(label) for label in classes["fine_to_coarse"]]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"prepared data in {root} is damaged ({error}); run `{data_command(root, manifest.get('options'))}`") from error

    if len(captions) != len(fine_names) or len(fine_to_coarse) != len(fine_names):
        raise DataError(f"prepared data in {root} is damaged (class, caption and mapping counts differ); run `{data_command(root, manifest.get('options'))}`")

    return PreparedCifar100(
        root=root,
        manifest=manifest,
        fine_names=fine_names,
        coarse_names=coarse_names,
        fine_to_coarse=fine_to_coarse,
        captions=captions,
        vocabulary=vocabulary,
    )


def read_manifest(root: Path) -> dict[str, Any] | None:
    """Return the manifest of a prepared folder, or None when it has none.

    Raises:
        DataError: when the manifest exists but is not a JSON object.
    """
    path = root / MANIFEST_FILE
    if not path.is_file():
        return None
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise DataError(f"{path} is not a JSON object; delete {root} or rerun `hybridcap data --root {root} --force`")
    return manifest


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"cannot read {path} ({error}); rerun `hybridcap data --root {path.parent} --force`") from error
