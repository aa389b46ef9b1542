"""Measure DCGAN training speed through train_gan's own epoch code beside a bare training loop.

The trainer side runs the epoch loop that ``train_gan`` runs. It slices batches from an
in-memory uint8 tensor by a permutation, normalises and flips them on the device, and sums the
losses on the device, reading them every ``log_every`` steps. Each epoch ends with the sample
grid, the loss curve and a checkpoint. The bare side runs the same networks (same layout and autocast) on a random float
tensor with plain optimiser steps and nothing else. Both sides alternate in short rounds in one
process, so they share whatever load the machine has.

Usage, with hybridcap importable (installed, or PYTHONPATH=. from the repository root):
    python benchmarks/gan_speed.py [--steps 10] [--rounds 8] [--width 64] [--batch-size 128] [--threads N]
On a machine shared with other jobs, ``--threads 1`` gives the steadiest overhead figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from torch.nn import functional

from hybridcap.device import Precision, autocast
from hybridcap.networks.dcgan import DcganConfig, Discriminator, Generator
from hybridcap.training.gan import GanConfig, _GanTrainer
from hybridcap.training.gan_step import uses_channels_last
from hybridcap.training.reporting import TrainingReporter

FULL_EPOCH_IMAGES = 45_000


def clock() -> tuple[float, float]:
    """Return the wall-clock time and this process's CPU time, in seconds."""
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple[float, float], end: tuple[float, float]) -> tuple[float, float]:
    return end[0] - start[0], end[1] - start[1]


class TimingReporter(TrainingReporter):
    """Record when an epoch starts, when its last steps are reported and when it ends."""

    def __init__(self) -> None:
        self.started = (0.0, 0.0)
        self.last_steps_time = (0.0, 0.0)
        self.last_steps = 0
        self.finished = (0.0, 0.0)

    def epoch_started(self, epoch: int, total_epochs: int, total_steps: int, completed_steps: int) -> None:
        self.started = clock()

    def steps_finished(self, completed_steps: int, values: Mapping[str, float]) -> None:
        self.last_steps_time = clock()
        self.last_steps = completed_steps

    def epoch_finished(self, epoch: int, summary: Mapping[str, float]) -> None:
        self.finished = clock()


def bare_loop(config: DcganConfig, precision: Precision, batch_size: int, device: torch.device):
    """Return a function that runs ``steps`` plain GAN steps and returns their wall-clock and CPU seconds."""
    generator = Generator(config).to(device)
    discriminator = Discriminator(config).to(device)
    real = torch.rand(batch_size, 3, 32, 32, device=device) * 2 - 1
    if uses_channels_last(device):
        generator.to(memory_format=torch.channels_last)
        discriminator.to(memory_format=torch.channels_last)
        real = real.contiguous(memory_format=torch.channels_last)
    generator_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ones = torch.ones(batch_size, device=device)
    zeros = torch.zeros(batch_size, device=device)

    def run(steps: int) -> tuple[float, float]:
        start = clock()
        for _ in range(steps):
            noise = torch.randn(batch_size, config.latent_dim, device=device)
            with autocast(device, precision):
                fake = generator(noise)
                loss_discriminator = functional.binary_cross_entropy_with_logits(
                    discriminator(real).float(), ones
                ) + functional.binary_cross_entropy_with_logits(discriminator(fake.detach()).float(), zeros)
            discriminator_optimizer.zero_grad(set_to_none=True)
            loss_discriminator.backward()
            discriminator_optimizer.step()
            with autocast(device, precision):
                loss_generator = functional.binary_cross_entropy_with_logits(discriminator(fake).float(), ones)
            generator_optimizer.zero_grad(set_to_none=True)
            loss_generator.backward()
            generator_optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return elapsed(start, clock())

    return run


def measure(precision: Precision, arguments: argparse.Namespace, device: torch.device, run_dir: Path) -> None:
    config = GanConfig(
        data_root=str(run_dir / "unused"),
        out=str(run_dir / precision.value),
        epochs=1_000,
        batch_size=arguments.batch_size,
        width=arguments.width,
        precision=precision.value,
        device=device.type,
    )
    images = torch.randint(0, 256, (arguments.steps * arguments.batch_size, 3, 32, 32), dtype=torch.uint8)
    reporter = TimingReporter()
    trainer = _GanTrainer(config, device, images, reporter)
    bare = bare_loop(config.network_config(), precision, arguments.batch_size, device)

    # The first steps run slower (kernel setup, memory allocation), so they are not timed.
    bare(3)
    trainer.run_epoch(trainer.epochs_completed)

    # Short alternating rounds expose both sides to the same background load. The overhead is
    # the median of the ratios of neighbouring rounds, in wall-clock time and in CPU time. CPU
    # time is the steadier figure with --threads 1. With more threads, OpenMP workers that wait
    # for each other spin, and that spinning counts as CPU time too.
    trainer_rounds, bare_rounds, epoch_end_seconds = [], [], []
    for _ in range(arguments.rounds):
        trainer.run_epoch(trainer.epochs_completed)
        wall, cpu = elapsed(reporter.started, reporter.last_steps_time)
        trainer_rounds.append((wall / reporter.last_steps, cpu / reporter.last_steps))
        epoch_end_seconds.append(elapsed(reporter.last_steps_time, reporter.finished)[0])
        wall, cpu = bare(arguments.steps)
        bare_rounds.append((wall / arguments.steps, cpu / arguments.steps))

    checkpoint_seconds = []
    for _ in range(2):
        start = time.perf_counter()
        trainer.save(epoch_finished=False)
        checkpoint_seconds.append(time.perf_counter() - start)

    trainer_step = statistics.median(wall for wall, _ in trainer_rounds)
    bare_step = statistics.median(wall for wall, _ in bare_rounds)
    wall_ratios = [trained[0] / plain[0] for trained, plain in zip(trainer_rounds, bare_rounds)]
    cpu_ratios = [trained[1] / plain[1] for trained, plain in zip(trainer_rounds, bare_rounds)]
    epoch_end = statistics.median(epoch_end_seconds)
    checkpoint = min(checkpoint_seconds)
    batch = arguments.batch_size
    name = precision.value
    print(f"{name}: bare loop        {batch / bare_step:8.1f} images/s  ({bare_step * 1000:.1f} ms/step, median of {arguments.rounds} rounds)")
    print(f"{name}: train_gan steps  {batch / trainer_step:8.1f} images/s  ({trainer_step * 1000:.1f} ms/step)")
    print(f"{name}: step overhead    wall clock {_percent_summary(wall_ratios)}; CPU time {_percent_summary(cpu_ratios)}")
    print(f"{name}: epoch end (samples, loss curve, checkpoint) {epoch_end:.2f} s; mid-epoch checkpoint {checkpoint:.2f} s")

    # A full epoch: every step, one mid-epoch checkpoint per save_every steps, and the epoch end.
    # The steps' overhead is taken from CPU time, the file writes from wall-clock time.
    steps_per_epoch = FULL_EPOCH_IMAGES // batch
    mid_epoch_checkpoints = (steps_per_epoch - 1) // config.save_every if config.save_every else 0
    bare_epoch = steps_per_epoch * bare_step
    trainer_epoch = bare_epoch * statistics.median(cpu_ratios) + mid_epoch_checkpoints * checkpoint + epoch_end
    print(
        f"{name}: estimated epoch of {FULL_EPOCH_IMAGES:,} images: train_gan {trainer_epoch:.1f} s, "
        f"bare loop {bare_epoch:.1f} s, overhead {100 * (trainer_epoch / bare_epoch - 1):+.1f}%"
    )


def _percent_summary(ratios: list[float]) -> str:
    """Format time ratios as the median overhead in percent and the range of all rounds."""
    median = 100 * (statistics.median(ratios) - 1)
    return f"{median:+.1f}% (rounds {100 * (min(ratios) - 1):+.0f}% to {100 * (max(ratios) - 1):+.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds per side")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=[precision.value for precision in Precision], action="append")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads; torch's default when omitted")
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)
    device = torch.device(arguments.device)
    precisions = [Precision(value) for value in arguments.precision or ["fp32", "bf16"]]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, width {arguments.width}, batch {arguments.batch_size}")
    with tempfile.TemporaryDirectory() as folder:
        for precision in precisions:
            measure(precision, arguments, device, Path(folder))
    print("Other processes running on the same machine slow these figures down, differently in every run.")


if __name__ == "__main__":
    main()
