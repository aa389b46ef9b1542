import math

import torch

from hybridcap.losses.contrastive import INITIAL_LOGIT_SCALE, MAX_LOGIT_SCALE, ClipContrastiveLoss


def test_contrastive_loss_matches_hand_computed_case():
    # Scale 1 keeps the logits equal to the cosine similarities, so each term is easy to write out.
    loss = ClipContrastiveLoss(initial_logit_scale=0.0)
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[2.0, 0.0], [0.0, 3.0], [0.0, 1.0]])  # unnormalised on purpose
    groups = torch.tensor([7, 7, 3])
    e = math.e

    # Image logits rows: [1, 0, 0], [1, 0, 0], [0, 1, 1], with targets [.5, .5, 0], [.5, .5, 0], [0, 0, 1].
    expected_image_to_text = (2 * (math.log(e + 2) - 0.5) + (math.log(1 + 2 * e) - 1)) / 3
    # Text logits rows: [1, 1, 0], [0, 0, 1], [0, 0, 1], with the same targets.
    expected_text_to_image = ((math.log(2 * e + 1) - 1) + math.log(2 + e) + (math.log(2 + e) - 1)) / 3

    parts = loss(images, texts, groups)

    assert math.isclose(parts["image_to_text"].item(), expected_image_to_text, rel_tol=1e-5)
    assert math.isclose(parts["text_to_image"].item(), expected_text_to_image, rel_tol=1e-5)
    assert math.isclose(parts["contrastive"].item(), (expected_image_to_text + expected_text_to_image) / 2, rel_tol=1e-5)
    assert math.isclose(parts["logit_scale"].item(), 1.0, rel_tol=1e-6)


def test_contrastive_loss_single_positive_case():
    loss = ClipContrastiveLoss(initial_logit_scale=0.0)
    embeddings = torch.eye(2)

    parts = loss(embeddings, embeddings, torch.tensor([0, 1]))

    # Each row has logits [1, 0] with the positive first: -log(e / (e + 1)).
    assert math.isclose(parts["contrastive"].item(), math.log(1 + math.exp(-1)), rel_tol=1e-6)


def test_contrastive_targets_count_duplicates_as_positives():
    targets = ClipContrastiveLoss.targets(torch.tensor([4, 9, 4, 4]))

    expected = torch.tensor(
        [
            [1 / 3, 0, 1 / 3, 1 / 3],
            [0, 1, 0, 0],
            [1 / 3, 0, 1 / 3, 1 / 3],
            [1 / 3, 0, 1 / 3, 1 / 3],
        ]
    )
    assert torch.allclose(targets, expected)


def test_contrastive_loss_duplicate_is_not_a_negative():
    # Two images of one class paired with the same caption: as positives of each other, aligned
    # embeddings reach the soft-target minimum log(2) and the images get no gradient.
    loss = ClipContrastiveLoss(initial_logit_scale=MAX_LOGIT_SCALE)
    images = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    texts = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    shared = loss(images, texts, torch.tensor([5, 5, 6]))["contrastive"]
    shared.backward()

    expected_minimum = (2 * math.log(2) + 0.0) / 3
    assert math.isclose(shared.item(), expected_minimum, rel_tol=1e-5)
    assert images.grad.abs().max().item() < 1e-6


def test_contrastive_loss_near_minimum_when_aligned():
    loss = ClipContrastiveLoss(initial_logit_scale=MAX_LOGIT_SCALE)
    groups = torch.tensor([0, 1, 1, 2, 2, 2, 3])
    directions = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(0)))[0][:4]  # (4, 16) orthonormal
    images = directions[groups] * 3.0
    texts = directions[groups] * 0.5

    parts = loss(images, texts, groups)

    # The minimum of a soft-target cross-entropy is the entropy of the targets: log(k) for k positives.
    counts = torch.tensor([1, 2, 2, 3, 3, 3, 1], dtype=torch.float64)
    minimum = counts.log().mean().item()
    assert abs(parts["contrastive"].item() - minimum) < 1e-4
    misaligned = loss(images, texts.roll(1, dims=0), groups)["contrastive"].item()
    assert misaligned > minimum + 1.0


def test_contrastive_logit_scale_initial_value_and_clamp():
    assert math.isclose(ClipContrastiveLoss().scale().item(), 1 / 0.07, rel_tol=1e-5)
    assert math.isclose(INITIAL_LOGIT_SCALE, math.log(1 / 0.07))

    clamped = ClipContrastiveLoss(initial_logit_scale=10.0)

    assert math.isclose(clamped.scale().item(), 100.0, rel_tol=1e-5)


def test_contrastive_logit_scale_is_learnable():
    loss = ClipContrastiveLoss()
    embeddings = torch.eye(3)

    loss(embeddings, embeddings, torch.arange(3))["contrastive"].backward()

    assert [name for name, _ in loss.named_parameters()] == ["logit_scale"]
    # Perfectly separated embeddings: a larger scale lowers the loss, so the gradient is negative.
    assert loss.logit_scale.grad.item() < 0
