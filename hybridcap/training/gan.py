"""Train the DCGAN on the prepared CIFAR-100 training split, resumably, into a run folder.

Run folder layout:
    config.json                  GanConfig of the latest invocation
    generator.safetensors        generator weights after the last finished epoch, DcganConfig in metadata
    discriminator.safetensors    discriminator weights after the last finished epoch, same metadata
    training_state.safetensors   everything needed to resume, written every epoch and every save_every steps
    losses.jsonl                 one row per logged interval: step, epoch and the STEP_VALUE_NAMES means
    samples/epoch_NNN.png        generator output for a fixed noise batch after each epoch
    loss_curve.png               both losses against the step

Resuming regenerates each epoch's batch order from (seed, epoch) and restores the random
generator that draws flips and noise, so on the CPU a resumed run is bitwise identical to an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridcap.datasets import PreparedCifar100, default_data_root, load_prepared
from hybridcap.device import DeviceChoice, Precision, resolve_device
from hybridcap.errors import DataError, HybridcapError, RunFolderError, TrainingDivergedError
from hybridcap.io import atomic_write_json, atomic_write_text, load_weights, remove_stale_temporary_files, save_weights, state_dict_mismatch
from hybridcap.networks.dcgan import DcganConfig, Discriminator, Generator, init_dcgan_weights
from hybridcap.training.checkpoint import load_training_state, save_training_state
from hybridcap.training.gan_step import (
    STEP_VALUE_NAMES,
    CollapseMonitor,
    GanTrainingStep,
    IntervalMeter,
    all_parameters_finite,
    uses_channels_last,
)
from hybridcap.training.plots import save_loss_curve, save_sample_grid
from hybridcap.training.reporting import TrainingReporter
from hybridcap.training.run_folder import derived_seed, epoch_permutation, read_log_rows, reject_other_run_folder, reject_resume_on_other_split, saved_config_to_resume, wrong_folder_message

CONFIG_FILE = "config.json"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
STATE_FILE = "training_state.safetensors"
LOSSES_FILE = "losses.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"
SAMPLES_FOLDER = "samples"
# The run's top-level files, the training state first (see _remove_run_files).
RUN_FILES = (STATE_FILE, GENERATOR_FILE, DISCRIMINATOR_FILE, LOSSES_FILE, LOSS_CURVE_FILE, CONFIG_FILE)
SAMPLE_COUNT = 64

# Fields that must be unchanged to resume a run: they fix the networks' shapes, the images or
# the batch order. The learning rate and label smoothing may change on resume (for example to
# recover from a divergence), like epochs, save_every, log_every, device and precision.
RESUME_KEYS = ["data_root", "seed", "batch_size", "adam_betas", "width", "latent_dim"]
# Fields that may change on resume but change the results; the trainer reports a change.
ADJUSTABLE_KEYS = ["learning_rate", "label_smoothing"]

# Purposes mixed into the seed, so each source of randomness gets its own independent stream.
_SEED_WEIGHTS = 1
_SEED_FIXED_NOISE = 2
_SEED_STEPS = 3
_SEED_PERMUTATION = 4


@dataclass
class GanConfig:
    """Options of one GAN training run, saved as the run folder's ``config.json``.

    Attributes:
        data_root: folder written by ``hybridcap data``; None means ``default_data_root()``.
        out: run folder for weights, training state, losses and samples.
        epochs: total number of epochs, counting those of a resumed run.
        batch_size: images per step; the last incomplete batch of each epoch is dropped.
        learning_rate: Adam learning rate of both networks.
        adam_betas: Adam's (beta1, beta2) for both networks.
        label_smoothing: one-sided smoothing, real images' target is ``1 - label_smoothing``.
        latent_dim: length of the generator's noise vector.
        width: channels of the networks' 16x16 stage (see DcganConfig).
        seed: seed of the weights, the batch order, the flips and the noise.
        save_every: also checkpoint every this many steps within an epoch; 0 checkpoints only
            at the end of each epoch.
        log_every: steps between two rows of ``losses.jsonl`` and two reporter updates.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        precision: ``fp32``, or ``bf16`` autocast.
    """

    data_root: str | None = None
    out: str = "runs/gan"
    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 2e-4
    adam_betas: tuple[float, float] = (0.5, 0.999)
    label_smoothing: float = 0.0
    latent_dim: int = 100
    width: int = 64
    seed: int = 0
    save_every: int = 200
    log_every: int = 20
    device: str = DeviceChoice.auto.value
    precision: str = Precision.fp32.value

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["adam_betas"] = list(self.adam_betas)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GanConfig:
        known = {config_field.name for config_field in dataclasses.fields(cls)}
        selected = {key: value for key, value in values.items() if key in known}
        if "adam_betas" in selected:
            selected["adam_betas"] = tuple(selected["adam_betas"])
        return cls(**selected)

    def network_config(self) -> DcganConfig:
        return DcganConfig(latent_dim=self.latent_dim, width=self.width)


@dataclass
class GanResult:
    """Summary of one ``train_gan`` call.

    Attributes:
        run_dir: the run folder.
        epochs_completed: epochs finished in the run folder, counting earlier invocations.
        global_step: steps finished in the run folder, counting earlier invocations.
        resumed_from_step: global step restored from the training state, or None for a new run.
        epoch_summaries: per-epoch means of STEP_VALUE_NAMES plus ``images_per_second`` and
            ``seconds``, for the epochs finished by this invocation.
        sample_grid: the latest sample grid PNG, or None when no epoch has finished.
    """

    run_dir: Path
    epochs_completed: int
    global_step: int
    resumed_from_step: int | None
    epoch_summaries: list[dict[str, float]] = field(default_factory=list)
    sample_grid: Path | None = None


def validate_config(config: GanConfig) -> None:
    """Raise HybridcapError naming the first invalid option of ``config``."""
    positive_integers = ["epochs", "batch_size", "latent_dim", "width", "log_every"]
    for name in positive_integers:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HybridcapError(f"invalid GAN config: {name} must be a positive integer, got {value!r}")
    if isinstance(config.save_every, bool) or not isinstance(config.save_every, int) or config.save_every < 0:
        raise HybridcapError(f"invalid GAN config: save_every must be 0 or a positive integer, got {config.save_every!r}")
    if not (math.isfinite(config.learning_rate) and config.learning_rate > 0):
        raise HybridcapError(f"invalid GAN config: learning_rate must be a positive number, got {config.learning_rate!r}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise HybridcapError(f"invalid GAN config: label_smoothing must be in [0, 1), got {config.label_smoothing!r}")
    if len(config.adam_betas) != 2 or not all(0.0 <= beta < 1.0 for beta in config.adam_betas):
        raise HybridcapError(f"invalid GAN config: adam_betas must be two numbers in [0, 1), got {config.adam_betas!r}")
    for name, choices in [("device", DeviceChoice), ("precision", Precision)]:
        value = getattr(config, name)
        if value not in [choice.value for choice in choices]:
            allowed = ", ".join(choice.value for choice in choices)
            raise HybridcapError(f"invalid GAN config: {name} must be one of {allowed}, got {value!r}")


def _remove_run_files(run_dir: Path) -> None:
    """Delete the files an earlier run left in ``run_dir``.

    The training state goes first, so an interrupted deletion never leaves a resumable state
    beside deleted weights.
    """
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    samples = run_dir / SAMPLES_FOLDER
    if samples.is_dir():
        for sample in samples.glob("epoch_*.png"):
            sample.unlink()


def _build_networks(config: GanConfig, device: torch.device) -> tuple[Generator, Discriminator]:
    network_config = config.network_config()
    generator = Generator(network_config)
    discriminator = Discriminator(network_config)
    weights_random = torch.Generator().manual_seed(derived_seed(config.seed, _SEED_WEIGHTS))
    init_dcgan_weights(generator, weights_random)
    init_dcgan_weights(discriminator, weights_random)
    generator.to(device)
    discriminator.to(device)
    if uses_channels_last(device):
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
    return generator, discriminator


class _GanTrainer:
    """Networks, optimisers, counters and run-folder writes of one ``train_gan`` call."""

    def __init__(self, config: GanConfig, device: torch.device, data: PreparedCifar100, reporter: TrainingReporter) -> None:
        self.config = config
        self.device = device
        self.reporter = reporter
        self.run_dir = Path(config.out)
        self.data = data
        self.images = data.split("train").images.to(device)  # (N, 3, 32, 32) uint8, the whole training split
        self.steps_per_epoch = self.images.shape[0] // config.batch_size

        self.generator, self.discriminator = _build_networks(config, device)
        adam_options = {"lr": config.learning_rate, "betas": tuple(config.adam_betas)}
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), **adam_options)
        self.discriminator_optimizer = torch.optim.Adam(self.discriminator.parameters(), **adam_options)
        self.step_random = torch.Generator(device).manual_seed(derived_seed(config.seed, _SEED_STEPS))
        fixed_noise_random = torch.Generator().manual_seed(derived_seed(config.seed, _SEED_FIXED_NOISE))
        self.fixed_noise = torch.randn(SAMPLE_COUNT, config.latent_dim, generator=fixed_noise_random).to(device)

        self.train_step = GanTrainingStep(
            self.generator,
            self.discriminator,
            self.generator_optimizer,
            self.discriminator_optimizer,
            self.step_random,
            precision=Precision(config.precision),
            label_smoothing=config.label_smoothing,
        )
        self.meter = IntervalMeter()
        self.collapse_monitor = CollapseMonitor(config.label_smoothing)

        # Counters saved in the training state.
        self.epochs_completed = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_sums = dict.fromkeys(STEP_VALUE_NAMES, 0.0)
        self.epoch_logged_steps = 0
        self.saved_step: int | None = None
        self.loss_rows: list[dict[str, Any]] = []
        self.last_report_time = time.perf_counter()
        self.last_report_step = 0

    # Checkpoints

    def _state_parts(self) -> dict[str, Any]:
        return {
            "modules": {"generator": self.generator, "discriminator": self.discriminator},
            "optimizers": {"generator": self.generator_optimizer, "discriminator": self.discriminator_optimizer},
            "generators": {"steps": self.step_random},
        }

    def load(self) -> None:
        state = load_training_state(self.run_dir / STATE_FILE, **self._state_parts())
        counters = state.counters
        try:
            self.epochs_completed = int(counters["epochs_completed"])
            self.step_in_epoch = int(counters["step_in_epoch"])
            self.global_step = int(counters["global_step"])
            self.epoch_sums = {name: float(counters["epoch_sums"][name]) for name in STEP_VALUE_NAMES}
            self.epoch_logged_steps = int(counters["epoch_logged_steps"])
        except (KeyError, TypeError, ValueError) as error:
            raise RunFolderError(
                f"invalid training counters in {self.run_dir / STATE_FILE} ({error!r}); pass --fresh to start over"
            ) from error
        reject_resume_on_other_split(self.run_dir, counters.get("data_split"), self.data)
        if counters.get("steps_per_epoch") != self.steps_per_epoch:
            raise RunFolderError(
                f"cannot resume {self.run_dir}: it has {counters.get('steps_per_epoch')} steps per epoch but the "
                f"training split now gives {self.steps_per_epoch}; pass --fresh to start over or choose another --out"
            )
        self.saved_step = self.global_step
        self.loss_rows = read_log_rows(self.run_dir / LOSSES_FILE, self.global_step)
        # Loading an optimiser state restores its saved learning rate; the current config wins.
        for optimizer in (self.generator_optimizer, self.discriminator_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = self.config.learning_rate

    def save(self, epoch_finished: bool) -> None:
        """Write a checkpoint; the training state goes last, so a kill never leaves it ahead of the rest."""
        if not all_parameters_finite(self.generator, self.discriminator):
            raise self._diverged("a network weight is NaN or infinite", self.global_step)
        lines = "".join(json.dumps(row) + "\n" for row in self.loss_rows)
        atomic_write_text(self.run_dir / LOSSES_FILE, lines)
        if epoch_finished:
            network_config = self.config.network_config().to_dict()
            save_weights(self.run_dir / GENERATOR_FILE, self.generator.state_dict(), network_config)
            save_weights(self.run_dir / DISCRIMINATOR_FILE, self.discriminator.state_dict(), network_config)
        counters = {
            "epochs_completed": self.epochs_completed,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_sums": self.epoch_sums,
            "epoch_logged_steps": self.epoch_logged_steps,
            "data_split": self.data.split_record(),
        }
        save_training_state(self.run_dir / STATE_FILE, config=self.config.to_dict(), counters=counters, **self._state_parts())
        self.saved_step = self.global_step

    def _diverged(self, what: str, first_step: int) -> TrainingDivergedError:
        """Build the error for a NaN or infinity seen in the steps from ``first_step`` to now."""
        if first_step == self.global_step:
            where = f"at step {self.global_step}"
        else:
            where = f"in steps {first_step}-{self.global_step}"
        if self.saved_step is None:
            kept = "no checkpoint was written yet, so pass --fresh with a lower --learning-rate"
        else:
            kept = (
                f"the checkpoint of step {self.saved_step} in {self.run_dir} is kept; re-run with a lower "
                "--learning-rate to resume from it"
            )
        return TrainingDivergedError(f"training diverged {where} (epoch {self.epochs_completed + 1}): {what}; {kept}")

    # Logging

    def flush(self) -> None:
        """Turn the device-side sums into one losses row, check them, and report them."""
        taken = self.meter.take()
        if taken is None:
            return
        means, steps = taken
        for name, value in means.items():
            if not math.isfinite(value):
                raise self._diverged(f"mean {name} is {value}", self.global_step - steps + 1)

        self.loss_rows.append({"step": self.global_step, "epoch": self.epochs_completed + 1, **means})
        for name, value in means.items():
            self.epoch_sums[name] += value * steps
        self.epoch_logged_steps += steps

        if self.collapse_monitor.update(means["loss_discriminator"], steps):
            self.reporter.warning(
                f"the discriminator loss stayed below {self.collapse_monitor.threshold:.3f} for "
                f"{self.collapse_monitor.low_steps} steps (now step {self.global_step}): the generator has "
                "probably collapsed; try --label-smoothing 0.1 or a lower --learning-rate"
            )

        now = time.perf_counter()
        images_per_second = (self.global_step - self.last_report_step) * self.config.batch_size / max(now - self.last_report_time, 1e-9)
        self.last_report_time = now
        self.last_report_step = self.global_step
        self.reporter.steps_finished(self.step_in_epoch, {**means, "images_per_second": images_per_second})

    # Training

    @torch.no_grad()
    def write_samples(self) -> Path:
        # Eval mode uses the running batch-norm statistics, so drawing samples leaves the training state untouched.
        self.generator.eval()
        try:
            samples = self.generator(self.fixed_noise)  # (64, 3, 32, 32)
        finally:
            self.generator.train()
        path = self.run_dir / SAMPLES_FOLDER / f"epoch_{self.epochs_completed:03d}.png"
        save_sample_grid(path, samples)
        return path

    def write_loss_curve(self) -> None:
        steps = [row["step"] for row in self.loss_rows]
        losses = {name: [row[name] for row in self.loss_rows] for name in ("loss_discriminator", "loss_generator")}
        save_loss_curve(self.run_dir / LOSS_CURVE_FILE, steps, losses, title="DCGAN losses")

    def run_epoch(self, epoch_index: int) -> dict[str, float]:
        config = self.config
        permutation = epoch_permutation(config.seed, _SEED_PERMUTATION, epoch_index, self.images.shape[0]).to(self.device)
        self.reporter.epoch_started(epoch_index + 1, config.epochs, self.steps_per_epoch, self.step_in_epoch)
        epoch_start_time = time.perf_counter()
        epoch_start_step = self.global_step
        self.last_report_time = epoch_start_time
        self.last_report_step = self.global_step

        while self.step_in_epoch < self.steps_per_epoch:
            start = self.step_in_epoch * config.batch_size
            batch = self.images[permutation[start : start + config.batch_size]]  # (B, 3, 32, 32) uint8
            self.meter.add(self.train_step(batch))
            self.step_in_epoch += 1
            self.global_step += 1

            if self.global_step % config.log_every == 0:
                self.flush()
            epoch_ends = self.step_in_epoch == self.steps_per_epoch
            if config.save_every and self.global_step % config.save_every == 0 and not epoch_ends:
                self.flush()
                self.save(epoch_finished=False)

        self.flush()
        summary = {name: self.epoch_sums[name] / max(self.epoch_logged_steps, 1) for name in STEP_VALUE_NAMES}
        self.epochs_completed += 1
        self.step_in_epoch = 0
        self.epoch_sums = dict.fromkeys(STEP_VALUE_NAMES, 0.0)
        self.epoch_logged_steps = 0
        self.write_samples()
        self.write_loss_curve()
        self.save(epoch_finished=True)

        # The epoch's speed includes its checkpoint and plots, so it shows the command's real cost.
        seconds = time.perf_counter() - epoch_start_time
        summary["images_per_second"] = (self.global_step - epoch_start_step) * config.batch_size / max(seconds, 1e-9)
        summary["seconds"] = seconds
        self.reporter.epoch_finished(epoch_index + 1, summary)
        return summary


def train_gan(config: GanConfig, *, reporter: TrainingReporter | None = None, fresh: bool = False) -> GanResult:
    """Train or resume a DCGAN run in ``config.out`` until ``config.epochs`` epochs are finished.

    Every check (config, data, run folder) runs before the first file is written. When the run
    folder has a training state and ``fresh`` is False, training resumes from it. A finished
    run continues when ``config.epochs`` is larger than the number of epochs it finished.

    Args:
        config: the run's options.
        reporter: receives progress events; the default reports nothing.
        fresh: delete the run folder's earlier files and start over.

    Raises:
        DataError: the prepared data folder is missing, incomplete or too small for one batch.
        RunFolderError: the run folder was made with an incompatible config or is incomplete.
        TrainingDivergedError: a loss or weight became NaN or infinite; the last good
            checkpoint stays in the run folder.
        HybridcapError: the config is invalid or the run folder cannot be written.
    """
    reporter = reporter or TrainingReporter()
    validate_config(config)
    data_root = Path(config.data_root) if config.data_root is not None else default_data_root()
    config = dataclasses.replace(config, data_root=str(data_root.expanduser().resolve()))
    run_dir = Path(config.out)
    device = resolve_device(config.device)

    reject_other_run_folder(run_dir, "GAN run")
    remove_stale_temporary_files(run_dir, RUN_FILES)
    saved_config = None if fresh else saved_config_to_resume(run_dir, STATE_FILE, CONFIG_FILE, config.to_dict(), RESUME_KEYS)
    data = load_prepared(config.data_root)
    images = data.split("train").images  # (N, 3, 32, 32) uint8
    if images.shape[0] < config.batch_size:
        raise DataError(
            f"the training split in {config.data_root} has {images.shape[0]} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )

    trainer = _GanTrainer(config, device, data, reporter)
    if saved_config is not None:
        trainer.load()
        if trainer.epochs_completed < config.epochs:
            reporter.info(
                f"resuming {run_dir} at epoch {trainer.epochs_completed + 1}, step {trainer.step_in_epoch} of "
                f"{trainer.steps_per_epoch} (global step {trainer.global_step})"
            )
        for key in ADJUSTABLE_KEYS:
            if saved_config.get(key) != getattr(config, key):
                reporter.info(f"{key} changes from {saved_config.get(key)} to {getattr(config, key)} on resume")
    else:
        if fresh:
            _remove_run_files(run_dir)
        reporter.info(
            f"training a new DCGAN in {run_dir} on {device.type} ({config.precision}): {images.shape[0]} images, "
            f"{trainer.steps_per_epoch} steps per epoch"
        )
    # A finished run asked for fewer epochs keeps them, and its config records how many it has.
    atomic_write_json(run_dir / CONFIG_FILE, {**config.to_dict(), "epochs": max(config.epochs, trainer.epochs_completed)})

    result = GanResult(run_dir=run_dir, epochs_completed=trainer.epochs_completed, global_step=trainer.global_step, resumed_from_step=trainer.saved_step)
    if trainer.epochs_completed >= config.epochs:
        reporter.info(f"{run_dir} has already finished {trainer.epochs_completed} epochs; pass --epochs above that to train further")
    for epoch_index in range(trainer.epochs_completed, config.epochs):
        result.epoch_summaries.append(trainer.run_epoch(epoch_index))

    result.epochs_completed = trainer.epochs_completed
    result.global_step = trainer.global_step
    if trainer.epochs_completed > 0:
        result.sample_grid = run_dir / SAMPLES_FOLDER / f"epoch_{trainer.epochs_completed:03d}.png"
    return result


def load_discriminator(run_dir: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """Load the trained discriminator of a GAN run folder, in eval mode.

    Args:
        run_dir: folder written by ``train_gan``.
        device: device to put the network on.

    Raises:
        RunFolderError: the folder or its discriminator weights are missing or invalid.
    """
    run_dir = Path(run_dir)
    path = run_dir / DISCRIMINATOR_FILE
    if not path.is_file():
        wrong_folder = wrong_folder_message(run_dir, "GAN run")
        if wrong_folder is not None:
            raise RunFolderError(wrong_folder)
        raise RunFolderError(
            f"no trained discriminator in {run_dir} ({DISCRIMINATOR_FILE} not found); "
            f"run `hybridcap train-gan --out {run_dir}` until at least one epoch finishes"
        )
    tensors, config_values = load_weights(path)
    try:
        network_config = DcganConfig.from_dict(config_values)
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"invalid network config in {path}: {error}") from error
    discriminator = Discriminator(network_config)
    mismatch = state_dict_mismatch(discriminator, tensors)
    if mismatch is not None:
        raise RunFolderError(f"{path} does not match its own config ({mismatch}); it is damaged or was not written by hybridcap")
    discriminator.load_state_dict(tensors, strict=True)
    return discriminator.to(device).eval()
