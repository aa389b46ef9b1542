"""Helpers shared by the captioner tests: a tiny training config and a cache copier."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from hybridcap.training.captioner import CaptionerConfig


def tiny_config(data: Path, gan: Path, out: Path, **changes) -> CaptionerConfig:
    """Return a CaptionerConfig with tiny networks and one-thread-friendly sizes for fast tests."""
    config = CaptionerConfig(
        data_root=str(data),
        gan_run=str(gan),
        out=str(out),
        epochs=2,
        batch_size=10,
        learning_rate=1e-2,
        encoder_learning_rate=1e-2,
        weight_decay=0.0,
        label_smoothing=0.0,
        max_shift=0,
        clip_pretrained="none",
        head_hidden_dim=64,
        word_embedding_dim=32,
        decoder_hidden_dim=64,
        dropout=0.0,
        save_every=0,
        log_every=1,
        device="cpu",
    )
    return dataclasses.replace(config, **changes)


def with_cache(out: Path, cache: Path) -> Path:
    """Create ``out`` with a copy of the caption embedding cache and return it."""
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache, out / "text_embeddings.safetensors")
    return out
