"""``hybridcap data`` through Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from cifar_factory import write_cifar100_folder
from typer.testing import CliRunner

from hybridcap.cli.main import app
from hybridcap.datasets import load_prepared

runner = CliRunner()


def test_data_command_archive(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"

    result = runner.invoke(app, ["data", "--archive", str(generated_archive), "--root", str(root), "--val-per-class", "1"])

    assert result.exit_code == 0, result.output
    assert "Prepared CIFAR-100" in result.stdout
    assert "train" in result.stdout
    assert "500" in result.stdout
    assert "100 classes in 20 superclasses" in result.stdout
    assert result.stderr.count("warning:") == 1
    assert "differs from the official CIFAR-100 release" in result.stderr
    assert len(load_prepared(root).split("test")) == 200


def test_data_command_data_root_alias(tmp_path: Path, generated_archive: Path) -> None:
    root = tmp_path / "root"

    result = runner.invoke(app, ["data", "--archive", str(generated_archive), "--data-root", str(root), "--val-per-class", "1"])

    assert result.exit_code == 0, result.output
    assert len(load_prepared(root).split("train")) == 500


def test_data_command_rerun_noop_and_force(tmp_path: Path, generated_archive: Path) -> None:
    arguments = ["data", "--archive", str(generated_archive), "--root", str(tmp_path / "root"), "--val-per-class", "1"]
    runner.invoke(app, arguments)

    rerun = runner.invoke(app, arguments)
    forced = runner.invoke(app, [*arguments, "--force"])

    assert rerun.exit_code == 0
    assert "nothing to do" in rerun.stdout
    assert "warning:" not in rerun.stderr
    assert forced.exit_code == 0
    assert "Prepared CIFAR-100" in forced.stdout


def test_data_command_folder_with_seed(tmp_path: Path) -> None:
    folder = write_cifar100_folder(tmp_path / "extracted", train_per_class=3, test_per_class=1)

    result = runner.invoke(app, ["data", "--dir", str(folder), "--root", str(tmp_path / "root"), "--val-per-class", "2", "--seed", "7"])

    assert result.exit_code == 0, result.output
    manifest = load_prepared(tmp_path / "root").manifest
    assert manifest["options"]["seed"] == 7
    assert manifest["counts"]["val"]["images"] == 200
    assert result.stderr == ""


def test_data_command_download_checksum_failure(tmp_path: Path, generated_archive: Path) -> None:
    # A file:// address serves the generated archive, whose MD5 is not the official one.
    root = tmp_path / "root"

    result = runner.invoke(app, ["data", "--url", generated_archive.as_uri(), "--root", str(root)])

    assert result.exit_code == 1
    assert result.stderr.startswith("error: download of file://")
    assert "expected eb9058c3a382ffc7106e4002c42a8d85" in result.stderr
    assert "Traceback" not in result.output
    assert not root.exists()


def test_data_command_bad_inputs(tmp_path: Path, generated_archive: Path) -> None:
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(generated_archive.read_bytes()[:500])
    cases = [
        (["--archive", str(tmp_path / "absent.tar.gz")], "not found"),
        (["--archive", str(broken)], "truncated, corrupt or not a tar.gz file"),
        (["--dir", str(tmp_path / "absent")], "not found"),
        (["--archive", str(generated_archive), "--val-per-class", "-1"], "--val-per-class must be 0 or more"),
        (["--archive", str(generated_archive), "--val-per-class", "6"], "too few to hold out 6"),
        (["--archive", str(generated_archive), "--dir", str(tmp_path)], "choose one source"),
        (["--url", "ftp://127.0.0.1/a.tar.gz"], "must start with http://, https:// or file://"),
    ]
    for arguments, message in cases:
        result = runner.invoke(app, ["data", "--root", str(tmp_path / "root"), *arguments])

        assert result.exit_code == 1, arguments
        assert result.stderr.startswith("error: "), arguments
        assert message in result.stderr, (arguments, result.stderr)
        assert result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "root").exists()

