"""The one mapping from stored uint8 pixels to the network input range."""

from __future__ import annotations

import torch


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels 0..255 to float32 values in [-1, 1], the range of the DCGAN generator's tanh.

    Use it for every network input, in training and in the ``caption`` command, so that images
    are scaled the same way everywhere. The result stays on the input's device.

    Raises:
        TypeError: when ``images`` is not a uint8 tensor, which would mean it was scaled already.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 pixels, got {images.dtype}")
    return images.float() / 127.5 - 1.0
