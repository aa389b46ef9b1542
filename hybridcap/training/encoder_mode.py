"""The choice between fine-tuning and freezing the captioner's image encoder.

It lives in its own module, free of torch, so the CLI can offer it as a choice without
slowing down ``hybridcap --help``.
"""

from __future__ import annotations

import enum


class EncoderMode(str, enum.Enum):
    """Whether the discriminator trunk is fine-tuned or kept as the GAN left it."""

    train = "train"
    freeze = "freeze"
