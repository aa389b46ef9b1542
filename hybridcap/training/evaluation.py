"""Evaluate a captioner run: caption every val/test image, score the captions, bracket the scores.

Template captions share most of their words across classes, so n-gram metrics stay high even when
every class is wrong. Each split is therefore scored three times with the same scorers:

- model: the run's captions, generated with beam search from its best checkpoint.
- floor: a captioner that ignores the image. For each image it draws a class uniformly at
  random and one of that class's reference captions uniformly at random (seeded), so it writes
  exactly the training templates.
- ceiling: the same template draw, but with the image's true class: a reference caption of the
  right class. It is not held out from the references it is scored against, because the model is
  trained to reproduce these very captions. A model that always names the right class with a
  training template therefore reaches the ceiling (BLEU 1.0). Floor and ceiling use the same
  templates for the same images, so the gap between them is the value of naming the right class.

All three are scored against all references of each image.

Files written atomically in the run folder (each eval replaces them):
``metrics.json``, ``captions.jsonl`` and ``per_class_<split>.csv``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hybridcap.datasets import load_prepared
from hybridcap.datasets.captions import readable_class_name, readable_superclass_name
from hybridcap.device import DeviceChoice, Precision, resolve_device
from hybridcap.errors import RunFolderError
from hybridcap.io import atomic_write_json, atomic_write_text, read_json
from hybridcap.metrics.accuracy import ClassNameMatcher, caption_accuracy
from hybridcap.metrics.captioning import METRIC_NAMES, CaptionScorer, CaptionScores, Tokenizer
from hybridcap.training.reporting import TrainingReporter
from hybridcap.training.run_folder import split_change

EVALUATION_SPLITS = ("val", "test")
# Top-level entries of metrics.json that must match for results of two evaluations to share it.
_SETTINGS_KEYS = ("checkpoint", "checkpoint_step", "beam_size", "precision", "metrics", "tokenizer", "floor_seed")
METRICS_FILE = "metrics.json"
CAPTIONS_FILE = "captions.jsonl"


@dataclass
class SplitEvaluation:
    """Everything measured on one split.

    Attributes:
        split: ``"val"`` or ``"test"``.
        scores: for each of ``model``, ``floor`` and ``ceiling``, metric name to value; besides
            the caption metrics it has ``class_accuracy`` and ``superclass_accuracy``.
        notes: caveats about the scores, e.g. that CIDEr is not meaningful on this set.
        captions: the model's caption of each image.
        fine_labels: the true fine class of each image.
        per_class: one row per fine class, as written to ``per_class_<split>.csv``.
        seconds: wall time of caption generation and of scoring.
    """

    split: str
    scores: dict[str, dict[str, float]]
    notes: list[str]
    captions: list[str]
    fine_labels: list[int]
    per_class: list[dict[str, Any]]
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    """The result of ``evaluate_run``.

    Attributes:
        run_dir: the evaluated run folder.
        splits: split name to its evaluation, in the order evaluated.
        metrics: the content written to ``metrics.json``.
        files: paths of the files written.
    """

    run_dir: Path
    splits: dict[str, SplitEvaluation]
    metrics: dict[str, Any]
    files: list[Path]


def baseline_captions(fine_labels: Sequence[int], captions: Sequence[Sequence[str]], seed: int) -> tuple[list[str], list[str]]:
    """Return the floor and ceiling caption of each image.

    For image ``i`` one template position is drawn. The floor caption is the reference caption at
    that position of a uniformly random class, and the ceiling caption the one of the true class
    ``fine_labels[i]``. The draws depend only on ``seed`` and the number of images.
    """
    generator = np.random.default_rng(seed)
    random_classes = generator.integers(0, len(captions), size=len(fine_labels)).tolist()
    template_draws = generator.random(size=len(fine_labels)).tolist()
    floor = [captions[label][int(draw * len(captions[label]))] for label, draw in zip(random_classes, template_draws)]
    ceiling = [captions[int(label)][int(draw * len(captions[int(label)]))] for label, draw in zip(fine_labels, template_draws)]
    return floor, ceiling


def evaluate_run(
    run_dir: str | os.PathLike[str],
    splits: Sequence[str] = EVALUATION_SPLITS,
    beam_size: int = 3,
    metrics: Sequence[str] = METRIC_NAMES,
    device: DeviceChoice | str = DeviceChoice.auto,
    *,
    precision: Precision | str = Precision.fp32,
    data_root: str | os.PathLike[str] | None = None,
    tokenizer: Tokenizer | str = Tokenizer.ptb,
    batch_size: int = 500,
    seed: int = 0,
    reporter: TrainingReporter | None = None,
) -> EvaluationResult:
    """Caption every image of ``splits`` with the run's best checkpoint and score the captions.

    Args:
        run_dir: a captioner run folder with ``best.safetensors``.
        splits: any of ``"val"`` and ``"test"``.
        beam_size: beams per image; 1 decodes greedily.
        metrics: names from ``METRIC_NAMES``; only these scorers are built.
        device: where to generate captions.
        precision: ``fp32``, or ``bf16`` autocast for generation. bf16 was about 3x faster in
            benchmarks/eval_speed.py on a 2-core CPU, but its beams may differ slightly from fp32.
        data_root: prepared CIFAR-100 folder; by default the one the run was trained on.
        tokenizer: ``ptb`` (pycocoevalcap's Java tokenizer, the standard) or ``simple``.
        batch_size: images per generation batch.
        seed: seed of the floor captioner; split ``val`` uses ``seed`` and ``test`` ``seed + 1``.
        reporter: receives one ``info`` line per finished stage.

    Raises:
        RunFolderError: the run folder is missing, incomplete, or does not match the data.
        DataError: the prepared data is missing.
        JavaNotFoundError: Java is needed for ``metrics``/``tokenizer`` but not on PATH.
        ScorerError: a Java scorer failed or timed out.
    """
    from hybridcap.training.inference import load_captioner

    reporter = reporter or TrainingReporter()
    run_dir = Path(run_dir)
    unknown_splits = [split for split in splits if split not in EVALUATION_SPLITS]
    if unknown_splits or not splits:
        raise ValueError(f"splits must be a non-empty selection of {EVALUATION_SPLITS}, got {list(splits)}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")

    # The scorer checks for Java and starts METEOR first: METEOR then loads its paraphrase
    # table while the captions are generated, and a missing Java fails before any slow work.
    with CaptionScorer(metrics, tokenizer) as scorer:
        torch_device = resolve_device(device)
        loaded = load_captioner(run_dir, checkpoint="best", device=torch_device)
        data = load_prepared(Path(data_root) if data_root is not None else _data_root_of(loaded.config, run_dir))
        _check_same_classes(loaded.fine_names, data.fine_names, run_dir, data.root)
        if "val" in splits:
            # The test split is the whole official test set however the folder was split, so only
            # validation scores can include images the run trained on.
            change = split_change(loaded.config.get("data_split"), data)
            if change is not None:
                raise RunFolderError(f"cannot score the val split of {run_dir}: {change}, or pass --split test")
        references_by_class = [list(class_captions) for class_captions in loaded.captions]

        generated: dict[str, tuple[list[str], list[int], float]] = {}
        for split in splits:
            image_split = data.split(split)
            start = time.perf_counter()
            captions = loaded.caption(image_split.images, beam_size=beam_size, batch_size=batch_size, precision=precision)
            seconds = time.perf_counter() - start
            generated[split] = (captions, image_split.fine_labels.tolist(), seconds)
            reporter.info(f"{split}: captioned {len(captions)} images in {seconds:.1f} s")

        evaluations: dict[str, SplitEvaluation] = {}
        matcher = ClassNameMatcher(data.fine_names)
        for split in splits:
            captions, fine_labels, generation_seconds = generated[split]
            start = time.perf_counter()
            evaluations[split] = _score_split(
                split,
                captions,
                fine_labels,
                references_by_class,
                scorer,
                matcher,
                data.fine_names,
                data.coarse_names,
                data.fine_to_coarse,
                # A seed per split name, so a split's floor does not depend on which others ran.
                seed + EVALUATION_SPLITS.index(split),
            )
            evaluations[split].seconds = {"generation": generation_seconds, "scoring": time.perf_counter() - start}
            reporter.info(f"{split}: scored model, floor and ceiling in {evaluations[split].seconds['scoring']:.1f} s")

    summary = {
        "run_dir": str(run_dir),
        "checkpoint": "best",
        "checkpoint_step": loaded.config.get("global_step"),
        "beam_size": beam_size,
        "precision": Precision(precision).value,
        "metrics": list(scorer.metrics),
        "tokenizer": Tokenizer(tokenizer).value,
        "floor_seed": seed,
        "splits": {
            split: {"images": len(evaluation.captions), **evaluation.scores, "notes": evaluation.notes}
            for split, evaluation in evaluations.items()
        },
    }
    files = _write_outputs(run_dir, summary, evaluations, references_by_class, data.fine_names)
    return EvaluationResult(run_dir=run_dir, splits=evaluations, metrics=summary, files=files)


def _score_split(
    split: str,
    captions: list[str],
    fine_labels: list[int],
    references_by_class: list[list[str]],
    scorer: CaptionScorer,
    matcher: ClassNameMatcher,
    fine_names: Sequence[str],
    coarse_names: Sequence[str],
    fine_to_coarse: Sequence[int],
    seed: int,
) -> SplitEvaluation:
    references = [references_by_class[label] for label in fine_labels]
    floor, ceiling = baseline_captions(fine_labels, references_by_class, seed)
    # One tokenizer run for all three caption sets; each run starts a Java process.
    scorer.pretokenize([*captions, *(caption for class_captions in references_by_class for caption in class_captions)])

    scores: dict[str, dict[str, float]] = {}
    model_scores: CaptionScores | None = None
    model_accuracy = None
    notes: list[str] = []
    for system, hypotheses in {"model": captions, "floor": floor, "ceiling": ceiling}.items():
        caption_scores = scorer.score(hypotheses, references)
        accuracy = caption_accuracy(hypotheses, fine_labels, fine_names, fine_to_coarse, matcher)
        scores[system] = {
            **caption_scores.corpus,
            "class_accuracy": accuracy.class_accuracy,
            "superclass_accuracy": accuracy.superclass_accuracy,
        }
        if system == "model":
            model_scores, model_accuracy = caption_scores, accuracy
            notes.extend(caption_scores.notes)

    assert model_scores is not None and model_accuracy is not None
    per_class = _per_class_rows(model_scores, model_accuracy, fine_labels, fine_names, coarse_names, fine_to_coarse)
    return SplitEvaluation(split=split, scores=scores, notes=notes, captions=captions, fine_labels=fine_labels, per_class=per_class)


def _per_class_rows(
    scores: CaptionScores,
    accuracy: Any,
    fine_labels: Sequence[int],
    fine_names: Sequence[str],
    coarse_names: Sequence[str],
    fine_to_coarse: Sequence[int],
) -> list[dict[str, Any]]:
    cider_sums = np.zeros(len(fine_names))
    if "cider" in scores.per_image:
        np.add.at(cider_sums, np.asarray(fine_labels, dtype=np.int64), np.asarray(scores.per_image["cider"]))
    rows = []
    for entry in accuracy.per_class:
        if entry.images == 0:
            continue
        row: dict[str, Any] = {
            "fine_label": entry.fine_label,
            "class_name": readable_class_name(fine_names[entry.fine_label]),
            "superclass_name": readable_superclass_name(coarse_names[fine_to_coarse[entry.fine_label]]),
            "images": entry.images,
            "class_accuracy": round(entry.class_accuracy, 6),
            "superclass_accuracy": round(entry.superclass_accuracy, 6),
        }
        if "cider" in scores.per_image:
            row["cider"] = round(float(cider_sums[entry.fine_label]) / entry.images, 6)
        rows.append(row)
    return rows


def _write_outputs(
    run_dir: Path,
    summary: dict[str, Any],
    evaluations: dict[str, SplitEvaluation],
    references_by_class: list[list[str]],
    fine_names: Sequence[str],
) -> list[Path]:
    files = [run_dir / METRICS_FILE, run_dir / CAPTIONS_FILE]
    kept_splits, kept_lines = _results_to_keep(run_dir, summary, evaluations)
    summary["splits"] = {**kept_splits, **summary["splits"]}
    atomic_write_json(files[0], summary)

    lines = list(kept_lines)
    for split, evaluation in evaluations.items():
        for index, (caption, label) in enumerate(zip(evaluation.captions, evaluation.fine_labels)):
            record = {
                "split": split,
                "index": index,
                "fine_label": label,
                "class_name": readable_class_name(fine_names[label]),
                "caption": caption,
                "references": references_by_class[label],
            }
            lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(files[1], "\n".join(lines) + "\n")

    for split, evaluation in evaluations.items():
        path = run_dir / f"per_class_{split}.csv"
        buffer = io.StringIO()
        if evaluation.per_class:
            writer = csv.DictWriter(buffer, fieldnames=list(evaluation.per_class[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(evaluation.per_class)
        atomic_write_text(path, buffer.getvalue())
        files.append(path)
    for split in EVALUATION_SPLITS:
        if split not in summary["splits"]:
            # A CSV left from an evaluation whose figures are no longer in metrics.json.
            (run_dir / f"per_class_{split}.csv").unlink(missing_ok=True)
    return files


def _results_to_keep(run_dir: Path, summary: dict[str, Any], evaluations: dict[str, SplitEvaluation]) -> tuple[dict[str, Any], list[str]]:
    """Return the earlier results of the splits not evaluated now, when they came from the same checkpoint and settings.

    So ``--split val`` after a full evaluation keeps the test figures, captions and CSV. Results
    made with another checkpoint or other settings are dropped instead, so that the files never
    mix two evaluations.
    """
    try:
        previous = read_json(run_dir / METRICS_FILE)
    except RunFolderError:
        return {}, []
    if not isinstance(previous, dict) or any(previous.get(key) != summary[key] for key in _SETTINGS_KEYS):
        return {}, []
    earlier_splits = {split: result for split, result in previous.get("splits", {}).items() if split in EVALUATION_SPLITS and split not in evaluations}
    lines = []
    captions_path = run_dir / CAPTIONS_FILE
    if earlier_splits and captions_path.is_file():
        for line in captions_path.read_text(encoding="utf-8").splitlines():
            try:
                split = json.loads(line).get("split")
            except (json.JSONDecodeError, AttributeError):
                continue
            if split in earlier_splits:
                lines.append(line)
    return earlier_splits, lines


def _data_root_of(checkpoint_metadata: dict[str, Any], run_dir: Path) -> Path:
    value = checkpoint_metadata.get("training", {}).get("data_root")
    if not value:
        raise RunFolderError(f"the best checkpoint in {run_dir} does not record its data folder; retrain the run with `hybridcap train-captioner`")
    return Path(value)


def _check_same_classes(run_names: Sequence[str], data_names: Sequence[str], run_dir: Path, data_root: Path) -> None:
    if [readable_class_name(name) for name in run_names] != [readable_class_name(name) for name in data_names]:
        raise RunFolderError(f"the classes of {run_dir} differ from those of the prepared data in {data_root}; evaluate with the data the run was trained on")
