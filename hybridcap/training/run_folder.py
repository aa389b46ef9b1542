"""Run-folder helpers both trainers share: seeds derived from the run seed, resume checks, log rows.

Everything here is a function of the run seed and the files in the run folder, so a killed run
rebuilds the same batch order and the same log after it resumes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy
import torch

from hybridcap.datasets import PreparedCifar100
from hybridcap.datasets.prepared import IMAGES_FILE, MANIFEST_FILE, data_command
from hybridcap.errors import RunFolderError
from hybridcap.io import read_json
from hybridcap.training.checkpoint import describe_config_difference


# Files that only one kind of output folder contains. Both trainers write config.json and
# training_state.safetensors, so a trainer pointed at the other's folder would replace them.
RUN_FOLDER_SIGNATURES = {
    # First, because a prepared-data folder also has vocabulary.json and captions.json.
    "prepared-data": (MANIFEST_FILE, IMAGES_FILE),
    "GAN run": ("generator.safetensors", "discriminator.safetensors", "losses.jsonl"),
    "captioner run": ("best.safetensors", "last.safetensors", "vocabulary.json", "captions.json", "history.jsonl"),
    "experiment": ("pipeline.json", "stages.json", "gan/config.json", "captioner/config.json"),
}
# The command that writes each kind of folder.
EXPECTED_COMMANDS = {"GAN run": "train-gan", "captioner run": "train-captioner", "experiment": "run"}
# A config.json key that only one trainer's config has. A run killed before its first checkpoint
# has no other file that distinguishes the kinds.
_CONFIG_SIGNATURES = {"GAN run": "latent_dim", "captioner run": "gan_run"}


def run_folder_kind(run_dir: Path) -> tuple[str, str] | None:
    """Return the kind of output folder ``run_dir`` is and the file that shows it, or None when unknown."""
    for kind, names in RUN_FOLDER_SIGNATURES.items():
        for name in names:
            if (run_dir / name).exists():
                return kind, name
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if isinstance(config, dict):
        for kind, key in _CONFIG_SIGNATURES.items():
            if key in config:
                return kind, "config.json"
    return None


def wrong_folder_message(run_dir: Path, expected_kind: str) -> str | None:
    """Describe why ``run_dir`` is not the ``expected_kind`` folder a command reads, or return None.

    Returns None when ``run_dir`` is of the expected kind or of no known kind.
    """
    found = run_folder_kind(run_dir)
    if found is None or found[0] == expected_kind:
        return None
    subfolder = {"GAN run": "gan", "captioner run": "captioner"}.get(expected_kind)
    if found[0] == "experiment" and subfolder is not None:
        return f"{_mismatch(run_dir, found, expected_kind)}; use its subfolder {run_dir / subfolder}"
    return f"{_mismatch(run_dir, found, expected_kind)}; use a folder written by `hybridcap {EXPECTED_COMMANDS[expected_kind]}`"


def reject_other_run_folder(run_dir: Path, kind: str) -> None:
    """Raise RunFolderError when ``run_dir`` is another kind of output folder than ``kind``, a key of RUN_FOLDER_SIGNATURES."""
    found = run_folder_kind(run_dir)
    if found is not None and found[0] != kind:
        raise RunFolderError(f"{_mismatch(run_dir, found, kind)}; choose another --out")


def _mismatch(run_dir: Path, found: tuple[str, str], expected_kind: str) -> str:
    kind, evidence = found
    return f"{run_dir} is {_article(kind)} {kind} folder (it has {evidence}), not {_article(expected_kind)} {expected_kind} folder"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def derived_seed(seed: int, purpose: int, *values: int) -> int:
    """Return an independent 64-bit seed for one use (``purpose``) of the run seed, e.g. per epoch."""
    return int(numpy.random.SeedSequence([seed, purpose, *values]).generate_state(1, dtype=numpy.uint64)[0])


def epoch_permutation(seed: int, purpose: int, epoch_index: int, image_count: int) -> torch.Tensor:
    """Return the batch order of one epoch, a function of (seed, epoch) only, so resuming can rebuild it."""
    random = torch.Generator().manual_seed(derived_seed(seed, purpose, epoch_index))
    return torch.randperm(image_count, generator=random)


def saved_config_to_resume(
    run_dir: Path,
    state_file: str,
    config_file: str,
    config: Mapping[str, Any],
    resume_keys: Sequence[str],
) -> dict[str, Any] | None:
    """Return the saved config when ``run_dir`` has a training state that ``config`` may resume, else None.

    Raises RunFolderError when the folder was made with a config that differs in one of
    ``resume_keys`` (options that change the training trajectory), or when its config file is
    unreadable.
    """
    if not (run_dir / state_file).is_file():
        return None
    try:
        saved = read_json(run_dir / config_file)
    except RunFolderError as error:
        raise RunFolderError(f"cannot resume {run_dir}: {error}; pass --fresh to start over") from error
    if not isinstance(saved, dict):
        raise RunFolderError(f"invalid {run_dir / config_file}: expected a JSON object; pass --fresh to start over")
    difference = describe_config_difference(saved, config, list(resume_keys))
    if difference is not None:
        raise RunFolderError(f"cannot resume {run_dir}: {difference}; pass --fresh to start over or choose another --out")
    return saved


def read_log_rows(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """Read the JSON-lines log rows up to ``up_to_step``, because later rows belong to steps that will be redone."""
    if not path.is_file():
        return []
    rows = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise RunFolderError(f"invalid JSON on line {line_number} of {path}: {error.msg}; pass --fresh to start over") from error
        if row.get("step", 0) <= up_to_step:
            rows.append(row)
    return rows


def split_change(recorded: Mapping[str, Any] | None, data: PreparedCifar100) -> str | None:
    """Describe how ``data`` was split differently from the split a run recorded, or return None.

    Runs written before splits were recorded have no record, and then nothing can be compared.
    The description ends with the command that restores the recorded split when the record
    names its source (older records only have the options), else with what to do instead.
    """
    if not recorded or recorded.get("digest") == data.split_digest():
        return None
    current = data.split_record()
    val_per_class, seed = recorded.get("val_per_class"), recorded.get("seed")
    same_options = (current["val_per_class"], current["seed"]) == (val_per_class, seed)
    if same_options:
        # Same options but other indices: another archive, or a hybridcap release that splits differently.
        difference = f"was rebuilt and splits the training images differently, with the same --val-per-class {val_per_class} --seed {seed}"
        if recorded.get("source") is None:
            return f"the prepared data in {data.root} {difference}; prepare it again from the archive the run used"
    else:
        difference = (
            f"was rebuilt with another train/validation split (--val-per-class {current['val_per_class']} --seed {current['seed']}; "
            f"the run used --val-per-class {val_per_class} --seed {seed})"
        )
    source = recorded.get("source") or current["source"]
    restore = data_command(data.root, {"source": source, "val_per_class": val_per_class, "seed": seed})
    return f"the prepared data in {data.root} {difference}; restore it with `{restore}`"


def reject_resume_on_other_split(run_dir: Path, recorded: Mapping[str, Any] | None, data: PreparedCifar100) -> None:
    """Raise RunFolderError when the run in ``run_dir``, which recorded the split ``recorded``, would resume on another split of ``data``."""
    change = split_change(recorded, data)
    if change is not None:
        raise RunFolderError(f"cannot resume {run_dir}: {change}, or pass --fresh to start over")
