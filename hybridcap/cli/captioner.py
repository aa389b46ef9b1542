"""The ``hybridcap train-captioner`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hybridcap.cli.console import console, handle_errors, warn
from hybridcap.device import DeviceChoice, Precision
from hybridcap.errors import HybridcapError
from hybridcap.training.encoder_mode import EncoderMode

# These defaults repeat CaptionerConfig's, because importing it here would import torch on every
# `hybridcap --help`. A test checks that the two stay equal.


@handle_errors
def train_captioner_command(
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="Folder written by `hybridcap data`. Default: the data cache, ~/.cache/hybridcap/cifar100."),
    ] = None,
    gan_run: Annotated[Path, typer.Option("--gan", help="GAN run folder written by `hybridcap train-gan`; its discriminator becomes the image encoder.")] = Path("runs/gan"),
    out: Annotated[Path, typer.Option("--out", help="Run folder for checkpoints, caption embeddings, history and plots.")] = Path("runs/captioner"),
    encoder: Annotated[EncoderMode, typer.Option(help="Fine-tune the discriminator trunk (train) or keep it fixed (freeze).")] = EncoderMode.train,
    epochs: Annotated[int, typer.Option(min=1, help="Total epochs, counting those already done in --out; the cosine learning-rate schedule spans them.")] = 30,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per training step.")] = 128,
    learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate of the projection head and decoder.")] = 2e-3,
    encoder_learning_rate: Annotated[float, typer.Option(min=0.0, help="Peak AdamW learning rate of the discriminator trunk with --encoder train.")] = 1e-3,
    contrastive_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the contrastive loss added to the cross-entropy; 0 turns it off.")] = 1.0,
    decoder_layers: Annotated[int, typer.Option(min=1, help="Stacked LSTM layers of the decoder.")] = 1,
    decoder_hidden_dim: Annotated[int, typer.Option(min=1, help="LSTM hidden size of the decoder.")] = 512,
    clip_pretrained: Annotated[
        str,
        typer.Option(help="open_clip pretrained tag of the ViT-B-16 text encoder, or `none` for random weights (testing only)."),
    ] = "openai",
    clip_weights: Annotated[
        Path | None,
        typer.Option("--clip-weights", help="Local open_clip ViT-B-16 weights file (e.g. open_clip_model.safetensors); no download is attempted."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the head and decoder weights, batch order, caption choice and augmentation.")] = 0,
    save_every: Annotated[int, typer.Option(min=0, help="Also save the training state every this many steps; 0 saves only after each epoch.")] = 200,
    device: Annotated[DeviceChoice, typer.Option(help="Training device; auto picks CUDA, then MPS, then the CPU.")] = DeviceChoice.auto,
    precision: Annotated[Precision, typer.Option(help="fp32, or bf16 autocast (faster where the hardware supports bf16).")] = Precision.fp32,
    fresh: Annotated[bool, typer.Option("--fresh", help="Delete the earlier run in --out and start over instead of resuming.")] = False,
) -> None:
    """Train the captioner, keeping the checkpoint with the best validation class accuracy.

    The image encoder is the discriminator of --gan without its last layer,
    followed by a projection head into CLIP's text-embedding space. A frozen
    CLIP ViT-B-16 text encoder embeds the reference captions once, and an LSTM
    decoder learns to write them. Running the same command again resumes from
    the last checkpoint in --out.
    """
    from hybridcap.cli.reporting import RichReporter
    from hybridcap.training.captioner import CaptionerConfig, train_captioner

    if clip_weights is not None and clip_pretrained == "none":
        raise HybridcapError("--clip-weights and --clip-pretrained none contradict each other; pass only one of them")
    if clip_pretrained == "none" and clip_weights is None and contrastive_weight > 0:
        warn(
            "--clip-pretrained none: the text encoder has random weights, so the contrastive loss aligns images with "
            "caption embeddings that carry no meaning; use it only for tests or when no CLIP weights are available"
        )

    config = CaptionerConfig(
        data_root=str(data_root) if data_root is not None else None,
        gan_run=str(gan_run),
        out=str(out),
        encoder=encoder.value,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        encoder_learning_rate=encoder_learning_rate,
        contrastive_weight=contrastive_weight,
        decoder_layers=decoder_layers,
        decoder_hidden_dim=decoder_hidden_dim,
        clip_pretrained=clip_pretrained,
        clip_weights=str(clip_weights) if clip_weights is not None else None,
        seed=seed,
        save_every=save_every,
        device=device.value,
        precision=precision.value,
    )
    with RichReporter() as reporter:
        result = train_captioner(config, reporter=reporter, fresh=fresh)

    console.print(f"{result.epochs_completed} epochs ({result.global_step} steps) done; checkpoints in {result.run_dir}", markup=False, highlight=False, soft_wrap=True)
    if result.best_epoch is not None and result.best_val_class_accuracy is not None:
        console.print(
            f"best checkpoint: epoch {result.best_epoch}, validation class accuracy {100 * result.best_val_class_accuracy:.2f}%",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
