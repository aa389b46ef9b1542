"""Class and superclass accuracy read from the class names in captions."""

from __future__ import annotations

import pytest

from hybridcap.datasets.captions import build_captions
from hybridcap.metrics.accuracy import ClassNameMatcher, caption_accuracy

FINE_NAMES = ["apple", "aquarium_fish", "maple_tree", "oak_tree", "man", "woman", "pickup_truck", "truck"]
COARSE_NAMES = ["fruit_and_vegetables", "fish", "trees", "people", "vehicles_1"]
FINE_TO_COARSE = [0, 1, 2, 2, 3, 3, 4, 4]


def test_matcher_predicts_single_named_class():
    matcher = ClassNameMatcher(FINE_NAMES)
    assert matcher.predict("a photo of an aquarium fish") == 1
    assert matcher.predict("A blurry photo of a Maple Tree.") == 2


def test_matcher_whole_words_only():
    matcher = ClassNameMatcher(FINE_NAMES)
    assert matcher.predict("a photo of a woman") == 5
    assert matcher.predict("a photo of applesauce") is None


def test_matcher_prefers_longer_name():
    matcher = ClassNameMatcher(FINE_NAMES)
    assert matcher.predict("a photo of a pickup truck") == 6
    assert matcher.predict("a photo of a truck") == 7


def test_matcher_two_classes_is_no_prediction():
    matcher = ClassNameMatcher(FINE_NAMES)
    assert matcher.predict("a man next to an apple") is None
    assert matcher.predict("a photo of something") is None


def test_caption_accuracy_counts():
    captions = [
        "a photo of an apple",  # apple: right
        "a photo of an oak tree",  # maple tree: wrong class, right superclass
        "a photo of a woman",  # man: wrong class, right superclass
        "a man and an apple",  # man: names two classes, wrong for both
        "a photo of a truck",  # pickup truck: wrong class, right superclass
    ]
    labels = [0, 2, 4, 4, 6]
    report = caption_accuracy(captions, labels, FINE_NAMES, FINE_TO_COARSE)
    assert report.class_accuracy == pytest.approx(1 / 5)
    assert report.superclass_accuracy == pytest.approx(4 / 5)
    assert report.predictions == [0, 3, 5, None, 7]

    man = report.per_class[4]
    assert (man.images, man.class_correct, man.superclass_correct) == (2, 0, 1)
    assert man.superclass_accuracy == pytest.approx(0.5)
    assert report.per_class[1].images == 0
    assert report.per_class[1].class_accuracy == 0.0


def test_caption_accuracy_template_references():
    # Every generated reference caption, including the ones with a superclass phrase, must
    # predict its own class; otherwise the ceiling's accuracy would be below 100%.
    captions = build_captions(FINE_NAMES, COARSE_NAMES, FINE_TO_COARSE)
    flat = [caption for class_captions in captions for caption in class_captions]
    labels = [label for label, class_captions in enumerate(captions) for _ in class_captions]
    report = caption_accuracy(flat, labels, FINE_NAMES, FINE_TO_COARSE)
    assert report.class_accuracy == 1.0


def test_caption_accuracy_length_mismatch():
    with pytest.raises(ValueError, match="2 captions but 1 labels"):
        caption_accuracy(["a", "b"], [0], FINE_NAMES, FINE_TO_COARSE)


def test_caption_accuracy_all_cifar100_references():
    from cifar_factory import COARSE_LABEL_NAMES, FINE_LABEL_NAMES, FINE_TO_COARSE as CIFAR_FINE_TO_COARSE

    captions = build_captions(FINE_LABEL_NAMES, COARSE_LABEL_NAMES, CIFAR_FINE_TO_COARSE)
    flat = [caption for class_captions in captions for caption in class_captions]
    labels = [label for label, class_captions in enumerate(captions) for _ in class_captions]
    report = caption_accuracy(flat, labels, FINE_LABEL_NAMES, CIFAR_FINE_TO_COARSE)
    wrong = [caption for caption, predicted, label in zip(flat, report.predictions, labels) if predicted != label]
    assert wrong == []
