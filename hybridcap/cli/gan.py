"""The ``hybridcap train-gan`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybridcap.cli.console import console, handle_errors
from hybridcap.device import DeviceChoice, Precision

# These defaults repeat GanConfig's, because importing it here would import torch on every
# `hybridcap --help`. A test checks that the two stay equal.


@handle_errors
def train_gan_command(
    data_root: Annotated[
        Path | None,
        typer.Option(
            "--data-root",
            help="Folder written by `hybridcap data`; defaults to $XDG_CACHE_HOME/hybridcap/cifar100 or ~/.cache/hybridcap/cifar100.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Run folder for weights, training state, losses and samples.")] = Path("runs/gan"),
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs, counting those already done in --out.")] = 20,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per training step.")] = 128,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Adam learning rate of both networks.")] = 2e-4,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=0.99, help="Target for real images is 1 minus this value.")] = 0.0,
    width: Annotated[int, typer.Option(min=1, help="Channels of the 16x16 stage of both networks; the 8x8 and 4x4 stages use 2x and 4x.")] = 64,
    latent_dim: Annotated[int, typer.Option(min=1, help="Length of the generator's noise vector.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the weights, batch order, flips and noise.")] = 0,
    save_every: Annotated[int, typer.Option(min=0, help="Also checkpoint every this many steps; 0 checkpoints only after each epoch.")] = 200,
    device: Annotated[DeviceChoice, typer.Option(help="Training device; auto picks CUDA, then MPS, then the CPU.")] = DeviceChoice.auto,
    precision: Annotated[Precision, typer.Option(help="Numeric precision: fp32, or bf16 autocast.")] = Precision.fp32,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the earlier run in --out and start over instead of resuming.")] = False,
) -> None:
    """Train the DCGAN on the prepared CIFAR-100 training images.

    Running the same command again resumes from the last checkpoint in --out.
    """
    from hybridcap.cli.reporting import RichReporter
    from hybridcap.training.gan import GanConfig, train_gan

    config = GanConfig(
        data_root=str(data_root) if data_root is not None else None,
        out=str(out),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        label_smoothing=label_smoothing,
        width=width,
        latent_dim=latent_dim,
        seed=seed,
        save_every=save_every,
        device=device.value,
        precision=precision.value,
    )
    with RichReporter() as reporter:
        result = train_gan(config, reporter=reporter, fresh=fresh)

    console.print(
        f"{result.epochs_completed} epochs ({result.global_step} steps) done; weights in {result.run_dir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if result.sample_grid is not None:
        console.print(f"latest samples: {result.sample_grid}", markup=False, highlight=False, soft_wrap=True)
