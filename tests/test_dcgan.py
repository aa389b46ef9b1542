"""DCGAN networks: shapes, gradients, initialisation and an exact weights round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional

from hybridcap.io import load_weights, save_weights
from hybridcap.networks.dcgan import DcganConfig, Discriminator, Generator, init_dcgan_weights

TINY = DcganConfig(latent_dim=16, width=8)


def test_generator_output_shape_and_range() -> None:
    generator = Generator(TINY)
    images = generator(torch.randn(5, TINY.latent_dim))
    assert images.shape == (5, 3, 32, 32)
    assert images.min() >= -1.0
    assert images.max() <= 1.0


def test_discriminator_output_shapes() -> None:
    discriminator = Discriminator(TINY)
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    features = discriminator.forward_features(images)
    assert features.shape == (5, 4 * TINY.width, 4, 4)
    assert discriminator.num_features == features[0].numel()
    assert discriminator.forward_head(features).shape == (5,)
    assert torch.equal(discriminator(images), discriminator.forward_head(features))


@pytest.mark.parametrize("width", [8, 64])
def test_discriminator_num_features_formula(width: int) -> None:
    assert Discriminator(DcganConfig(width=width)).num_features == 4 * width * 4 * 4


def test_generator_every_parameter_gets_gradient() -> None:
    generator = Generator(TINY)
    loss = generator(torch.randn(4, TINY.latent_dim)).square().mean()
    loss.backward()
    for name, parameter in generator.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_discriminator_every_parameter_gets_gradient() -> None:
    discriminator = Discriminator(TINY)
    logits = discriminator(torch.rand(4, 3, 32, 32) * 2 - 1)
    loss = functional.binary_cross_entropy_with_logits(logits, torch.ones(4))
    loss.backward()
    assert torch.isfinite(loss)
    for name, parameter in discriminator.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_init_dcgan_weights_statistics() -> None:
    generator = Generator(DcganConfig())
    init_dcgan_weights(generator, torch.Generator().manual_seed(0))
    convolution = generator.upsample_8[0].weight
    batch_norm = generator.upsample_8[1]
    assert convolution.mean().abs() < 0.001
    assert abs(convolution.std().item() - 0.02) < 0.001
    assert abs(batch_norm.weight.mean().item() - 1.0) < 0.01
    assert abs(batch_norm.weight.std().item() - 0.02) < 0.01
    assert torch.count_nonzero(batch_norm.bias) == 0


def test_init_dcgan_weights_seeded_is_repeatable() -> None:
    first, second = Discriminator(TINY), Discriminator(TINY)
    init_dcgan_weights(first, torch.Generator().manual_seed(3))
    init_dcgan_weights(second, torch.Generator().manual_seed(3))
    for (name, first_value), second_value in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(first_value, second_value), name


def test_networks_weights_round_trip_exact(tmp_path) -> None:
    torch.manual_seed(0)
    generator = Generator(TINY)
    discriminator = Discriminator(TINY)
    # A training-mode pass changes the batch-norm running statistics, so they are not just defaults.
    discriminator(generator(torch.randn(6, TINY.latent_dim)))

    save_weights(tmp_path / "generator.safetensors", generator.state_dict(), TINY.to_dict())
    save_weights(tmp_path / "discriminator.safetensors", discriminator.state_dict(), TINY.to_dict())

    for network, name in [(generator, "generator"), (discriminator, "discriminator")]:
        tensors, config = load_weights(tmp_path / f"{name}.safetensors")
        rebuilt: nn.Module = type(network)(DcganConfig.from_dict(config))
        rebuilt.load_state_dict(tensors, strict=True)
        for key, value in network.state_dict().items():
            assert torch.equal(rebuilt.state_dict()[key], value), f"{name}.{key}"

    noise = torch.randn(3, TINY.latent_dim)
    generator.eval()
    rebuilt_generator = Generator(TINY)
    rebuilt_generator.load_state_dict(load_weights(tmp_path / "generator.safetensors")[0])
    rebuilt_generator.eval()
    assert torch.equal(generator(noise), rebuilt_generator(noise))


def test_dcgan_config_round_trip() -> None:
    config = DcganConfig(latent_dim=32, width=16)
    assert DcganConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("values", [{"width": 0}, {"latent_dim": -1}, {"width": 2.5}, {"depth": 3}])
def test_dcgan_config_rejects_invalid_values(values: dict) -> None:
    with pytest.raises(ValueError):
        DcganConfig.from_dict(values)
