"""Runs record the train/validation split they used and notice when the data folder was re-split."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from captioner_helpers import tiny_config, with_cache
from captioner_runs import train_tiny_captioner
from cifar_factory import write_cifar100_archive
from hybridcap.cli.main import app
from hybridcap.datasets import load_prepared, prepare_cifar100
from hybridcap.errors import RunFolderError
from hybridcap.io import load_weights
from hybridcap.training.captioner import train_captioner
from hybridcap.training.evaluation import evaluate_run
from hybridcap.training.gan import GanConfig, train_gan
from hybridcap.training.reporting import TrainingReporter

runner = CliRunner()
PYTHON_ONLY_METRICS = ["bleu_1", "cider"]


class WarningReporter(TrainingReporter):
    """Keep the warnings a trainer reports."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, message: str) -> None:
        self.warnings.append(message)


def resplit(root: Path, archive: Path, seed: int) -> None:
    """Rebuild the prepared folder ``root`` from ``archive`` with one validation image per class and ``seed``."""
    result = prepare_cifar100(root, archive=archive, val_per_class=1, seed=seed)
    assert result.rebuilt


def tiny_gan_config(data: Path, out: Path, epochs: int) -> GanConfig:
    return GanConfig(data_root=str(data), out=str(out), epochs=epochs, batch_size=32, width=8, latent_dim=16, save_every=0, device="cpu")


def test_split_digest_follows_split_options(generated_archive: Path, prepared_root: Path, tmp_path: Path) -> None:
    same = tmp_path / "same"
    other_seed = tmp_path / "other_seed"
    more_val = tmp_path / "more_val"
    prepare_cifar100(same, archive=generated_archive, val_per_class=1, seed=0)
    prepare_cifar100(other_seed, archive=generated_archive, val_per_class=1, seed=1)
    prepare_cifar100(more_val, archive=generated_archive, val_per_class=2, seed=0)

    digest = load_prepared(prepared_root).split_digest()

    assert len(digest) == 16
    assert load_prepared(same).split_digest() == digest
    assert load_prepared(other_seed).split_digest() != digest
    assert load_prepared(more_val).split_digest() != digest
    record = load_prepared(more_val).split_record()
    assert record["digest"] == load_prepared(more_val).split_digest()
    assert (record["val_per_class"], record["seed"]) == (2, 0)
    assert record["source"] == {"kind": "archive", "location": str(generated_archive)}


def test_checkpoint_records_split(tiny_captioner_run: Path, prepared_root: Path) -> None:
    _, metadata = load_weights(tiny_captioner_run / "best.safetensors")

    assert metadata["data_split"] == load_prepared(prepared_root).split_record()


def test_eval_val_on_resplit_data_raises(tiny_captioner_run: Path, generated_archive: Path, tmp_path: Path) -> None:
    resplit_root = tmp_path / "resplit"
    resplit(resplit_root, generated_archive, seed=1)

    with pytest.raises(RunFolderError) as raised:
        evaluate_run(tiny_captioner_run, splits=["val"], metrics=PYTHON_ONLY_METRICS, tokenizer="simple", device="cpu", data_root=resplit_root)

    message = str(raised.value)
    assert "(--val-per-class 1 --seed 1; the run used --val-per-class 1 --seed 0)" in message
    assert f"`hybridcap data --root {resplit_root} --archive {generated_archive} --val-per-class 1 --seed 0 --force`" in message
    assert message.endswith("or pass --split test")
    assert not (tiny_captioner_run / "metrics.json").exists()


def test_eval_test_on_resplit_data_scores(tiny_captioner_run: Path, generated_archive: Path, tmp_path: Path) -> None:
    run_dir = Path(shutil.copytree(tiny_captioner_run, tmp_path / "captioner"))
    resplit_root = tmp_path / "resplit"
    resplit(resplit_root, generated_archive, seed=1)

    result = evaluate_run(run_dir, splits=["test"], metrics=PYTHON_ONLY_METRICS, tokenizer="simple", device="cpu", data_root=resplit_root)

    assert list(result.splits) == ["test"]
    assert len(result.splits["test"].captions) == 200


def test_cli_eval_resplit_data_one_line(generated_archive: Path, tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    resplit(data_root, generated_archive, seed=0)
    run_dir = train_tiny_captioner(data_root, tmp_path / "runs", epochs=1)
    resplit(data_root, generated_archive, seed=3)

    result = runner.invoke(app, ["eval", str(run_dir), "--split", "both", "--device", "cpu", "--tokenizer", "simple", "--metrics", "bleu_1"])

    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "was rebuilt with another train/validation split" in result.stderr
    assert "Traceback" not in result.output


def test_gan_resume_on_resplit_data_raises(prepared_root: Path, generated_archive: Path, tmp_path: Path) -> None:
    data_root = Path(shutil.copytree(prepared_root, tmp_path / "data"))
    train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=1))
    resplit(data_root, generated_archive, seed=2)

    with pytest.raises(RunFolderError, match=r"cannot resume .*--seed 2; the run used --val-per-class 1 --seed 0\).*or pass --fresh"):
        train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=2))


def test_gan_resume_on_same_split_continues(prepared_root: Path, generated_archive: Path, tmp_path: Path) -> None:
    data_root = Path(shutil.copytree(prepared_root, tmp_path / "data"))
    train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=1))
    # A forced rebuild with the original options gives the same split, so the run may go on.
    prepare_cifar100(data_root, archive=generated_archive, val_per_class=1, seed=0, force=True)

    result = train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=2))

    assert result.epochs_completed == 2


def test_captioner_resume_on_resplit_data_raises(
    captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path
) -> None:
    data_root = Path(shutil.copytree(captioner_data, tmp_path / "data"))
    archive = captioner_data.parent / "cifar-100-python.tar.gz"
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(data_root, captioner_gan_run, out, epochs=1))
    resplit(data_root, archive, seed=5)

    reporter = WarningReporter()

    with pytest.raises(RunFolderError, match=r"cannot resume .*the run used --val-per-class 1 --seed 0\).*or pass --fresh"):
        train_captioner(tiny_config(data_root, captioner_gan_run, out, epochs=2), reporter=reporter)
    # The GAN was trained on the old split too, but the error alone gives the remedy.
    assert reporter.warnings == []


def test_captioner_warns_gan_other_split(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path) -> None:
    data_root = Path(shutil.copytree(captioner_data, tmp_path / "data"))
    resplit(data_root, captioner_data.parent / "cifar-100-python.tar.gz", seed=5)
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    reporter = WarningReporter()

    train_captioner(tiny_config(data_root, captioner_gan_run, out, epochs=1), reporter=reporter)

    assert len(reporter.warnings) == 1
    assert reporter.warnings[0].startswith(f"the GAN run {captioner_gan_run} was trained on another split")


def test_captioner_same_split_gan_no_warning(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path) -> None:
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    reporter = WarningReporter()

    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1), reporter=reporter)

    assert reporter.warnings == []


def test_restore_command_names_run_archive(generated_archive: Path, prepared_root: Path, tmp_path: Path) -> None:
    data_root = tmp_path / "data with space"
    shutil.copytree(prepared_root, data_root)
    train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=1))
    other_archive = write_cifar100_archive(tmp_path / "other archive.tar.gz", train_per_class=7, test_per_class=2)
    prepare_cifar100(data_root, archive=other_archive, val_per_class=1, seed=4)

    with pytest.raises(RunFolderError) as raised:
        train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=2))

    restore = str(raised.value).split("restore it with `")[1].split("`")[0]
    assert shlex.split(restore) == ["hybridcap", "data", "--root", str(data_root), "--archive", str(generated_archive), "--val-per-class", "1", "--seed", "0", "--force"]

    result = runner.invoke(app, shlex.split(restore)[1:])
    assert result.exit_code == 0, result.output
    assert train_gan(tiny_gan_config(data_root, tmp_path / "gan", epochs=2)).epochs_completed == 2
