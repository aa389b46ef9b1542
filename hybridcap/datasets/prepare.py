"""Turn the CIFAR-100 python archive into a prepared-data folder.

The folder contains the train, val and test images as uint8 tensors in one safetensors file,
the class names, the reference captions and the vocabulary. Its manifest records the source,
the source's MD5 and the options, so a rerun with the same options does nothing.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from hybridcap.datasets.captions import build_captions, readable_class_name, readable_superclass_name
from hybridcap.datasets.cifar_source import read_cifar100_archive, read_cifar100_folder
from hybridcap.datasets.download import DownloadProgress, download_archive, file_md5
from hybridcap.datasets.prepared import (
    CAPTIONS_FILE,
    CLASSES_FILE,
    DATA_FILES,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_FILE,
    MANIFEST_FILE,
    SOURCE_OPTIONS,
    VOCABULARY_FILE,
    read_manifest,
)
from hybridcap.datasets.split import split_per_class
from hybridcap.datasets.validation import Cifar100Arrays, LabelledImages, validate_cifar100
from hybridcap.datasets.vocabulary import Vocabulary
from hybridcap.errors import DataError
from hybridcap.io import atomic_path, atomic_write_json, remove_stale_temporary_files

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"
DOWNLOADS_FOLDER = "downloads"
DEFAULT_ARCHIVE_NAME = "cifar-100-python.tar.gz"


@dataclass
class PreparationResult:
    """Outcome of ``prepare_cifar100``."""

    root: Path
    manifest: dict[str, Any]
    # False when the folder already held data prepared with the same options.
    rebuilt: bool
    # One line each, for the caller to show, e.g. an MD5 that differs from the official archive's.
    warnings: list[str] = field(default_factory=list)


def default_data_root() -> Path:
    """Return ``$XDG_CACHE_HOME/hybridcap/cifar100``, or ``~/.cache/hybridcap/cifar100`` when the variable is unset."""
    cache_home = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache_home) if cache_home else Path.home() / ".cache"
    return base / "hybridcap" / "cifar100"


def prepare_cifar100(
    root: str | Path,
    *,
    url: str | None = None,
    archive: str | Path | None = None,
    directory: str | Path | None = None,
    val_per_class: int = 50,
    seed: int = 0,
    force: bool = False,
    download_progress: DownloadProgress | None = None,
    expected_md5: str = OFFICIAL_MD5,
) -> PreparationResult:
    """Prepare CIFAR-100 in ``root`` from one source: a download, a local archive or a folder.

    Without a source the official archive is downloaded into ``root/downloads``. Everything is
    read and validated before ``root`` is touched, so a bad source leaves an existing prepared
    folder as it was.

    Args:
        root: the prepared-data folder; created when missing.
        url: download the archive from this address (default: the official one).
        archive: read this local ``cifar-100-python.tar.gz``.
        directory: read this extracted ``cifar-100-python`` folder.
        val_per_class: training images per fine class moved to the validation split.
        seed: seed of the validation draw.
        force: rebuild even when ``root`` contains data prepared with the same options.
        download_progress: called with (bytes received, total bytes or None) while downloading.
        expected_md5: MD5 that a download must have; local archives with another MD5 are
            accepted with a warning.

    Raises:
        DataError: on more than one source, invalid options, a failed download or invalid data.
    """
    root = Path(root).expanduser()
    source = _describe_source(url, archive, directory)
    _check_options(root, val_per_class, seed)
    options = {"source": source, "val_per_class": val_per_class, "seed": seed}

    if not force:
        existing = _manifest_if_complete(root)
        if existing is not None and existing.get("options") == options:
            return PreparationResult(root=root, manifest=existing, rebuilt=False, warnings=[])

    warnings: list[str] = []
    archive_md5: str | None = None
    if source["kind"] == "directory":
        raw = read_cifar100_folder(Path(source["location"]))
    else:
        if source["kind"] == "url":
            archive_path = _fetch(source["location"], root, expected_md5, download_progress)
        else:
            archive_path = Path(source["location"])
        raw = read_cifar100_archive(archive_path)
        archive_md5 = file_md5(archive_path)

    arrays = validate_cifar100(raw)
    del raw
    if archive_md5 is not None and archive_md5 != OFFICIAL_MD5:
        warnings.append(
            f"archive MD5 {archive_md5} differs from the official CIFAR-100 release ({OFFICIAL_MD5}); "
            "it passed the structural checks and is used as is"
        )

    train_indices, val_indices = split_per_class(arrays.train.fine_labels, arrays.fine_label_names, val_per_class, seed)
    captions = build_captions(arrays.fine_label_names, arrays.coarse_label_names, arrays.fine_to_coarse)
    vocabulary = Vocabulary.from_captions(caption for class_captions in captions for caption in class_captions)

    splits = {
        "train": _select(arrays.train, train_indices),
        "val": _select(arrays.train, val_indices),
        "test": _select(arrays.test, np.arange(len(arrays.test.fine_labels), dtype=np.int64)),
    }
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "options": options,
        "source": {**source, "md5": archive_md5, "official_md5": None if archive_md5 is None else archive_md5 == OFFICIAL_MD5},
        "counts": _counts(splits, arrays, captions, vocabulary),
        "files": list(DATA_FILES),
    }
    _write_folder(root, splits, arrays, captions, vocabulary, manifest)
    return PreparationResult(root=root, manifest=manifest, rebuilt=True, warnings=warnings)


def _describe_source(url: str | None, archive: str | Path | None, directory: str | Path | None) -> dict[str, str]:
    sources_given = [SOURCE_OPTIONS[kind] for kind, value in (("url", url), ("archive", archive), ("directory", directory)) if value is not None]
    if len(sources_given) > 1:
        raise DataError(f"{' and '.join(sources_given)} were given together; choose one source")
    if archive is not None:
        return {"kind": "archive", "location": str(Path(archive).expanduser().resolve())}
    if directory is not None:
        return {"kind": "directory", "location": str(Path(directory).expanduser().resolve())}
    return {"kind": "url", "location": url if url is not None else OFFICIAL_URL}


# Files that hybridcap's trainers and `hybridcap run` write and a prepared-data folder never has.
RUN_FOLDER_FILES = ("config.json", "training_state.safetensors", "pipeline.json", "stages.json")


def _check_options(root: Path, val_per_class: int, seed: int) -> None:
    if val_per_class < 0:
        raise DataError(f"--val-per-class must be 0 or more, got {val_per_class}")
    if seed < 0:
        raise DataError(f"--seed must be 0 or more, got {seed}")
    if root.exists() and not root.is_dir():
        raise DataError(f"--root {root} is a file; choose a folder")
    # A run folder has captions.json and vocabulary.json too, which a prepared folder would replace.
    run_files = [name for name in RUN_FOLDER_FILES if (root / name).exists()]
    if run_files:
        raise DataError(f"--root {root} is a run or experiment folder (it has {run_files[0]}); choose another folder for the prepared data")


def _manifest_if_complete(root: Path) -> dict[str, Any] | None:
    manifest = read_manifest(root)
    if manifest is None or manifest.get("format") != FORMAT_NAME or manifest.get("format_version") != FORMAT_VERSION:
        return None
    if not all((root / name).is_file() for name in DATA_FILES):
        return None
    return manifest


def _fetch(url: str, root: Path, expected_md5: str, progress: DownloadProgress | None) -> Path:
    # A verified download is kept, so --force or other split options do not download again.
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name) or name.startswith("."):
        name = DEFAULT_ARCHIVE_NAME
    destination = root / DOWNLOADS_FOLDER / name
    if destination.is_file() and file_md5(destination) == expected_md5:
        return destination

    created_root = not root.exists()
    remove_stale_temporary_files(destination.parent, [name])
    try:
        return download_archive(url, destination, expected_md5=expected_md5, progress=progress)
    except BaseException:
        if created_root:
            _remove_if_empty(root)
        raise


def _select(images: LabelledImages, indices: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "images": np.ascontiguousarray(images.images[indices]),  # (N, 3, 32, 32) uint8
        "fine_labels": images.fine_labels[indices],
        "coarse_labels": images.coarse_labels[indices],
        "source_indices": indices,
    }


def _counts(splits: dict[str, dict[str, np.ndarray]], arrays: Cifar100Arrays, captions: list[list[str]], vocabulary: Vocabulary) -> dict[str, Any]:
    counts: dict[str, Any] = {
        name: {
            "images": int(len(split["fine_labels"])),
            "classes": int(len(np.unique(split["fine_labels"]))),
            "superclasses": int(len(np.unique(split["coarse_labels"]))),
        }
        for name, split in splits.items()
    }
    counts["fine_classes"] = len(arrays.fine_label_names)
    counts["superclasses"] = len(arrays.coarse_label_names)
    counts["captions"] = sum(len(class_captions) for class_captions in captions)
    counts["vocabulary"] = len(vocabulary)
    return counts


def _write_folder(
    root: Path,
    splits: dict[str, dict[str, np.ndarray]],
    arrays: Cifar100Arrays,
    captions: list[list[str]],
    vocabulary: Vocabulary,
    manifest: dict[str, Any],
) -> None:
    from safetensors.numpy import save_file

    root.mkdir(parents=True, exist_ok=True)
    # Without a manifest the folder counts as incomplete until every file below is in place.
    (root / MANIFEST_FILE).unlink(missing_ok=True)
    remove_stale_temporary_files(root, (*DATA_FILES, MANIFEST_FILE))

    tensors = {f"{split_name}_{key}": value for split_name, split in splits.items() for key, value in split.items()}
    with atomic_path(root / IMAGES_FILE) as temporary:
        save_file(tensors, str(temporary))

    atomic_write_json(
        root / CLASSES_FILE,
        {
            "fine_label_names": arrays.fine_label_names,
            "coarse_label_names": arrays.coarse_label_names,
            "fine_names": [readable_class_name(name) for name in arrays.fine_label_names],
            "coarse_names": [readable_superclass_name(name) for name in arrays.coarse_label_names],
            "fine_to_coarse": arrays.fine_to_coarse,
        },
    )
    atomic_write_json(root / CAPTIONS_FILE, {"captions": captions})
    atomic_write_json(root / VOCABULARY_FILE, vocabulary.to_dict())
    atomic_write_json(root / MANIFEST_FILE, manifest)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
