"""``hybridcap run`` end to end on a small subset of the real CIFAR-100, through the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cifar_factory import write_members_archive
from typer.testing import CliRunner

from hybridcap.cli.main import app
from hybridcap.metrics.captioning import METRIC_NAMES

TRAIN_PER_CLASS = 10
TEST_PER_CLASS = 2


def _first_per_class(images: np.ndarray, fine_labels: np.ndarray, coarse_labels: np.ndarray, per_class: int, prefix: str) -> dict:
    chosen = np.concatenate([np.flatnonzero(fine_labels == label)[:per_class] for label in range(100)])
    return {
        "data": images[chosen].reshape(len(chosen), 3072),
        "fine_labels": fine_labels[chosen].tolist(),
        "coarse_labels": coarse_labels[chosen].tolist(),
        "filenames": [f"{prefix}_{index:05d}.png" for index in range(len(chosen))],
        "batch_label": f"{prefix} subset",
    }


@pytest.fixture(scope="module")
def real_subset_archive(real_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An official-layout archive with the first 10 train and 2 test images of every real class."""
    from hybridcap.datasets.cifar_source import read_cifar100_archive
    from hybridcap.datasets.validation import validate_cifar100

    arrays = validate_cifar100(read_cifar100_archive(real_archive))
    members = {
        "train": _first_per_class(arrays.train.images, arrays.train.fine_labels, arrays.train.coarse_labels, TRAIN_PER_CLASS, "train"),
        "test": _first_per_class(arrays.test.images, arrays.test.fine_labels, arrays.test.coarse_labels, TEST_PER_CLASS, "test"),
        "meta": {"fine_label_names": arrays.fine_label_names, "coarse_label_names": arrays.coarse_label_names},
    }
    return write_members_archive(tmp_path_factory.mktemp("real-subset") / "cifar-100-python.tar.gz", members)


def _run_arguments(archive: Path, root: Path, out: Path) -> list[str]:
    return [
        "run",
        "--archive", str(archive),
        "--root", str(root),
        "--out", str(out),
        "--device", "cpu",
        "--precision", "bf16",
        "--clip-pretrained", "none",
        "--set", "data.val_per_class=2",
        "--set", "gan.epochs=1",
        "--set", "gan.batch_size=50",
        "--set", "gan.width=16",
        "--set", "captioner.epochs=1",
        "--set", "captioner.batch_size=50",
        "--set", "captioner.head_hidden_dim=64",
        "--set", "captioner.decoder_hidden_dim=64",
        "--set", "captioner.word_embedding_dim=32",
        "--set", "eval.beam_size=2",
    ]  # fmt: skip


@pytest.mark.real_data
@pytest.mark.slow
def test_run_smoke_on_real_subset(real_subset_archive: Path, tmp_path: Path) -> None:
    root, out = tmp_path / "data", tmp_path / "experiment"
    result = CliRunner().invoke(app, _run_arguments(real_subset_archive, root, out))
    assert result.exit_code == 0, result.output

    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["train"]["images"] == 800
    assert manifest["counts"]["val"]["images"] == 200
    assert manifest["counts"]["test"]["images"] == 200

    expected_files = [
        out / "pipeline.json",
        out / "stages.json",
        out / "caption_gallery.png",
        out / "gan" / "config.json",
        out / "gan" / "generator.safetensors",
        out / "gan" / "discriminator.safetensors",
        out / "gan" / "training_state.safetensors",
        out / "gan" / "losses.jsonl",
        out / "gan" / "loss_curve.png",
        out / "gan" / "samples" / "epoch_001.png",
        out / "captioner" / "config.json",
        out / "captioner" / "best.safetensors",
        out / "captioner" / "last.safetensors",
        out / "captioner" / "vocabulary.json",
        out / "captioner" / "captions.json",
        out / "captioner" / "history.jsonl",
        out / "captioner" / "loss_curve.png",
        out / "captioner" / "metrics.json",
        out / "captioner" / "captions.jsonl",
        out / "captioner" / "per_class_val.csv",
        out / "captioner" / "per_class_test.csv",
    ]
    missing = [str(path.relative_to(out)) for path in expected_files if not path.is_file()]
    assert missing == []

    metrics = json.loads((out / "captioner" / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"val", "test"}
    for split, split_result in metrics["splits"].items():
        for system in ("model", "floor", "ceiling"):
            scores = split_result[system]
            for name in METRIC_NAMES:
                upper = 10.0 if name == "cider" else 1.0
                assert 0.0 <= scores[name] <= upper, f"{split} {system} {name} = {scores[name]}"
                assert math.isfinite(scores[name])
            assert 0.0 <= scores["class_accuracy"] <= 1.0
            assert 0.0 <= scores["superclass_accuracy"] <= 1.0
        assert split_result["ceiling"]["class_accuracy"] == 1.0
        assert split_result["floor"]["bleu_4"] < split_result["ceiling"]["bleu_4"]

    captions = [json.loads(line) for line in (out / "captioner" / "captions.jsonl").read_text().splitlines()]
    assert len(captions) == 400

    # A second run with the same options skips every trained stage.
    rerun = CliRunner().invoke(app, _run_arguments(real_subset_archive, root, out))
    assert rerun.exit_code == 0, rerun.output
    assert "gan: already done, skipped" in rerun.output
    assert "captioner: already done, skipped" in rerun.output
    assert "eval: already done, skipped" in rerun.output

    # Another experiment re-splits the shared data folder. The next run restores the split, and
    # since that is the split the stages were trained on, they are still skipped.
    resplit = CliRunner().invoke(app, ["data", "--archive", str(real_subset_archive), "--root", str(root), "--val-per-class", "3", "--seed", "9"])
    assert resplit.exit_code == 0, resplit.output
    restored = CliRunner().invoke(app, _run_arguments(real_subset_archive, root, out))
    assert restored.exit_code == 0, restored.output
    assert json.loads((root / "manifest.json").read_text())["counts"]["val"]["images"] == 200
    assert "gan: already done, skipped" in restored.output
    assert "captioner: already done, skipped" in restored.output
    assert "starts over" not in restored.output
