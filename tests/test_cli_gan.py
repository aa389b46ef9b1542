"""`hybridcap train-gan`: exit codes, messages and option defaults."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hybridcap.cli.gan import train_gan_command
from hybridcap.cli.main import app
from hybridcap.training.gan import GanConfig

runner = CliRunner()


def tiny_arguments(prepared_root: Path, out: Path) -> list[str]:
    return [
        "train-gan",
        "--data-root", str(prepared_root),
        "--out", str(out),
        "--epochs", "1",
        "--batch-size", "32",
        "--width", "8",
        "--latent-dim", "16",
        "--device", "cpu",
    ]  # fmt: skip


def test_cli_train_gan_trains_then_resumes(prepared_root: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(prepared_root, tmp_path / "run")

    first = runner.invoke(app, arguments)

    assert first.exit_code == 0, first.output
    assert "training a new DCGAN" in first.stdout
    assert "epoch 1/1  loss_discriminator" in first.stdout
    assert "images/s" in first.stdout
    assert "1 epochs (15 steps) done" in first.stdout
    assert (tmp_path / "run" / "samples" / "epoch_001.png").is_file()

    second = runner.invoke(app, [*arguments, "--epochs", "2", "--precision", "bf16"])

    assert second.exit_code == 0, second.output
    assert "resuming" in second.stdout
    assert "epoch 2/2" in second.stdout
    assert "epoch 1/2" not in second.stdout
    assert "2 epochs (30 steps) done" in second.stdout


def test_cli_train_gan_missing_data_fails(tmp_path: Path) -> None:
    result = runner.invoke(app, tiny_arguments(tmp_path / "missing", tmp_path / "run"))

    assert result.exit_code == 1
    assert result.stderr.startswith("error:")
    assert "hybridcap data" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_cli_train_gan_incompatible_run_fails(prepared_root: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(prepared_root, tmp_path / "run")
    assert runner.invoke(app, arguments).exit_code == 0

    result = runner.invoke(app, [*arguments, "--width", "16"])

    assert result.exit_code == 1
    assert "width is 8 in the saved run but 16 now" in result.stderr
    assert "--fresh" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    fresh = runner.invoke(app, [*arguments, "--width", "16", "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert "training a new DCGAN" in fresh.stdout


def test_cli_train_gan_divergence_fails(prepared_root: Path, tmp_path: Path) -> None:
    arguments = tiny_arguments(prepared_root, tmp_path / "run")
    assert runner.invoke(app, arguments).exit_code == 0

    result = runner.invoke(app, [*arguments, "--epochs", "2", "--learning-rate", "1e30"])

    assert result.exit_code == 1
    # Losses are checked once per logged interval, every 20 steps by default.
    assert "training diverged in steps 16-20 (epoch 2)" in result.stderr
    assert "checkpoint of step 15" in result.stderr


def test_cli_train_gan_unwritable_out_fails(prepared_root: Path, tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a folder")

    result = runner.invoke(app, tiny_arguments(prepared_root, tmp_path / "blocker" / "run"))

    assert result.exit_code == 1
    assert "cannot write to" in result.stderr


def test_cli_train_gan_rejects_zero_epochs(prepared_root: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, [*tiny_arguments(prepared_root, tmp_path / "run"), "--epochs", "0"])

    assert result.exit_code == 2
    assert "--epochs" in result.output


def test_cli_train_gan_defaults_match_config() -> None:
    defaults = GanConfig()
    parameters = inspect.signature(train_gan_command).parameters
    for config_field in dataclasses.fields(GanConfig):
        if config_field.name not in parameters:
            continue
        cli_default = parameters[config_field.name].default
        cli_default = getattr(cli_default, "value", cli_default)
        config_default = getattr(defaults, config_field.name)
        if config_field.name == "out":
            cli_default = str(cli_default)
        assert cli_default == config_default, config_field.name


def test_cli_gan_module_does_not_import_torch() -> None:
    code = "import sys, hybridcap.cli.gan; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True)
    assert completed.stdout.strip() == "False"
