"""A PNG gallery of images with their generated captions, correct ones set apart from wrong ones."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import torch

from hybridcap.io import atomic_path

CORRECT_COLOUR = "#1a7f37"
WRONG_COLOUR = "#cf222e"


def write_caption_gallery(
    path: str | os.PathLike[str],
    images: torch.Tensor,
    captions: Sequence[str],
    correct: Sequence[bool],
    *,
    columns: int = 6,
    title: str = "",
) -> None:
    """Draw each image with its caption below it and write the grid to ``path`` as a PNG.

    Correct captions are green with a check mark, wrong ones red with a cross, so the two
    stay apart without colour vision too.

    Args:
        path: output PNG, written atomically.
        images: uint8 tensor (N, 3, H, W).
        captions: one generated caption per image.
        correct: whether each caption names the image's class.
        columns: images per row.
        title: figure title, e.g. the split and the share of correct captions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not (len(images) == len(captions) == len(correct)):
        raise ValueError(f"got {len(images)} images, {len(captions)} captions and {len(correct)} correctness flags")
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 2.1, rows * 2.5), squeeze=False)
    for position, axis in enumerate(axes.flat):
        axis.axis("off")
        if position >= len(images):
            continue
        # (3, H, W) uint8 -> (H, W, 3) for imshow; nearest keeps the 32x32 pixels honest.
        axis.imshow(images[position].permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
        mark = "\u2713" if correct[position] else "\u2717"
        text = "\n".join(textwrap.wrap(f"{mark} {captions[position]}", width=24)[:3])
        axis.set_title(text, fontsize=8, color=CORRECT_COLOUR if correct[position] else WRONG_COLOUR)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
