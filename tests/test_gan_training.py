"""GAN trainer: run folder, exact resume, divergence, config checks, on tiny networks and generated data."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image

from hybridcap.errors import DataError, HybridcapError, RunFolderError, TrainingDivergedError
from hybridcap.io import load_weights
from hybridcap.networks.dcgan import DcganConfig, Discriminator
from hybridcap.training.gan import GanConfig, load_discriminator, train_gan
from hybridcap.training.gan_step import CollapseMonitor, binary_entropy
from hybridcap.training.reporting import TrainingReporter

# 500 generated training images in batches of 32 give 15 steps per epoch.
STEPS_PER_EPOCH = 15


def tiny_config(prepared_root: Path, out: Path, **changes) -> GanConfig:
    config = GanConfig(
        data_root=str(prepared_root),
        out=str(out),
        epochs=1,
        batch_size=32,
        width=8,
        latent_dim=16,
        save_every=0,
        log_every=5,
        device="cpu",
    )
    return dataclasses.replace(config, **changes)


class SimulatedKill(Exception):
    """Raised from a reporter to stop training the way a killed process would."""


class KillingReporter(TrainingReporter):
    """Raise SimulatedKill once ``completed_steps`` of epoch ``epoch`` have been reported."""

    def __init__(self, epoch: int, completed_steps: int) -> None:
        self.kill_epoch = epoch
        self.kill_steps = completed_steps
        self.epoch = 0

    def epoch_started(self, epoch: int, total_epochs: int, total_steps: int, completed_steps: int) -> None:
        self.epoch = epoch

    def steps_finished(self, completed_steps: int, values: Mapping[str, float]) -> None:
        if self.epoch == self.kill_epoch and completed_steps >= self.kill_steps:
            raise SimulatedKill


class RecordingReporter(TrainingReporter):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.warnings: list[str] = []
        self.epochs: list[int] = []

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warning(self, message: str) -> None:
        self.warnings.append(message)

    def epoch_finished(self, epoch: int, summary: Mapping[str, float]) -> None:
        self.epochs.append(epoch)


def assert_same_tensor_file(first: Path, second: Path) -> None:
    first_tensors, first_metadata = load_weights(first)
    second_tensors, second_metadata = load_weights(second)
    assert sorted(first_tensors) == sorted(second_tensors)
    # The trainer draws nothing from the global CPU generator, so its saved state only reflects
    # what the test process did before training.
    first_tensors.pop("rng.torch_cpu_global", None)
    for name, value in first_tensors.items():
        assert torch.equal(value, second_tensors[name]), f"{first.name}: {name} differs"
    assert first_metadata.get("counters") == second_metadata.get("counters")


@pytest.fixture(scope="module")
def uninterrupted_run(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two epochs in one call, with checkpoints every 4 steps and a losses row every step."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    train_gan(tiny_config(prepared_root, out, epochs=2, save_every=4, log_every=1))
    return out


def test_train_gan_writes_run_folder(uninterrupted_run: Path) -> None:
    for name in ["config.json", "generator.safetensors", "discriminator.safetensors", "training_state.safetensors", "losses.jsonl", "loss_curve.png"]:
        assert (uninterrupted_run / name).is_file(), name
    assert sorted(path.name for path in (uninterrupted_run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert not list(uninterrupted_run.glob("**/*.tmp"))

    config = json.loads((uninterrupted_run / "config.json").read_text())
    assert config["width"] == 8
    assert config["epochs"] == 2
    assert Path(config["data_root"]).is_absolute()

    rows = [json.loads(line) for line in (uninterrupted_run / "losses.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    assert rows[0]["epoch"] == 1
    assert rows[-1]["epoch"] == 2
    assert set(rows[0]) == {"step", "epoch", "loss_discriminator", "loss_generator", "d_real", "d_fake"}
    assert 0.0 < rows[0]["d_real"] < 1.0

    _, generator_config = load_weights(uninterrupted_run / "generator.safetensors")
    assert generator_config == DcganConfig(latent_dim=16, width=8).to_dict()

    with Image.open(uninterrupted_run / "samples" / "epoch_001.png") as grid:
        # 64 samples of 32x32 in an 8x8 grid with torchvision's 2-pixel padding.
        assert grid.size == (8 * 34 + 2, 8 * 34 + 2)
    with Image.open(uninterrupted_run / "loss_curve.png") as curve:
        assert curve.format == "PNG"


@pytest.mark.parametrize(("kill_epoch", "kill_steps"), [(1, 7), (2, 10)])
def test_train_gan_resume_after_kill_matches_uninterrupted(
    prepared_root: Path, tmp_path: Path, uninterrupted_run: Path, kill_epoch: int, kill_steps: int
) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", epochs=2, save_every=4, log_every=1)
    with pytest.raises(SimulatedKill):
        train_gan(config, reporter=KillingReporter(kill_epoch, kill_steps))

    killed_at = (kill_epoch - 1) * STEPS_PER_EPOCH + kill_steps
    _, metadata = load_weights(tmp_path / "run" / "training_state.safetensors")
    assert metadata["counters"]["global_step"] == killed_at - killed_at % 4

    result = train_gan(config)

    assert result.resumed_from_step == killed_at - killed_at % 4
    assert result.global_step == 2 * STEPS_PER_EPOCH
    for name in ["generator.safetensors", "discriminator.safetensors", "training_state.safetensors"]:
        assert_same_tensor_file(uninterrupted_run / name, tmp_path / "run" / name)
    assert (tmp_path / "run" / "losses.jsonl").read_text() == (uninterrupted_run / "losses.jsonl").read_text()
    for sample in ["epoch_001.png", "epoch_002.png"]:
        assert (tmp_path / "run" / "samples" / sample).read_bytes() == (uninterrupted_run / "samples" / sample).read_bytes()


def test_train_gan_more_epochs_continues_finished_run(prepared_root: Path, tmp_path: Path, uninterrupted_run: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", epochs=1, save_every=4, log_every=1)
    first = train_gan(config)
    assert first.epochs_completed == 1

    second = train_gan(dataclasses.replace(config, epochs=2))

    assert second.epochs_completed == 2
    assert second.resumed_from_step == STEPS_PER_EPOCH
    assert len(second.epoch_summaries) == 1
    assert_same_tensor_file(uninterrupted_run / "training_state.safetensors", tmp_path / "run" / "training_state.safetensors")


def test_train_gan_finished_run_trains_nothing(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run")
    train_gan(config)
    before = (tmp_path / "run" / "training_state.safetensors").read_bytes()
    reporter = RecordingReporter()

    result = train_gan(config, reporter=reporter)

    assert result.epoch_summaries == []
    assert result.global_step == STEPS_PER_EPOCH
    assert any("already finished 1 epochs" in message for message in reporter.messages)
    assert (tmp_path / "run" / "training_state.safetensors").read_bytes() == before


def test_train_gan_fewer_epochs_keeps_config(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", epochs=2)
    train_gan(config)
    reporter = RecordingReporter()

    result = train_gan(dataclasses.replace(config, epochs=1), reporter=reporter)

    assert result.epoch_summaries == []
    assert json.loads((tmp_path / "run" / "config.json").read_text())["epochs"] == 2
    assert not any(message.startswith("resuming") for message in reporter.messages)
    assert any("already finished 2 epochs" in message for message in reporter.messages)


def test_train_gan_divergence_keeps_last_good_checkpoint(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", save_every=1, log_every=1)
    train_gan(config)
    state_before = (tmp_path / "run" / "training_state.safetensors").read_bytes()
    generator_before = (tmp_path / "run" / "generator.safetensors").read_bytes()
    losses_before = (tmp_path / "run" / "losses.jsonl").read_text()

    # Adam moves every weight by about the learning rate, so with 1e30 the next forward pass
    # overflows float32.
    with pytest.raises(TrainingDivergedError) as raised:
        train_gan(dataclasses.replace(config, epochs=2, learning_rate=1e30))

    message = str(raised.value)
    assert f"diverged at step {STEPS_PER_EPOCH + 1}" in message
    assert f"checkpoint of step {STEPS_PER_EPOCH}" in message
    assert "\n" not in message
    assert (tmp_path / "run" / "training_state.safetensors").read_bytes() == state_before
    assert (tmp_path / "run" / "generator.safetensors").read_bytes() == generator_before
    assert (tmp_path / "run" / "losses.jsonl").read_text() == losses_before
    tensors, _ = load_weights(tmp_path / "run" / "training_state.safetensors")
    for name, value in tensors.items():
        if value.is_floating_point():
            assert torch.isfinite(value).all(), name


def test_train_gan_resume_with_lower_learning_rate(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run")
    train_gan(config)
    reporter = RecordingReporter()

    train_gan(dataclasses.replace(config, epochs=2, learning_rate=1e-4), reporter=reporter)

    assert any("learning_rate changes from 0.0002 to 0.0001" in message for message in reporter.messages)
    _, metadata = load_weights(tmp_path / "run" / "training_state.safetensors")
    for group in metadata["optimizers"]["generator"]["param_groups"]:
        assert group["lr"] == 1e-4


@pytest.mark.parametrize(("change", "expected"), [({"width": 16}, "width is 8"), ({"seed": 1}, "seed is 0"), ({"batch_size": 16}, "batch_size is 32")])
def test_train_gan_incompatible_run_folder_raises(prepared_root: Path, tmp_path: Path, change: dict, expected: str) -> None:
    config = tiny_config(prepared_root, tmp_path / "run")
    train_gan(config)
    state_before = (tmp_path / "run" / "training_state.safetensors").read_bytes()
    config_before = (tmp_path / "run" / "config.json").read_text()

    with pytest.raises(RunFolderError) as raised:
        train_gan(dataclasses.replace(config, **change))

    assert expected in str(raised.value)
    assert "--fresh" in str(raised.value)
    assert (tmp_path / "run" / "training_state.safetensors").read_bytes() == state_before
    assert (tmp_path / "run" / "config.json").read_text() == config_before


def test_train_gan_fresh_starts_over(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", epochs=2)
    train_gan(config)

    result = train_gan(dataclasses.replace(config, epochs=1, width=16), fresh=True)

    assert result.resumed_from_step is None
    assert result.global_step == STEPS_PER_EPOCH
    assert sorted(path.name for path in (tmp_path / "run" / "samples").iterdir()) == ["epoch_001.png"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["width"] == 16


def test_train_gan_removes_killed_write_leftovers(prepared_root: Path, tmp_path: Path) -> None:
    config = tiny_config(prepared_root, tmp_path / "run", epochs=1)
    train_gan(config)
    # What a kill during a checkpoint leaves: atomic_path's folder with a partial file inside.
    leftover = tmp_path / "run" / ".training_state.safetensors.k1ll3d.tmp"
    leftover.mkdir()
    (leftover / "training_state.safetensors").write_bytes(b"partial")

    train_gan(dataclasses.replace(config, epochs=2))

    assert not leftover.exists()
    assert not list((tmp_path / "run").glob(".*"))


def test_train_gan_missing_data_writes_nothing(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "no-data", tmp_path / "run")
    with pytest.raises(DataError):
        train_gan(config)
    assert not (tmp_path / "run").exists()


def test_train_gan_unwritable_out_raises(prepared_root: Path, tmp_path: Path) -> None:
    # A regular file where a folder is expected blocks writing even for root.
    (tmp_path / "blocker").write_text("not a folder")
    config = tiny_config(prepared_root, tmp_path / "blocker" / "run")
    with pytest.raises(HybridcapError) as raised:
        train_gan(config)
    assert "cannot write" in str(raised.value)


def test_train_gan_batch_larger_than_data_raises(prepared_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        train_gan(tiny_config(prepared_root, tmp_path / "run", batch_size=1000))
    assert "fewer than one batch of 1000" in str(raised.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("change", "name"), [({"epochs": 0}, "epochs"), ({"learning_rate": -1.0}, "learning_rate"), ({"label_smoothing": 1.0}, "label_smoothing"), ({"device": "tpu"}, "device")])
def test_train_gan_invalid_config_raises(prepared_root: Path, tmp_path: Path, change: dict, name: str) -> None:
    with pytest.raises(HybridcapError) as raised:
        train_gan(tiny_config(prepared_root, tmp_path / "run", **change))
    assert name in str(raised.value)


def test_train_gan_bf16_runs_on_cpu(prepared_root: Path, tmp_path: Path) -> None:
    result = train_gan(tiny_config(prepared_root, tmp_path / "run", precision="bf16"))
    summary = result.epoch_summaries[0]
    assert torch.isfinite(torch.tensor(summary["loss_discriminator"]))
    assert summary["loss_generator"] > 0


def test_load_discriminator_returns_trained_weights(uninterrupted_run: Path) -> None:
    discriminator = load_discriminator(uninterrupted_run, "cpu")
    tensors, _ = load_weights(uninterrupted_run / "discriminator.safetensors")
    assert isinstance(discriminator, Discriminator)
    assert not discriminator.training
    assert discriminator.config == DcganConfig(latent_dim=16, width=8)
    for name, value in discriminator.state_dict().items():
        assert torch.equal(value, tensors[name]), name
    features = discriminator.forward_features(torch.zeros(2, 3, 32, 32))
    assert features.shape == (2, 32, 4, 4)


def test_load_discriminator_missing_run_raises(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as raised:
        load_discriminator(tmp_path / "nothing", "cpu")
    assert "hybridcap train-gan" in str(raised.value)


def test_collapse_monitor_fires_once_per_stretch() -> None:
    monitor = CollapseMonitor(label_smoothing=0.0, margin=0.02, patience_steps=100)
    assert [monitor.update(0.001, 40) for _ in range(4)] == [False, False, True, False]
    assert monitor.update(1.2, 40) is False
    assert [monitor.update(0.001, 50) for _ in range(2)] == [False, True]


def test_collapse_monitor_threshold_accounts_for_smoothing() -> None:
    monitor = CollapseMonitor(label_smoothing=0.1, margin=0.02, patience_steps=10)
    # With target 0.9 the real term cannot fall below the entropy of 0.9 (0.325 nats).
    assert monitor.threshold == pytest.approx(binary_entropy(0.9) + 0.02)
    assert binary_entropy(0.9) == pytest.approx(0.3251, abs=1e-4)
    assert monitor.update(0.33, 20) is True
