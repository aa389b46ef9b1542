"""`hybridcap eval`: scores, floor and ceiling, output files and error messages."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hybridcap.cli.main import app
from hybridcap.metrics.java import find_java
from hybridcap.metrics.names import METRIC_NAMES
from hybridcap.training.evaluation import baseline_captions

runner = CliRunner()
# Metrics that need no Java when tokenised with the simple tokenizer.
PYTHON_ONLY = ["--tokenizer", "simple", "--metrics", "bleu_1,bleu_4,rouge_l,cider"]


@pytest.fixture
def run_dir(tiny_captioner_run: Path, tmp_path: Path) -> Path:
    """A private copy, so files written by one test cannot satisfy another."""
    return Path(shutil.copytree(tiny_captioner_run, tmp_path / "captioner"))


def test_cli_eval_writes_files_and_table(run_dir: Path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir), "--split", "val", "--beam", "2", "--device", "cpu", *PYTHON_ONLY])

    assert result.exit_code == 0, result.output
    assert "val: 100 images" in result.stdout
    for text in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr", "class accuracy", "superclass accuracy", "floor", "ceiling"):
        assert text in result.stdout
    assert "METEOR" not in result.stdout
    assert "val: captioned 100 images" in result.stderr

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["splits"]) == ["val"]
    assert metrics["beam_size"] == 2
    assert metrics["tokenizer"] == "simple"
    assert set(metrics["splits"]["val"]["model"]) == {"bleu_1", "bleu_4", "rouge_l", "cider", "class_accuracy", "superclass_accuracy"}

    records = [json.loads(line) for line in (run_dir / "captions.jsonl").read_text().splitlines()]
    assert len(records) == 100
    assert [record["index"] for record in records] == list(range(100))
    assert set(records[0]) == {"split", "index", "fine_label", "class_name", "caption", "references"}
    assert len(records[0]["references"]) == 6

    with open(run_dir / "per_class_val.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 100
    assert set(rows[0]) == {"fine_label", "class_name", "superclass_name", "images", "class_accuracy", "superclass_accuracy", "cider"}
    assert sum(int(row["images"]) for row in rows) == 100
    class_correct = sum(float(row["class_accuracy"]) * int(row["images"]) for row in rows)
    assert class_correct / 100 == pytest.approx(metrics["splits"]["val"]["model"]["class_accuracy"])


@pytest.mark.skipif(find_java() is None, reason="needs Java for METEOR and the PTB tokenizer")
def test_cli_eval_json_floor_below_ceiling(run_dir: Path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir), "--split", "test", "--json", "--device", "cpu"])

    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    test = metrics["splits"]["test"]
    assert test["images"] == 200
    assert metrics["metrics"] == list(METRIC_NAMES)
    for name in (*METRIC_NAMES, "class_accuracy"):
        assert test["floor"][name] < test["ceiling"][name], name
    # A reference caption of the true class is itself one of the references.
    assert test["ceiling"]["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert test["ceiling"]["class_accuracy"] == 1.0
    assert (run_dir / "per_class_test.csv").is_file()
    assert not (run_dir / "per_class_val.csv").exists()


def test_cli_eval_repeated_metrics_option(run_dir: Path) -> None:
    arguments = ["eval", str(run_dir), "--split", "val", "--json", "--tokenizer", "simple", "--metrics", "cider", "--metrics", "bleu_2", "--precision", "bf16"]
    result = runner.invoke(app, arguments)

    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["metrics"] == ["bleu_2", "cider"]
    assert metrics["precision"] == "bf16"


def test_cli_eval_java_missing(run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    result = runner.invoke(app, ["eval", str(run_dir), "--split", "val"])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: java was not found on PATH")
    assert "METEOR and the PTB tokenizer" in result.stderr
    assert "--tokenizer simple --metrics bleu_1,bleu_2,bleu_3,bleu_4,rouge_l,cider" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (run_dir / "metrics.json").exists()


def test_cli_eval_missing_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing"), *PYTHON_ONLY])

    assert result.exit_code == 1
    assert "nothing not found" in result.stderr
    assert "Traceback" not in result.output


def test_cli_eval_beam_over_limit(run_dir: Path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir), "--beam", "1001", *PYTHON_ONLY])

    assert result.exit_code == 2
    assert "less than or equal to 1000" in result.stderr
    assert not (run_dir / "metrics.json").exists()


def test_cli_eval_unknown_metric(run_dir: Path) -> None:
    result = runner.invoke(app, ["eval", str(run_dir), "--metrics", "bleu_1,spice"])

    assert result.exit_code == 1
    assert "unknown metric 'spice'" in result.stderr


def test_baseline_captions_differ_only_in_class() -> None:
    captions = [[f"a photo of class {label}", f"a picture of class {label}"] for label in range(10)]
    labels = [3, 3, 7, 0, 9]

    floor, ceiling = baseline_captions(labels, captions, seed=0)
    floor_again, _ = baseline_captions(labels, captions, seed=0)
    floor_other, _ = baseline_captions(labels, captions, seed=1)

    assert floor == floor_again
    assert floor != floor_other
    for label, ceiling_caption, floor_caption in zip(labels, ceiling, floor):
        assert ceiling_caption in captions[label]
        assert ceiling_caption.split(" class ")[0] == floor_caption.split(" class ")[0]


def test_cli_eval_one_split_keeps_other(run_dir: Path) -> None:
    both = runner.invoke(app, ["eval", str(run_dir), "--split", "both", "--beam", "2", "--device", "cpu", *PYTHON_ONLY])
    assert both.exit_code == 0, both.output
    test_figures = json.loads((run_dir / "metrics.json").read_text())["splits"]["test"]

    same_settings = runner.invoke(app, ["eval", str(run_dir), "--split", "val", "--beam", "2", "--device", "cpu", *PYTHON_ONLY])

    assert same_settings.exit_code == 0, same_settings.output
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(metrics["splits"]) == ["test", "val"]
    assert metrics["splits"]["test"] == test_figures
    splits_in_captions = [json.loads(line)["split"] for line in (run_dir / "captions.jsonl").read_text().splitlines()]
    assert splits_in_captions.count("test") == 200
    assert splits_in_captions.count("val") == 100
    assert (run_dir / "per_class_test.csv").is_file()

    other_beam = runner.invoke(app, ["eval", str(run_dir), "--split", "val", "--beam", "1", "--device", "cpu", *PYTHON_ONLY])

    assert other_beam.exit_code == 0, other_beam.output
    assert list(json.loads((run_dir / "metrics.json").read_text())["splits"]) == ["val"]
    assert {json.loads(line)["split"] for line in (run_dir / "captions.jsonl").read_text().splitlines()} == {"val"}
    assert not (run_dir / "per_class_test.csv").exists()
