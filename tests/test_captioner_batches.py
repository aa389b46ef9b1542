import torch

from hybridcap.datasets import Vocabulary
from hybridcap.training.caption_batches import CaptionTable, augment_images, caption_token_length

CAPTIONS = [["a photo of a cat", "a cat"], ["a dog", "a small dog", "a photo of a dog"], ["an apple"]]


def make_table() -> CaptionTable:
    vocabulary = Vocabulary.from_captions(caption for class_captions in CAPTIONS for caption in class_captions)
    return CaptionTable.build(CAPTIONS, vocabulary, caption_token_length(CAPTIONS))


def test_caption_table_layout():
    table = make_table()

    assert caption_token_length(CAPTIONS) == 7  # five tokens of "a photo of a cat", start and end
    assert table.texts == ["a photo of a cat", "a cat", "a dog", "a small dog", "a photo of a dog", "an apple"]
    assert table.class_offsets.tolist() == [0, 2, 5]
    assert table.class_counts.tolist() == [2, 3, 1]
    assert table.token_ids.shape == (6, 7)


def test_caption_table_sample_stays_in_class():
    table = make_table()
    labels = torch.tensor([0, 1, 2] * 200)

    indices = table.sample(labels, torch.Generator().manual_seed(0))

    for label, index in zip(labels.tolist(), indices.tolist()):
        start = table.class_offsets[label].item()
        assert start <= index < start + table.class_counts[label].item()
    assert set(indices[labels == 1].tolist()) == {2, 3, 4}


def test_caption_table_fixed_cycles_through_class():
    table = make_table()

    indices = table.fixed(torch.tensor([1, 1, 1, 1, 0]), torch.arange(5))

    assert indices.tolist() == [2, 3, 4, 2, 0]


def test_augment_images_without_shift_only_flips():
    images = torch.arange(4 * 3 * 5 * 6, dtype=torch.uint8).view(4, 3, 5, 6)

    augmented = augment_images(images, torch.Generator().manual_seed(3), max_shift=0)

    flipped = 0
    for original, result in zip(images, augmented):
        if torch.equal(result, original.flip(-1)):
            flipped += 1
        else:
            assert torch.equal(result, original)
    assert augmented.dtype == torch.uint8
    assert 0 < flipped < 4


def test_augment_images_shift_repeats_edges():
    images = torch.arange(8, dtype=torch.uint8).view(1, 1, 1, 8).expand(200, 1, 8, 8).contiguous()

    augmented = augment_images(images, torch.Generator().manual_seed(0), max_shift=2)

    rows = {tuple(image[0, 0].tolist()) for image in augmented}
    # Each row is 0..7 moved by -2..2 pixels (edge repeated), possibly mirrored.
    expected = set()
    for shift in range(-2, 3):
        moved = tuple(min(max(column + shift, 0), 7) for column in range(8))
        expected.add(moved)
        expected.add(tuple(min(max(7 - column + shift, 0), 7) for column in range(8)))
    assert rows <= expected
    assert len(rows) == 10
    assert all(torch.equal(image[0, 0], image[0, 5]) for image in augmented)
