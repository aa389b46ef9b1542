"""Reference captions, caption_names_class, tokenize and Vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
from cifar_factory import COARSE_LABEL_NAMES, FINE_LABEL_NAMES, FINE_TO_COARSE

from hybridcap.datasets import Vocabulary, caption_names_class, load_prepared, tokenize
from hybridcap.datasets.captions import SUPERCLASS_PHRASES, build_captions, indefinite_article, readable_superclass_name

CAPTIONS = build_captions(FINE_LABEL_NAMES, COARSE_LABEL_NAMES, FINE_TO_COARSE)


def test_build_captions_five_distinct_per_class() -> None:
    assert len(CAPTIONS) == 100
    for class_captions in CAPTIONS:
        assert len(set(class_captions)) >= 5
        assert len(set(class_captions)) == len(class_captions)


def test_build_captions_deterministic() -> None:
    assert build_captions(FINE_LABEL_NAMES, COARSE_LABEL_NAMES, FINE_TO_COARSE) == CAPTIONS


def test_build_captions_readable() -> None:
    for class_captions in CAPTIONS:
        for caption in class_captions:
            assert "_" not in caption
            assert "vehicles 1" not in caption
            assert "vehicles 2" not in caption
            assert len(tokenize(caption)) <= 12
            assert caption == caption.strip()
            assert "  " not in caption


def test_build_captions_articles() -> None:
    for class_captions in CAPTIONS:
        for caption in class_captions:
            words = caption.replace(",", "").split()
            for article, following in zip(words, words[1:]):
                if article == "a":
                    assert following[0] not in "aeiou", caption
                if article == "an":
                    assert following[0] in "aeiou", caption


@pytest.mark.parametrize(
    ("fine_name", "expected"),
    [
        ("apple", "a photo of an apple"),
        ("aquarium_fish", "a photo of an aquarium fish"),
        ("oak_tree", "a photo of an oak tree"),
        ("bus", "a photo of a bus"),
        ("sweet_pepper", "a photo of a sweet pepper"),
        ("cattle", "a photo of cattle"),
    ],
)
def test_build_captions_named_examples(fine_name: str, expected: str) -> None:
    assert expected in CAPTIONS[FINE_LABEL_NAMES.index(fine_name)]


def test_build_captions_superclass_phrases() -> None:
    bicycle = CAPTIONS[FINE_LABEL_NAMES.index("bicycle")]
    bridge = CAPTIONS[FINE_LABEL_NAMES.index("bridge")]

    assert "a picture of a bicycle, a kind of vehicle" in bicycle
    assert "a picture of a bridge, a large outdoor structure" in bridge


def test_superclass_phrases_cover_cifar100() -> None:
    assert sorted(SUPERCLASS_PHRASES) == sorted(COARSE_LABEL_NAMES)
    readable = [readable_superclass_name(name) for name in COARSE_LABEL_NAMES]
    assert len(set(readable)) == 20
    for singular, plural in SUPERCLASS_PHRASES.values():
        assert singular.split()[0] in ("a", "an")
        assert singular.split()[0] == indefinite_article(singular.split(maxsplit=1)[1])
        assert "_" not in plural


def test_readable_superclass_name_fallback() -> None:
    assert readable_superclass_name("boats_3") == "boats"


def test_indefinite_article_cases() -> None:
    assert indefinite_article("apple") == "an"
    assert indefinite_article("unicorn") == "a"
    assert indefinite_article("hour glass") == "an"
    assert indefinite_article("tree") == "a"


def test_caption_names_class_own_class_only() -> None:
    # Each caption names its own class and no other, so accuracy metrics can rely on it.
    for label, class_captions in enumerate(CAPTIONS):
        for caption in class_captions:
            named = [other for other, name in enumerate(FINE_LABEL_NAMES) if caption_names_class(caption, name)]
            assert named == [label], caption


def test_caption_names_class_whole_words() -> None:
    assert caption_names_class("a photo of an aquarium fish", "aquarium_fish")
    assert caption_names_class("A photo of an Aquarium Fish.", "aquarium fish")
    assert not caption_names_class("a photo of a seal", "sea")
    assert not caption_names_class("a photo of a woman", "man")
    assert not caption_names_class("a photo of an aquarium", "aquarium_fish")
    assert not caption_names_class("a photo of a fish", "")


def test_tokenize_like_ptb() -> None:
    assert tokenize("A picture of a Bus, a kind of vehicle.") == ["a", "picture", "of", "a", "bus", ",", "a", "kind", "of", "vehicle", "."]
    assert tokenize("a medium-sized mammal") == ["a", "medium-sized", "mammal"]
    assert tokenize("It's a dog's bone, don't") == ["it", "'s", "a", "dog", "'s", "bone", ",", "do", "n't"]
    assert tokenize("  ") == []


def test_vocabulary_specials_and_round_trip() -> None:
    vocabulary = Vocabulary.from_captions(caption for class_captions in CAPTIONS for caption in class_captions)

    assert vocabulary.tokens[:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id, vocabulary.unknown_id) == (0, 1, 2, 3)
    assert Vocabulary.from_dict(vocabulary.to_dict()) == vocabulary
    assert len(vocabulary) == len(vocabulary.tokens)
    for class_captions in CAPTIONS:
        for caption in class_captions:
            ids = vocabulary.encode(caption, max_length=16)
            assert len(ids) == 16
            assert vocabulary.unknown_id not in ids
            assert vocabulary.decode(ids) == caption


def test_vocabulary_encode_layout() -> None:
    vocabulary = Vocabulary.from_captions(["a photo of a bus", "a photo of a cat"])

    ids = vocabulary.encode("A photo of a zebra", max_length=8)

    assert ids[0] == vocabulary.start_id
    assert ids[1:5] == [vocabulary.tokens.index(token) for token in ("a", "photo", "of", "a")]
    assert ids[5] == vocabulary.unknown_id
    assert ids[6:] == [vocabulary.end_id, vocabulary.pad_id]
    # The most frequent token comes first after the specials.
    assert vocabulary.tokens[4] == "a"


def test_vocabulary_encode_truncates_keeping_end() -> None:
    vocabulary = Vocabulary.from_captions(["a photo of a bus"])

    ids = vocabulary.encode("a photo of a bus", max_length=4)

    assert ids == [vocabulary.start_id, vocabulary.tokens.index("a"), vocabulary.tokens.index("photo"), vocabulary.end_id]
    with pytest.raises(ValueError, match="at least 2"):
        vocabulary.encode("a bus", max_length=1)


def test_vocabulary_decode_stops_at_end() -> None:
    vocabulary = Vocabulary.from_captions(["a bus, a vehicle"])
    a, bus, comma = (vocabulary.tokens.index(token) for token in ("a", "bus", ","))

    assert vocabulary.decode([vocabulary.start_id, a, bus, comma, a, vocabulary.end_id, bus]) == "a bus, a"
    assert vocabulary.decode([a, vocabulary.pad_id, vocabulary.unknown_id, bus, 10_000]) == "a bus"


def test_vocabulary_rejects_bad_token_lists() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="must not repeat"):
        Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "a"])
    with pytest.raises(ValueError, match="'tokens' list"):
        Vocabulary.from_dict({"words": []})


def test_prepared_captions_and_vocabulary(prepared_root: Path) -> None:
    prepared = load_prepared(prepared_root)

    assert prepared.captions == CAPTIONS
    assert prepared.vocabulary == Vocabulary.from_captions(caption for class_captions in CAPTIONS for caption in class_captions)
    assert prepared.manifest["counts"]["captions"] == 600
