"""Reference captions as one device tensor, and the on-device image augmentation of a batch.

Every image of a class shares the class's reference captions. The captions are flattened into
one table so that a batch picks a caption per image with integer arithmetic, and that index is
also the row of the caption's cached CLIP text embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridcap.datasets import Vocabulary, tokenize


def caption_token_length(captions: list[list[str]]) -> int:
    """Return the encoded length that fits the longest caption: its tokens plus start and end."""
    return max(len(tokenize(caption)) for class_captions in captions for caption in class_captions) + 2


@dataclass
class CaptionTable:
    """All reference captions, flattened in class order.

    Attributes:
        texts: caption strings, class 0's first.
        token_ids: ``(N, T)`` encoded captions, start, end and padding included.
        class_offsets: ``(C,)`` index in ``texts`` of each class's first caption.
        class_counts: ``(C,)`` number of captions of each class.
    """

    texts: list[str]
    token_ids: torch.Tensor
    class_offsets: torch.Tensor
    class_counts: torch.Tensor

    @classmethod
    def build(cls, captions: list[list[str]], vocabulary: Vocabulary, max_length: int) -> CaptionTable:
        texts = [caption for class_captions in captions for caption in class_captions]
        counts = torch.tensor([len(class_captions) for class_captions in captions], dtype=torch.long)
        offsets = torch.cumsum(counts, dim=0) - counts
        token_ids = torch.tensor([vocabulary.encode(text, max_length) for text in texts], dtype=torch.long)
        return cls(texts=texts, token_ids=token_ids, class_offsets=offsets, class_counts=counts)

    def to(self, device: torch.device | str) -> CaptionTable:
        return CaptionTable(self.texts, self.token_ids.to(device), self.class_offsets.to(device), self.class_counts.to(device))

    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return one uniformly drawn caption index ``(B,)`` of each label's class."""
        uniform = torch.rand(labels.shape, generator=generator, device=labels.device)  # (B,)
        counts = self.class_counts[labels]
        choice = (uniform * counts).long().clamp(max=counts - 1)  # (B,)
        return self.class_offsets[labels] + choice

    def fixed(self, labels: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Return a caption index ``(B,)`` per label that depends only on the sample's position.

        Validation uses it so that every epoch scores the same image-caption pairs.
        """
        return self.class_offsets[labels] + positions % self.class_counts[labels]


def augment_images(images: torch.Tensor, generator: torch.Generator, max_shift: int) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2 and translate it by up to ``max_shift`` pixels.

    The translation repeats the edge pixels into the uncovered border, so no black frame appears.
    Both steps are one gather per axis, on the images' device, for any pixel dtype.

    Args:
        images: ``(B, C, H, W)`` batch.
        generator: source of the flips and shifts, on the images' device.
        max_shift: largest shift in pixels along each axis; 0 only flips.
    """
    batch_size, channels, height, width = images.shape
    device = images.device
    shifts = torch.randint(-max_shift, max_shift + 1, (batch_size, 2), generator=generator, device=device)  # (B, 2)
    flips = torch.rand(batch_size, generator=generator, device=device) < 0.5  # (B,)

    rows = torch.arange(height, device=device).expand(batch_size, height)  # (B, H)
    rows = (rows + shifts[:, :1]).clamp(0, height - 1)
    columns = torch.arange(width, device=device).expand(batch_size, width)  # (B, W)
    columns = torch.where(flips[:, None], width - 1 - columns, columns)
    columns = (columns + shifts[:, 1:]).clamp(0, width - 1)

    shape = (batch_size, channels, height, width)
    images = images.gather(2, rows[:, None, :, None].expand(shape))  # (B, C, H, W)
    return images.gather(3, columns[:, None, None, :].expand(shape))  # (B, C, H, W)
