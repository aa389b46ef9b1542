"""Split the official training set into training and validation images per fine class."""

from __future__ import annotations

import numpy as np

from hybridcap.errors import DataError


def split_per_class(fine_labels: np.ndarray, class_names: list[str], val_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``val_per_class`` validation images from every fine class.

    The same labels, ``val_per_class`` and ``seed`` always give the same split. Both index
    arrays are sorted, so the images keep the official order within each split.

    Args:
        fine_labels: (N,) fine label of each official training image.
        class_names: fine class names, used in error messages.
        val_per_class: validation images per class; each class keeps at least one training image.
        seed: seed of the numpy random generator that picks the validation images.

    Returns:
        ``(train_indices, val_indices)``, int64 positions in ``fine_labels``.

    Raises:
        DataError: when a class has no more than ``val_per_class`` images.
    """
    generator = np.random.default_rng(seed)
    val_parts: list[np.ndarray] = []
    for label, name in enumerate(class_names):
        class_indices = np.flatnonzero(fine_labels == label)
        if len(class_indices) <= val_per_class:
            raise DataError(
                f"class '{name}' has {len(class_indices)} training images, too few to hold out {val_per_class} "
                f"for validation and keep one for training; use a smaller --val-per-class (in hybridcap run: --set data.val_per_class=N)"
            )
        val_parts.append(generator.choice(class_indices, size=val_per_class, replace=False))

    val_indices = np.sort(np.concatenate(val_parts)).astype(np.int64) if val_parts else np.zeros(0, dtype=np.int64)
    is_val = np.zeros(len(fine_labels), dtype=bool)
    is_val[val_indices] = True
    train_indices = np.flatnonzero(~is_val).astype(np.int64)
    return train_indices, val_indices
