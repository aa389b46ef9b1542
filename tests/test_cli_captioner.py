"""`hybridcap train-captioner`: exit codes, messages and option defaults."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
from typer.testing import CliRunner

from captioner_helpers import with_cache
from hybridcap.cli.captioner import train_captioner_command
from hybridcap.cli.main import app
from hybridcap.training.captioner import CaptionerConfig

runner = CliRunner()


def tiny_arguments(data: Path, gan: Path, out: Path) -> list[str]:
    return [
        "train-captioner",
        "--data-root", str(data),
        "--gan", str(gan),
        "--out", str(out),
        "--epochs", "1",
        "--batch-size", "10",
        "--decoder-hidden-dim", "32",
        "--clip-pretrained", "none",
        "--device", "cpu",
    ]  # fmt: skip


def test_cli_train_captioner_trains_then_resumes(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run")

    first = runner.invoke(app, arguments)

    assert first.exit_code == 0, first.output
    assert "warning: --clip-pretrained none" in first.stderr
    assert "embedded 60 captions with the ViT-B-16 (none) text tower" in first.stdout
    assert "training a new captioner" in first.stdout
    assert "epoch 1/1  cross_entropy" in first.stdout
    assert "val_class_accuracy" in first.stdout
    assert "best checkpoint: epoch 1, validation class accuracy" in first.stdout
    assert (tmp_path / "run" / "best.safetensors").is_file()
    assert (tmp_path / "run" / "last.safetensors").is_file()

    second = runner.invoke(app, [*arguments, "--epochs", "2", "--precision", "bf16"])

    assert second.exit_code == 0, second.output
    assert "caption embeddings loaded from" in second.stdout
    assert "resuming" in second.stdout
    assert "epoch 2/2" in second.stdout
    assert "2 epochs (10 steps) done" in second.stdout


def test_cli_train_captioner_frozen_encoder_without_contrastive(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run")

    result = runner.invoke(app, [*arguments, "--encoder", "freeze", "--contrastive-weight", "0"])

    assert result.exit_code == 0, result.output
    assert "encoder freeze" in result.stdout
    assert "warning" not in result.stderr
    assert "contrastive" not in result.stdout
    assert not (tmp_path / "run" / "text_embeddings.safetensors").exists()


def test_cli_train_captioner_missing_gan_run_fails(captioner_data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, tiny_arguments(captioner_data, tmp_path / "no_gan", tmp_path / "run"))

    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1
    assert len(error_lines) == 1
    assert error_lines[0].startswith("error: GAN run folder")
    assert "hybridcap train-gan --data-root" in error_lines[0]
    assert "Traceback" not in result.output


def test_cli_train_captioner_missing_data_fails(captioner_gan_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, tiny_arguments(tmp_path / "missing", captioner_gan_run, tmp_path / "run"))

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1].startswith("error:")
    assert "hybridcap data" in result.stderr
    assert not (tmp_path / "run").exists()


def test_cli_train_captioner_gan_width_mismatch_fails(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(captioner_data, captioner_gan_run, with_cache(tmp_path / "run", captioner_embedding_cache))
    assert runner.invoke(app, arguments).exit_code == 0
    wide_gan = tmp_path / "wide_gan"
    gan = runner.invoke(app, ["train-gan", "--data-root", str(captioner_data), "--out", str(wide_gan), "--epochs", "1", "--batch-size", "10", "--width", "16", "--device", "cpu"])
    assert gan.exit_code == 0, gan.output

    result = runner.invoke(app, [*arguments, "--epochs", "2", "--gan", str(wide_gan)])

    assert result.exit_code == 1
    assert "trained on a GAN of width 8 but --gan has width 16" in result.stderr
    assert "--fresh" in result.stderr


def test_cli_train_captioner_offline_clip_fails(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    arguments = tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run")
    arguments[arguments.index("none")] = "openai"

    result = runner.invoke(app, arguments)

    assert result.exit_code == 1
    assert "CLIP weights ViT-B-16 (openai) are not in the Hugging Face cache" in result.stderr
    assert "--clip-weights PATH" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_train_captioner_missing_clip_weights_fails(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run")
    arguments[arguments.index("none")] = "openai"

    result = runner.invoke(app, [*arguments, "--clip-weights", str(tmp_path / "absent.safetensors")])

    assert result.exit_code == 1
    assert "CLIP weights file not found" in result.stderr
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_cli_train_captioner_contradicting_clip_options_fail(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "clip.safetensors"
    weights.write_bytes(b"")

    result = runner.invoke(app, [*tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run"), "--clip-weights", str(weights)])

    assert result.exit_code == 1
    assert "--clip-weights and --clip-pretrained none contradict each other" in result.stderr


def test_cli_train_captioner_rejects_unknown_encoder_mode(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run"), "--encoder", "thaw"])

    assert result.exit_code == 2
    assert "--encoder" in result.output


def test_cli_train_captioner_defaults_match_config() -> None:
    defaults = CaptionerConfig()
    parameters = inspect.signature(train_captioner_command).parameters
    checked = 0
    for config_field in dataclasses.fields(CaptionerConfig):
        if config_field.name not in parameters:
            continue
        cli_default = parameters[config_field.name].default
        cli_default = getattr(cli_default, "value", cli_default)
        if isinstance(cli_default, Path):
            cli_default = str(cli_default)
        assert cli_default == getattr(defaults, config_field.name), config_field.name
        checked += 1
    assert checked >= 15


def test_cli_captioner_module_does_not_import_torch() -> None:
    code = "import sys, hybridcap.cli.captioner; print('torch' in sys.modules, 'open_clip' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True)
    assert completed.stdout.strip() == "False False"


def test_cli_train_captioner_unavailable_clip_leaves_no_run(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "clip.bin"
    corrupt.write_bytes(b"\x80\x02 truncated pickle")
    arguments = tiny_arguments(captioner_data, captioner_gan_run, tmp_path / "run")
    arguments[arguments.index("none")] = "openai"

    result = runner.invoke(app, [*arguments, "--clip-weights", str(corrupt)])

    assert result.exit_code == 1
    assert "cannot read CLIP weights" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "config.json").exists()
