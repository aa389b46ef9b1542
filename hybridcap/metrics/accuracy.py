"""Class and superclass accuracy of generated captions, read from the class names they contain.

A caption predicts a fine class when it names exactly one CIFAR-100 fine class as whole tokens
(``caption_names_class``). A name that only occurs inside a longer matched name does not count
separately. A caption that names no class, or two or more, predicts nothing and counts as wrong
for both accuracies, so a caption cannot score by listing many classes. Superclass accuracy
counts a caption as right when its predicted fine class belongs to the image's superclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybridcap.datasets import caption_names_class, tokenize
from hybridcap.datasets.captions import readable_class_name


@dataclass
class ClassAccuracy:
    """Accuracy over the images of one fine class.

    Attributes:
        fine_label: the class index.
        images: number of images of this class in the evaluated set.
        class_correct: images whose caption names this class and no other.
        superclass_correct: images whose caption names one class of this class's superclass.
    """

    fine_label: int
    images: int
    class_correct: int
    superclass_correct: int

    @property
    def class_accuracy(self) -> float:
        return self.class_correct / self.images if self.images else 0.0

    @property
    def superclass_accuracy(self) -> float:
        return self.superclass_correct / self.images if self.images else 0.0


@dataclass
class AccuracyReport:
    """Accuracies of one set of captions.

    Attributes:
        class_accuracy: fraction of images whose caption predicts the right fine class.
        superclass_accuracy: fraction whose predicted fine class is in the right superclass.
        predictions: predicted fine class per image, None where the caption names no single class.
        per_class: one entry per fine class, in label order (classes without images have 0 images).
    """

    class_accuracy: float
    superclass_accuracy: float
    predictions: list[int | None]
    per_class: list[ClassAccuracy]


class ClassNameMatcher:
    """Lookup of the fine class a caption names, cached per distinct caption."""

    def __init__(self, fine_names: Sequence[str]) -> None:
        self.fine_names = list(fine_names)
        self._name_tokens = [tokenize(readable_class_name(name)) for name in self.fine_names]
        self._cache: dict[str, int | None] = {}

    def predict(self, caption: str) -> int | None:
        """Return the only fine class ``caption`` names, or None when it names none or several."""
        if caption not in self._cache:
            self._cache[caption] = self._predict(caption)
        return self._cache[caption]

    def _predict(self, caption: str) -> int | None:
        named = [label for label, name in enumerate(self.fine_names) if caption_names_class(caption, name)]
        # "pickup truck" would also match a class called "truck"; keep only the longest names.
        named = [label for label in named if not any(other != label and _contains(self._name_tokens[other], self._name_tokens[label]) for other in named)]
        return named[0] if len(named) == 1 else None


def _contains(longer: list[str], shorter: list[str]) -> bool:
    if len(shorter) >= len(longer):
        return False
    return any(longer[start : start + len(shorter)] == shorter for start in range(len(longer) - len(shorter) + 1))


def caption_accuracy(
    captions: Sequence[str],
    fine_labels: Sequence[int],
    fine_names: Sequence[str],
    fine_to_coarse: Sequence[int],
    matcher: ClassNameMatcher | None = None,
) -> AccuracyReport:
    """Return class and superclass accuracy of one caption per image.

    Args:
        captions: the generated caption of each image.
        fine_labels: the true fine class of each image.
        fine_names: readable or stored fine class names, in label order.
        fine_to_coarse: superclass index of each fine class.
        matcher: a ``ClassNameMatcher`` to reuse its cache across calls.
    """
    if len(captions) != len(fine_labels):
        raise ValueError(f"{len(captions)} captions but {len(fine_labels)} labels")
    matcher = matcher or ClassNameMatcher(fine_names)
    per_class = [ClassAccuracy(fine_label=label, images=0, class_correct=0, superclass_correct=0) for label in range(len(fine_names))]
    predictions: list[int | None] = []
    for caption, label in zip(captions, fine_labels):
        label = int(label)
        predicted = matcher.predict(caption)
        predictions.append(predicted)
        entry = per_class[label]
        entry.images += 1
        if predicted is not None:
            entry.class_correct += int(predicted == label)
            entry.superclass_correct += int(fine_to_coarse[predicted] == fine_to_coarse[label])
    total = len(captions)
    class_correct = sum(entry.class_correct for entry in per_class)
    superclass_correct = sum(entry.superclass_correct for entry in per_class)
    return AccuracyReport(
        class_accuracy=class_correct / total if total else 0.0,
        superclass_accuracy=superclass_correct / total if total else 0.0,
        predictions=predictions,
        per_class=per_class,
    )
