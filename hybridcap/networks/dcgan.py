"""DCGAN generator and discriminator for 32x32 RGB images.

The discriminator is split into ``forward_features`` (every layer but the last) and
``forward_head`` (the final classification layer), so the captioner can reuse the trained
convolutional trunk as its image encoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

IMAGE_CHANNELS = 3
# Slope of LeakyReLU for negative inputs in the discriminator.
LEAKY_RELU_SLOPE = 0.2
INIT_STD = 0.02


@dataclass(frozen=True)
class DcganConfig:
    """Sizes that rebuild a generator and discriminator pair.

    Attributes:
        latent_dim: length of the generator's input noise vector.
        width: channels of the 16x16 stage. The 8x8 and 4x4 stages use 2x and 4x as many.
    """

    latent_dim: int = 100
    width: int = 64

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DcganConfig.{field.name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DcganConfig:
        """Build a config from ``to_dict`` output; raises ValueError on unknown keys or bad values."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DcganConfig keys: {', '.join(unknown)}")
        return cls(**values)


def init_dcgan_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """Initialise every convolution and batch norm inside ``module`` in place.

    Convolution weights are drawn from N(0, 0.02) and batch-norm scales from N(1, 0.02) with
    zero shifts, the usual DCGAN initialisation.

    Args:
        module: a network, or any module that contains convolutions and batch norms.
        generator: random generator to draw from; the global torch RNG when None.
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(layer.weight, 0.0, INIT_STD, generator=generator)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.normal_(layer.weight, 1.0, INIT_STD, generator=generator)
            nn.init.zeros_(layer.bias)


def _upsample_block(in_channels: int, out_channels: int) -> nn.Sequential:
    # Batch norm follows directly, so a convolution bias would be cancelled by its mean subtraction.
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _downsample_block(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(LEAKY_RELU_SLOPE, inplace=True))
    return nn.Sequential(*layers)


class Generator(nn.Module):
    """Map latent noise ``(B, latent_dim)`` to images ``(B, 3, 32, 32)`` in [-1, 1]."""

    def __init__(self, config: DcganConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.project = nn.Sequential(
            nn.ConvTranspose2d(config.latent_dim, 4 * width, kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(inplace=True),
        )
        self.upsample_8 = _upsample_block(4 * width, 2 * width)
        self.upsample_16 = _upsample_block(2 * width, width)
        # The DCGAN recipe leaves batch norm out of the generator's output layer.
        self.to_image = nn.ConvTranspose2d(width, IMAGE_CHANNELS, kernel_size=4, stride=2, padding=1, bias=False)
        init_dcgan_weights(self)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        # The noise vector is treated as a 1x1 image with latent_dim channels.
        x = noise.view(noise.shape[0], -1, 1, 1)  # (B, latent_dim, 1, 1)

        x = self.project(x)  # (B, 4w, 4, 4)
        x = self.upsample_8(x)  # (B, 2w, 8, 8)
        x = self.upsample_16(x)  # (B, w, 16, 16)
        x = self.to_image(x)  # (B, 3, 32, 32)
        return torch.tanh(x)


class Discriminator(nn.Module):
    """Score images ``(B, 3, 32, 32)`` in [-1, 1] with one real-versus-generated logit each."""

    def __init__(self, config: DcganConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        # The DCGAN recipe leaves batch norm out of the discriminator's input layer.
        self.downsample_16 = _downsample_block(IMAGE_CHANNELS, width, batch_norm=False)
        self.downsample_8 = _downsample_block(width, 2 * width, batch_norm=True)
        self.downsample_4 = _downsample_block(2 * width, 4 * width, batch_norm=True)
        # One 4x4 convolution covers the whole 4x4 feature map, so it acts as a linear classifier.
        self.head = nn.Conv2d(4 * width, 1, kernel_size=4, stride=1, padding=0, bias=False)
        init_dcgan_weights(self)

    @property
    def num_features(self) -> int:
        """Number of values per image in the flattened output of ``forward_features``."""
        return 4 * self.config.width * 4 * 4

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Return the trunk's feature map ``(B, 4*width, 4, 4)`` for images ``(B, 3, 32, 32)``."""
        x = self.downsample_16(images)  # (B, w, 16, 16)
        x = self.downsample_8(x)  # (B, 2w, 8, 8)
        x = self.downsample_4(x)  # (B, 4w, 4, 4)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Return one logit per image ``(B,)`` from features ``(B, 4*width, 4, 4)``."""
        logits = self.head(features)  # (B, 1, 1, 1)
        return logits.view(features.shape[0])  # (B,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))
