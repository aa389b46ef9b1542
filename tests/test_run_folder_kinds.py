"""Each trainer rejects another kind's output folder, even with --fresh, so it cannot overwrite it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from hybridcap.cli.main import app
from hybridcap.training import captioner, gan
from hybridcap.training.gan import GanConfig
from hybridcap.training.run_folder import RUN_FOLDER_SIGNATURES

runner = CliRunner()


def file_hashes(folder: Path) -> dict[str, str]:
    """Map each file under ``folder`` to the SHA-256 of its bytes."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.rglob("*")) if path.is_file()}


def gan_arguments(data: Path, out: Path) -> list[str]:
    return ["train-gan", "--data-root", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "32", "--width", "8", "--latent-dim", "16", "--device", "cpu"]


def captioner_arguments(data: Path, gan_run: Path, out: Path) -> list[str]:
    options = ["--data-root", str(data), "--gan", str(gan_run), "--out", str(out), "--epochs", "1", "--batch-size", "32"]
    return ["train-captioner", *options, "--contrastive-weight", "0", "--device", "cpu"]


def test_signatures_are_trainer_files() -> None:
    assert set(RUN_FOLDER_SIGNATURES["GAN run"]) <= set(gan.RUN_FILES)
    assert set(RUN_FOLDER_SIGNATURES["captioner run"]) <= set(captioner.RUN_FILES)


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_train_gan_rejects_captioner_folder(tiny_captioner_run: Path, prepared_root: Path, tmp_path: Path, fresh: list[str]) -> None:
    run_dir = Path(shutil.copytree(tiny_captioner_run, tmp_path / "captioner"))
    before = file_hashes(run_dir)

    result = runner.invoke(app, [*gan_arguments(prepared_root, run_dir), *fresh])

    assert result.exit_code == 1
    assert f"{run_dir} is a captioner run folder (it has best.safetensors), not a GAN run folder; choose another --out" in result.stderr
    assert file_hashes(run_dir) == before


@pytest.mark.parametrize("fresh", [[], ["--fresh"]])
def test_train_captioner_rejects_gan_folder(tiny_captioner_run: Path, prepared_root: Path, tmp_path: Path, fresh: list[str]) -> None:
    gan_run = Path(shutil.copytree(tiny_captioner_run.parent / "gan", tmp_path / "gan"))
    before = file_hashes(gan_run)

    result = runner.invoke(app, [*captioner_arguments(prepared_root, gan_run, gan_run), *fresh])

    assert result.exit_code == 1
    assert f"{gan_run} is a GAN run folder (it has generator.safetensors)" in result.stderr
    assert file_hashes(gan_run) == before


def test_train_gan_rejects_experiment_folder(prepared_root: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    experiment.mkdir()
    (experiment / "pipeline.json").write_text("{}")

    result = runner.invoke(app, gan_arguments(prepared_root, experiment))

    assert result.exit_code == 1
    assert "is an experiment folder (it has pipeline.json)" in result.stderr
    assert sorted(path.name for path in experiment.iterdir()) == ["pipeline.json"]


def test_run_rejects_gan_folder(tiny_captioner_run: Path, tmp_path: Path) -> None:
    gan_run = Path(shutil.copytree(tiny_captioner_run.parent / "gan", tmp_path / "gan"))
    before = file_hashes(gan_run)

    result = runner.invoke(app, ["run", "--archive", str(tmp_path / "missing.tar.gz"), "--root", str(tmp_path / "data"), "--out", str(gan_run), "--clip-pretrained", "none"])

    assert result.exit_code == 1
    assert f"{gan_run} is a GAN run folder (it has generator.safetensors), not an experiment folder" in result.stderr
    assert file_hashes(gan_run) == before


def test_eval_experiment_folder_names_captioner(tiny_captioner_run: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    shutil.copytree(tiny_captioner_run, experiment / "captioner")

    result = runner.invoke(app, ["eval", str(experiment), "--tokenizer", "simple", "--metrics", "bleu_1"])

    assert result.exit_code == 1
    assert f"{experiment} is an experiment folder (it has captioner/config.json), not a captioner run folder; use its subfolder {experiment / 'captioner'}" in result.stderr


def test_caption_gan_folder_rejected(tiny_captioner_run: Path, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32), color=(200, 30, 30)).save(image)

    result = runner.invoke(app, ["caption", str(image), "--run", str(tiny_captioner_run.parent / "gan")])

    assert result.exit_code == 1
    assert "is a GAN run folder (it has generator.safetensors), not a captioner run folder; use a folder written by `hybridcap train-captioner`" in result.stderr


def test_unfinished_gan_run_recognised(prepared_root: Path, tmp_path: Path) -> None:
    # A GAN run killed before its first checkpoint has only its config.
    gan_run = tmp_path / "gan"
    gan_run.mkdir()
    (gan_run / "config.json").write_text(json.dumps(GanConfig(data_root=str(prepared_root), out=str(gan_run)).to_dict()))
    before = file_hashes(gan_run)

    training = runner.invoke(app, [*captioner_arguments(prepared_root, gan_run, gan_run), "--fresh"])
    evaluation = runner.invoke(app, ["eval", str(gan_run), "--tokenizer", "simple", "--metrics", "bleu_1"])

    assert training.exit_code == 1
    assert f"{gan_run} is a GAN run folder (it has config.json), not a captioner run folder; choose another --out" in training.stderr
    assert evaluation.exit_code == 1
    assert "is a GAN run folder (it has config.json)" in evaluation.stderr
    assert file_hashes(gan_run) == before


def test_gan_option_given_captioner_run(tiny_captioner_run: Path, prepared_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, captioner_arguments(prepared_root, tiny_captioner_run, tmp_path / "captioner"))

    assert result.exit_code == 1
    assert f"{tiny_captioner_run} is a captioner run folder (it has best.safetensors), not a GAN run folder; use a folder written by `hybridcap train-gan`" in result.stderr
    assert not (tmp_path / "captioner").exists()


def test_gan_option_given_experiment(tiny_captioner_run: Path, prepared_root: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    shutil.copytree(tiny_captioner_run.parent / "gan", experiment / "gan")

    result = runner.invoke(app, captioner_arguments(prepared_root, experiment, tmp_path / "captioner"))

    assert result.exit_code == 1
    assert f"use its subfolder {experiment / 'gan'}" in result.stderr


def test_train_gan_rejects_experiment_subfolder(tiny_captioner_run: Path, prepared_root: Path, tmp_path: Path) -> None:
    experiment = tmp_path / "experiment"
    shutil.copytree(tiny_captioner_run, experiment / "captioner")

    result = runner.invoke(app, [*gan_arguments(prepared_root, experiment), "--fresh"])

    assert result.exit_code == 1
    assert "is an experiment folder (it has captioner/config.json), not a GAN run folder" in result.stderr
    assert sorted(path.name for path in experiment.iterdir()) == ["captioner"]


def test_data_rejects_captioner_run_root(tiny_captioner_run: Path, generated_archive: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(tiny_captioner_run, tmp_path / "captioner"))
    before = file_hashes(run_dir)

    result = runner.invoke(app, ["data", "--archive", str(generated_archive), "--root", str(run_dir), "--val-per-class", "1"])

    assert result.exit_code == 1
    assert f"--root {run_dir} is a run or experiment folder (it has config.json); choose another folder" in result.stderr
    assert file_hashes(run_dir) == before


def test_train_gan_rejects_data_folder(prepared_root: Path, tmp_path: Path) -> None:
    data_copy = Path(shutil.copytree(prepared_root, tmp_path / "data"))
    before = file_hashes(data_copy)

    result = runner.invoke(app, gan_arguments(prepared_root, data_copy))

    assert result.exit_code == 1
    assert f"{data_copy} is a prepared-data folder (it has manifest.json), not a GAN run folder; choose another --out" in result.stderr
    assert file_hashes(data_copy) == before
