import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridcap.networks.captioner import Captioner, CaptionerNetworkConfig, DiscriminatorTrunk


def tiny_encoder() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1),  # (B, 8, 16, 16)
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 4, 0),  # (B, 16, 4, 4)
    )


def tiny_captioner(vocabulary_size: int = 12, max_caption_length: int = 7, decoder_layers: int = 2, seed: int = 0) -> Captioner:
    torch.manual_seed(seed)
    config = CaptionerNetworkConfig(
        encoder_features=16 * 4 * 4,
        vocabulary_size=vocabulary_size,
        max_caption_length=max_caption_length,
        embedding_dim=32,
        head_hidden_dim=24,
        word_embedding_dim=16,
        decoder_hidden_dim=20,
        decoder_layers=decoder_layers,
        dropout=0.2,
    )
    return Captioner(tiny_encoder(), config)


def random_images(count: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def sequence_log_probability(model: Captioner, image: torch.Tensor, token_ids: list[int], ended: bool) -> float:
    """Sum of teacher-forced log-probabilities of token_ids (plus the end token when it ended)."""
    targets = token_ids + ([model.config.end_id] if ended else [])
    inputs = torch.tensor([[model.config.start_id] + targets[:-1]])
    model.eval()
    with torch.no_grad():
        logits = model(image[None], inputs)  # (1, T, V)
    logits[..., [model.config.pad_id, model.config.start_id]] = float("-inf")  # never generated
    logits[0, 0, model.config.end_id] = float("-inf")  # captions are never empty
    log_probabilities = F.log_softmax(logits[0], dim=-1)
    return sum(log_probabilities[position, token].item() for position, token in enumerate(targets))


def test_captioner_shapes():
    model = tiny_captioner()
    images = random_images(3)
    caption_ids = torch.tensor([[1, 4, 5, 2, 0, 0, 0]] * 3)

    assert model.encode_images(images).shape == (3, 32)
    assert model(images, caption_ids).shape == (3, 7, 12)


def test_captioner_every_parameter_gets_gradient():
    model = tiny_captioner()
    caption_ids = torch.tensor([[1, 4, 5, 2, 0, 0, 0], [1, 6, 2, 0, 0, 0, 0]])

    logits = model(random_images(2), caption_ids)
    F.cross_entropy(logits[:, :-1].reshape(-1, 12), caption_ids[:, 1:].reshape(-1), ignore_index=0).backward()

    without_gradient = [name for name, parameter in model.named_parameters() if parameter.grad is None or parameter.grad.abs().sum() == 0]
    assert without_gradient == []


def test_captioner_beam_one_equals_greedy():
    model = tiny_captioner()
    images = random_images(6)

    greedy = model.generate(images, beam_size=1)
    beams = model.generate_with_scores(images, beam_size=1, top_k=1)

    assert [beam[0][0] for beam in beams] == greedy
    assert any(len(caption) > 0 for caption in greedy)


def test_captioner_beam_scores_are_sequence_log_probabilities():
    model = tiny_captioner()
    images = random_images(3)

    results = model.generate_with_scores(images, beam_size=4, top_k=4, max_length=6)

    for image, beams in zip(images, results):
        scores = [score for _, score in beams]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(tokens) for tokens, _ in beams}) == 4
        for tokens, score in beams:
            ended = len(tokens) < 6
            assert score == pytest.approx(sequence_log_probability(model, image, tokens, ended), abs=1e-4)


def test_captioner_wide_beam_is_exact():
    # Vocabulary of 5 ids (pad, start, end and two words), at most 3 generated tokens. After two
    # steps there are 6 distinct beams (4 two-word prefixes, 2 ended one-word captions), so a beam
    # of 8 keeps them all and its best beam is the best sequence overall.
    model = tiny_captioner(vocabulary_size=5, max_caption_length=4)
    image = random_images(1)[0]
    model.eval()

    # Generation never emits padding (0) or start (1), so the words are 3 and 4 and the end is 2.
    candidates = [(list(words), True) for length in range(1, 3) for words in itertools.product([3, 4], repeat=length)]
    candidates += [(list(words), False) for words in itertools.product([3, 4], repeat=3)]
    best_tokens, best_ended = max(candidates, key=lambda candidate: sequence_log_probability(model, image, *candidate))
    best_score = sequence_log_probability(model, image, best_tokens, best_ended)

    (tokens, score), = model.generate_with_scores(image[None], beam_size=8, top_k=1)[0]

    assert score == pytest.approx(best_score, abs=1e-4)
    assert tokens == best_tokens


def test_captioner_never_generates_empty_caption():
    model = tiny_captioner()
    with torch.no_grad():
        # An output bias this large makes the end token by far the likeliest at every step.
        model.decoder.output.bias[model.config.end_id] = 50.0
    images = random_images(4)

    greedy = model.generate(images)
    beams = model.generate_with_scores(images, beam_size=5, top_k=5)

    assert all(len(caption) == 1 for caption in greedy)
    assert all(len(tokens) == 1 for image_beams in beams for tokens, _ in image_beams)


def test_captioner_generation_respects_length_limit():
    model = tiny_captioner()
    images = random_images(4)

    assert all(len(caption) <= 2 for caption in model.generate(images, max_length=2))
    assert all(len(tokens) <= 3 for beams in model.generate_with_scores(images, 3, 3, max_length=3) for tokens, _ in beams)


def test_captioner_generation_restores_training_mode():
    model = tiny_captioner()
    model.train()

    first = model.generate(random_images(2), beam_size=2)
    second = model.generate(random_images(2), beam_size=2)

    assert model.training
    assert first == second  # dropout was off during both calls


def test_captioner_frozen_encoder_stays_in_eval_mode():
    model = tiny_captioner()
    model.freeze_encoder()

    model.train()

    assert not model.encoder.training
    assert model.decoder.training
    assert all(not parameter.requires_grad for parameter in model.encoder.parameters())
    assert all(parameter.requires_grad for parameter in model.projection_head.parameters())


def test_captioner_network_config_round_trip():
    config = tiny_captioner().config

    assert CaptionerNetworkConfig.from_dict(config.to_dict()) == config


def test_captioner_discriminator_trunk_drops_head():
    from hybridcap.networks.dcgan import DcganConfig, Discriminator

    discriminator = Discriminator(DcganConfig(width=4))
    head_weight_count = discriminator.head.weight.numel()
    total_before = sum(parameter.numel() for parameter in discriminator.parameters())
    config = CaptionerNetworkConfig(encoder_features=discriminator.num_features, vocabulary_size=9, max_caption_length=5, embedding_dim=8, head_hidden_dim=8, word_embedding_dim=4, decoder_hidden_dim=6)

    model = Captioner(DiscriminatorTrunk(discriminator), config)

    trunk_total = sum(parameter.numel() for parameter in model.encoder.parameters())
    assert trunk_total == total_before - head_weight_count
    assert not any("head" in key and "projection_head" not in key for key in model.state_dict())
    assert model.encode_images(random_images(2)).shape == (2, 8)
