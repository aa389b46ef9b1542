"""Tiny GAN and captioner runs trained on generated data, for the eval and caption command tests."""

from __future__ import annotations

from pathlib import Path


def train_tiny_captioner(prepared_root: Path, folder: Path, epochs: int = 2) -> Path:
    """Train a very small DCGAN and captioner on ``prepared_root`` and return the captioner run folder.

    The contrastive loss is off, so no CLIP text tower is built. The captioner is too small to be
    good, and the eval and caption tests do not need it to be.
    """
    from hybridcap.training.captioner import CaptionerConfig, train_captioner
    from hybridcap.training.gan import GanConfig, train_gan

    gan_run = folder / "gan"
    train_gan(GanConfig(data_root=str(prepared_root), out=str(gan_run), epochs=1, batch_size=32, width=8, latent_dim=16, save_every=0, device="cpu"))
    captioner_run = folder / "captioner"
    config = CaptionerConfig(
        data_root=str(prepared_root),
        gan_run=str(gan_run),
        out=str(captioner_run),
        epochs=epochs,
        batch_size=32,
        contrastive_weight=0.0,
        head_hidden_dim=32,
        word_embedding_dim=16,
        decoder_hidden_dim=32,
        save_every=0,
        device="cpu",
    )
    train_captioner(config)
    return captioner_run
