"""PNG figures that trainers write into their run folders, each written atomically.

torchvision and matplotlib are imported inside the functions, so importing a trainer stays fast.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch

from hybridcap.io import atomic_path


def save_sample_grid(path: str | os.PathLike[str], images: torch.Tensor, images_per_row: int = 8) -> None:
    """Write images as one PNG grid.

    Args:
        path: the PNG file to write.
        images: generated images ``(B, 3, H, W)`` in [-1, 1], on any device.
        images_per_row: grid columns.
    """
    from torchvision.utils import save_image

    with atomic_path(path) as temporary:
        save_image(images.detach().float().cpu(), temporary, nrow=images_per_row, normalize=True, value_range=(-1.0, 1.0), format="png")


def save_loss_curve(
    path: str | os.PathLike[str],
    steps: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str | None = None,
    x_label: str = "step",
) -> None:
    """Write a line plot of named loss series against a shared x axis as a PNG.

    Args:
        path: the PNG file to write.
        steps: x value of each point, e.g. the global step or the epoch.
        series: one line per name, each as long as ``steps``.
        title: figure title.
        x_label: label of the x axis.
    """
    # The Agg canvas draws without a display and without pyplot's global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, values in series.items():
        axes.plot(steps, values, label=name, linewidth=1.0)
    axes.set_xlabel(x_label)
    axes.set_ylabel("loss")
    if title:
        axes.set_title(title)
    if series:
        axes.legend()
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
