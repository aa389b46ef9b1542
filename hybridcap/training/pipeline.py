"""The whole job in one experiment folder: prepare data, train the GAN, train the captioner, evaluate.

A pipeline config has one table per stage. The ``gan`` and ``captioner`` tables contain fields of
``GanConfig`` and ``CaptionerConfig``. The pipeline itself sets the fields that tie the stages
together: data root, output folders, the GAN run the captioner loads, seed, device and precision.

Values are layered: the preset, then the TOML file, then command-line overrides. The resolved
config is saved as ``pipeline.json`` in the experiment folder. Each stage that finishes is
recorded in ``stages.json`` with the config it ran with, so a rerun skips it, and an
interrupted stage resumes from its own checkpoint because the trainers resume by themselves.
A stage whose config or inputs changed after it finished starts over (see ``run_pipeline``).
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import os
import sys
import time
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridcap.device import DeviceChoice, Precision
from hybridcap.errors import HybridcapError
from hybridcap.metrics.names import Tokenizer, parse_metric_names
from hybridcap.io import atomic_write_json, read_json
from hybridcap.training.reporting import TrainingReporter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

# Key in stages.json, beside the stage names, for the split and archive of the prepared data
# that the later stages were last run on.
DATA_IDENTITY_KEY = "data_identity"

# Fields that the pipeline sets itself, so a config file must not set them per stage.
_LINKED_FIELDS = {
    "gan": {"data_root", "out", "seed", "device", "precision"},
    "captioner": {"data_root", "out", "gan_run", "seed", "device", "precision"},
}


class Preset(str, enum.Enum):
    cpu = "cpu"
    gpu = "gpu"


# The CPU preset is sized to finish within an hour on a 2-core CPU with bf16 autocast, and the
# README gives its measured wall time. The GPU preset is the full recipe. Fields not listed keep
# the defaults of GanConfig and CaptionerConfig.
PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.cpu: {
        "precision": "bf16",
        "gan": {"epochs": 5},
        "captioner": {"epochs": 20},
    },
    Preset.gpu: {
        "precision": "bf16",
        "gan": {"epochs": 25},
        "captioner": {"epochs": 40},
    },
}


@dataclass
class DataStage:
    """Data stage options: the source of the CIFAR-100 archive and the prepared-data folder.

    Attributes:
        root: prepared-data folder; empty means the default cache folder.
        url: download address; used when neither archive nor directory is set.
        archive: local ``cifar-100-python.tar.gz``.
        directory: an extracted ``cifar-100-python`` folder.
        val_per_class: training images per class moved to the validation split.
    """

    root: str = ""
    url: str = ""
    archive: str = ""
    directory: str = ""
    val_per_class: int = 50


@dataclass
class EvalStage:
    """Evaluation stage options: the splits, beam width and metrics of the final evaluation.

    Attributes:
        splits: ``val``, ``test`` or ``both``.
        beam_size: beam width for caption generation.
        metrics: metric names; empty means all seven.
        tokenizer: ``ptb`` (pycocoevalcap's Java PTB tokenizer) or ``simple`` (no Java needed).
    """

    splits: str = "both"
    beam_size: int = 3
    metrics: list[str] = field(default_factory=list)
    tokenizer: str = "ptb"


@dataclass
class PipelineConfig:
    """The resolved config of one experiment; ``gan`` and ``captioner`` are field overrides."""

    out: str = "runs/experiment"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    data: DataStage = field(default_factory=DataStage)
    gan: dict[str, Any] = field(default_factory=dict)
    captioner: dict[str, Any] = field(default_factory=dict)
    eval: EvalStage = field(default_factory=EvalStage)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class StageTiming:
    stage: str
    seconds: float
    skipped: bool


@dataclass
class PipelineResult:
    """Result of ``run_pipeline``: the folders it used, the metrics and each stage's wall time."""

    out: Path
    data_root: Path
    gan_dir: Path
    captioner_dir: Path
    metrics: dict[str, Any]
    timings: list[StageTiming]
    gallery: Path | None


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML pipeline config, raising HybridcapError with the path when it cannot be read."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError as error:
        raise HybridcapError(f"config file not found: {path}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise HybridcapError(f"invalid TOML in {path}: {error}") from error
    except IsADirectoryError as error:
        raise HybridcapError(f"config file {path} is a folder; pass a TOML file") from error


def _check_stage_keys(section: str, values: Mapping[str, Any], config_class: type) -> None:
    """Raise HybridcapError for a key ``config_class`` lacks or a value of the wrong type."""
    allowed = {item.name for item in dataclasses.fields(config_class)} - _LINKED_FIELDS.get(section, set())
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise HybridcapError(f"unknown key(s) {', '.join(unknown)} in [{section}]; allowed: {', '.join(sorted(allowed))}")
    field_types = typing.get_type_hints(config_class)
    for key, value in values.items():
        expected = field_types[key]
        if not _has_type(value, expected):
            raise HybridcapError(f"invalid value {value!r} for {key} in [{section}]: expected {_describe_type(expected)}")


def _has_type(value: Any, expected: Any) -> bool:
    """Return whether a TOML value fits a config field annotation (int, float, str, bool, Optional, list, tuple)."""
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        arguments = [argument for argument in typing.get_args(expected) if argument is not Ellipsis]
        if origin is tuple and Ellipsis not in typing.get_args(expected) and len(value) != len(arguments):
            return False
        return all(_has_type(item, arguments[0] if len(arguments) == 1 else arguments[index]) for index, item in enumerate(value))
    return True


def _describe_type(expected: Any) -> str:
    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(option) for option in typing.get_args(expected))
    if expected is type(None):
        return "nothing (omit the key)"
    if origin is not None:
        return f"a list like {[_describe_type(argument) for argument in typing.get_args(expected) if argument is not Ellipsis]}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(expected, str(expected))


def resolve_config(
    preset: Preset | None,
    file_values: Mapping[str, Any] | None,
    overrides: Mapping[str, Any],
) -> PipelineConfig:
    """Layer preset, config-file values and command-line overrides into a checked PipelineConfig.

    ``overrides`` uses the same nested layout as the TOML file, e.g. ``{"captioner":
    {"contrastive_weight": 0.0}}``; None values are ignored so unset CLI options change nothing.
    """
    from hybridcap.training.captioner import CaptionerConfig
    from hybridcap.training.gan import GanConfig

    values: dict[str, Any] = {}
    if preset is not None:
        values = _merge(values, PRESETS[preset])
    values = _merge(values, file_values or {})
    values = _merge(values, _drop_none(overrides))

    top_level = {item.name for item in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - top_level)
    if unknown:
        raise HybridcapError(f"unknown key(s) {', '.join(unknown)} in the pipeline config; allowed: {', '.join(sorted(top_level))}")
    for key in ("out", "device", "precision"):
        if key in values and not isinstance(values[key], str):
            raise HybridcapError(f"invalid value {values[key]!r} for {key}: expected a string")
    for key, choices in (("device", DeviceChoice), ("precision", Precision)):
        allowed = [choice.value for choice in choices]
        if key in values and values[key] not in allowed:
            raise HybridcapError(f"invalid value {values[key]!r} for {key}: expected one of {', '.join(allowed)}")
    if "seed" in values and (isinstance(values["seed"], bool) or not isinstance(values["seed"], int)):
        raise HybridcapError(f"invalid value {values['seed']!r} for seed: expected an integer")
    for section in ("data", "gan", "captioner", "eval"):
        if section in values and not isinstance(values[section], Mapping):
            raise HybridcapError(f"invalid value {values[section]!r} for {section}: expected a [{section}] table")
    eval_values = values.get("eval", {})
    if isinstance(eval_values.get("metrics"), str):
        # --set eval.metrics=bleu_4,cider arrives as one string; a TOML file gives a list.
        values["eval"] = {**eval_values, "metrics": [eval_values["metrics"]]}
    for section, config_class in (("data", DataStage), ("eval", EvalStage)):
        _check_stage_keys(section, values.get(section, {}), config_class)
    _check_stage_keys("gan", values.get("gan", {}), GanConfig)
    _check_stage_keys("captioner", values.get("captioner", {}), CaptionerConfig)

    config = PipelineConfig(
        out=str(values.get("out", PipelineConfig.out)),
        seed=int(values.get("seed", 0)),
        device=str(values.get("device", "auto")),
        precision=str(values.get("precision", "fp32")),
        data=DataStage(**values.get("data", {})),
        gan=dict(values.get("gan", {})),
        captioner=dict(values.get("captioner", {})),
        eval=EvalStage(**values.get("eval", {})),
    )
    if sum(bool(source) for source in (config.data.url, config.data.archive, config.data.directory)) > 1:
        raise HybridcapError("give at most one data source: url, archive or directory")
    if config.eval.splits not in ("val", "test", "both"):
        raise HybridcapError(f"invalid eval splits {config.eval.splits!r}; use val, test or both")
    if config.eval.beam_size < 1:
        raise HybridcapError(f"invalid eval beam_size {config.eval.beam_size}; use 1 or more")
    if config.eval.tokenizer not in [choice.value for choice in Tokenizer]:
        raise HybridcapError(f"invalid eval tokenizer {config.eval.tokenizer!r}; use ptb or simple")
    config.eval.metrics = list(parse_metric_names(config.eval.metrics))
    return config


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                cleaned[key] = nested
        elif value is not None:
            cleaned[key] = value
    return cleaned


class PipelineReporter(TrainingReporter):
    """A TrainingReporter that also receives the start and end of each pipeline stage."""

    def stage_started(self, stage: str) -> None:
        """Called before a stage runs."""

    def stage_finished(self, stage: str, seconds: float, skipped: bool) -> None:
        """Called after a stage, with its wall time; ``skipped`` when its outputs were already there."""


def _load_stage_records(path: Path) -> dict[str, Any]:
    return read_json(path) if path.exists() else {}


def _needs_restart(previous: Mapping[str, Any] | None, current: Mapping[str, Any], upstream_changed: bool) -> bool:
    """Return whether a stage must start over instead of resuming its own checkpoint.

    A stage starts over when its inputs changed, since a checkpoint of it was made from the old
    inputs. Otherwise a stage that never finished resumes, and one that finished starts over when
    its config changed in anything but ``epochs``: more epochs continue the finished run.
    """
    if upstream_changed:
        return True
    if previous is None:
        return False
    return any(not _same_json(previous.get(key), current.get(key)) for key in set(previous) | set(current) if key != "epochs")


def _metrics_match(path: Path, evaluation: EvalStage, splits: list[str]) -> bool:
    """Return whether ``metrics.json`` exists and was made with these evaluation options.

    A standalone ``hybridcap eval`` on the same run rewrites the file with its own options. The
    pipeline must then evaluate again rather than report those results as its own.
    """
    if not path.is_file():
        return False
    metrics = read_json(path)
    return (
        metrics.get("beam_size") == evaluation.beam_size
        and list(metrics.get("metrics", [])) == list(evaluation.metrics)
        and metrics.get("tokenizer") == evaluation.tokenizer
        and set(splits) <= set(metrics.get("splits", {}))
    )


def _same_json(left: Any, right: Any) -> bool:
    return json.dumps(left, sort_keys=True, default=str) == json.dumps(right, sort_keys=True, default=str)


def run_pipeline(
    config: PipelineConfig,
    *,
    reporter: PipelineReporter | None = None,
    fresh: bool = False,
    clip_warning: Callable[[str], None] | None = None,
) -> PipelineResult:
    """Run every stage in order in ``config.out``, skipping stages already done with the same config.

    A stage that finished with another config starts over, except that a higher ``epochs``
    continues training; later stages that had finished then start over too. Raises whatever a
    stage raises for bad input.
    """
    from hybridcap.datasets import default_data_root, load_prepared, prepare_cifar100
    from hybridcap.device import resolve_device
    from hybridcap.networks.text_encoder import check_text_encoder_weights
    from hybridcap.metrics.captioning import parts_needing_java, require_java
    from hybridcap.metrics.java import JavaNotFoundError
    from hybridcap.training.captioner import CaptionerConfig, train_captioner
    from hybridcap.training.captioner import validate_config as validate_captioner_config
    from hybridcap.training.evaluation import evaluate_run
    from hybridcap.training.gan import GanConfig, train_gan
    from hybridcap.training.gan import validate_config as validate_gan_config
    from hybridcap.training.run_folder import reject_other_run_folder

    reporter = reporter or PipelineReporter()
    out = Path(config.out)
    data_root = Path(config.data.root) if config.data.root else default_data_root()
    gan_dir = out / "gan"
    captioner_dir = out / "captioner"
    pipeline_file = out / "pipeline.json"
    stages_file = out / "stages.json"

    # Check every stage's options, the device, the CLIP weights and Java before the first stage
    # runs, so a typo or a missing download in a late stage cannot cost a GAN training.
    gan_config = GanConfig(
        **{**config.gan, "data_root": str(data_root), "out": str(gan_dir), "seed": config.seed, "device": config.device, "precision": config.precision}
    )
    validate_gan_config(gan_config)
    captioner_config = CaptionerConfig(
        **{
            **config.captioner,
            "data_root": str(data_root),
            "out": str(captioner_dir),
            "gan_run": str(gan_dir),
            "seed": config.seed,
            "device": config.device,
            "precision": config.precision,
        }
    )
    validate_captioner_config(captioner_config)
    if config.data.val_per_class < 0:
        raise HybridcapError(f"data.val_per_class must be 0 or more, got {config.data.val_per_class}")
    resolve_device(config.device)
    if captioner_config.contrastive_weight > 0:
        # Downloads the weights now if they are missing, so that an offline machine fails here
        # and not after the GAN has trained.
        check_text_encoder_weights(captioner_config.text_encoder_spec())
    try:
        require_java(config.eval.metrics, config.eval.tokenizer)
    except JavaNotFoundError as error:
        needs = parts_needing_java(config.eval.metrics, config.eval.tokenizer)
        without_meteor = ",".join(name for name in config.eval.metrics if name != "meteor")
        raise JavaNotFoundError(
            f"java was not found on PATH, but the evaluation stage needs it for {' and '.join(needs)}; install a "
            f"Java runtime, or pass --set eval.tokenizer=simple --set eval.metrics={without_meteor or 'bleu_4'}"
        ) from error

    reject_other_run_folder(out, "experiment")
    if fresh and stages_file.exists():
        stages_file.unlink()
    atomic_write_json(pipeline_file, config.to_dict())
    records = _load_stage_records(stages_file)
    timings: list[StageTiming] = []
    # Set once a stage produces new outputs: every later stage that finished before must then
    # start over, because it was trained or scored on the old outputs.
    upstream_changed = False

    def run_stage(stage: str, stage_config: dict[str, Any], outputs_exist: bool, body: Callable[[bool], bool]) -> None:
        """Run ``body(restart)`` unless the stage is done with this config; ``body`` returns whether it changed outputs."""
        nonlocal upstream_changed
        reporter.stage_started(stage)
        started = time.perf_counter()
        previous = records.get(stage)
        skipped = outputs_exist and not upstream_changed and _same_json(previous, stage_config)
        if not skipped:
            restart = fresh or _needs_restart(previous, stage_config, upstream_changed)
            if restart and previous is not None and not fresh:
                reporter.info(f"{stage}: its config or its inputs changed since it last finished, so it starts over")
            changed = body(restart)
            upstream_changed = upstream_changed or changed
            records[stage] = stage_config
            atomic_write_json(stages_file, records)
        seconds = time.perf_counter() - started
        timings.append(StageTiming(stage, seconds, skipped))
        reporter.stage_finished(stage, seconds, skipped)

    data_config = {
        "root": str(data_root),
        "url": config.data.url,
        "archive": config.data.archive,
        "directory": config.data.directory,
        "val_per_class": config.data.val_per_class,
        "seed": config.seed,
    }

    def prepare(restart: bool) -> bool:
        result = prepare_cifar100(
            data_root,
            url=config.data.url or None,
            archive=config.data.archive or None,
            directory=config.data.directory or None,
            val_per_class=config.data.val_per_class,
            seed=config.seed,
        )
        for message in result.warnings:
            reporter.warning(message)
        # Another experiment sharing the folder may have re-split it, and this rebuild then only
        # restored the split the later stages were trained on: they need not start over.
        identity = {"split": load_prepared(data_root).split_digest(), "archive_md5": result.manifest.get("source", {}).get("md5")}
        previous_identity = records.get(DATA_IDENTITY_KEY)
        records[DATA_IDENTITY_KEY] = identity
        return result.rebuilt and not _same_json(previous_identity, identity)

    # prepare_cifar100 is a no-op when the folder already matches, so the data stage always runs.
    run_stage("data", data_config, False, prepare)

    def train_gan_stage(restart: bool) -> bool:
        result = train_gan(gan_config, reporter=reporter, fresh=restart)
        # A finished GAN asked for fewer epochs trains nothing, and the captioner need not start over.
        return restart or bool(result.epoch_summaries)

    run_stage("gan", gan_config.to_dict(), (gan_dir / "discriminator.safetensors").exists(), train_gan_stage)

    uses_random_text_tower = captioner_config.clip_pretrained == "none" and not captioner_config.clip_weights
    if uses_random_text_tower and captioner_config.contrastive_weight > 0 and clip_warning is not None:
        clip_warning("the CLIP text encoder is randomly initialised (--clip-pretrained none): the contrastive loss aligns images with random text embeddings, not with CLIP's")

    def train_captioner_stage(restart: bool) -> bool:
        result = train_captioner(captioner_config, reporter=reporter, fresh=restart)
        return restart or bool(result.epoch_summaries)

    run_stage("captioner", captioner_config.to_dict(), (captioner_dir / "best.safetensors").exists(), train_captioner_stage)

    splits = ["val", "test"] if config.eval.splits == "both" else [config.eval.splits]
    eval_record = {**dataclasses.asdict(config.eval), "device": config.device, "precision": config.precision, "seed": config.seed}

    def evaluate(restart: bool) -> bool:
        evaluate_run(
            captioner_dir,
            splits=splits,
            beam_size=config.eval.beam_size,
            metrics=config.eval.metrics,
            tokenizer=config.eval.tokenizer,
            device=config.device,
            precision=config.precision,
            seed=config.seed,
            reporter=reporter,
        )
        return True

    run_stage("eval", eval_record, _metrics_match(captioner_dir / "metrics.json", config.eval, splits), evaluate)
    metrics = read_json(captioner_dir / "metrics.json")

    gallery = out / "caption_gallery.png"
    _write_gallery(captioner_dir / "captions.jsonl", data_root, gallery, split=splits[-1], seed=config.seed)
    return PipelineResult(out, data_root, gan_dir, captioner_dir, metrics, timings, gallery)


def _write_gallery(captions_file: Path, data_root: Path, path: Path, *, split: str, seed: int, count: int = 24) -> None:
    """Draw ``count`` images of ``split``, from distinct classes where possible, with their captions."""
    import torch

    from hybridcap.datasets import caption_names_class, load_prepared
    from hybridcap.training.gallery import write_caption_gallery

    records = []
    with open(captions_file, encoding="utf-8") as file:
        for line in file:
            record = json.loads(line)
            if record["split"] == split:
                records.append(record)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(records), generator=generator).tolist()
    chosen, seen_classes = [], set()
    for position in order:
        if records[position]["fine_label"] not in seen_classes:
            chosen.append(records[position])
            seen_classes.add(records[position]["fine_label"])
        if len(chosen) == count:
            break

    data = load_prepared(data_root)
    images = data.split(split).images[[record["index"] for record in chosen]]
    captions = [record["caption"] for record in chosen]
    correct = [caption_names_class(record["caption"], data.fine_names[record["fine_label"]]) for record in chosen]
    title = f"{split} images: {sum(correct)} of {len(chosen)} captions name the right class (green, \u2713)"
    write_caption_gallery(path, images, captions, correct, title=title)
