import socket

import pytest
import torch

from hybridcap.errors import HybridcapError
from hybridcap.io import load_weights, save_weights
from hybridcap.networks.text_encoder import (
    TextEncoderSpec,
    cached_caption_embeddings,
    load_text_encoder,
)

CAPTIONS = ["a photo of an apple.", "a small aquarium fish swimming in the water.", "a tractor."]


def test_text_encoder_short_context_matches_full_context(random_text_encoder):
    tower = random_text_encoder.tower
    token_ids = random_text_encoder.tokenizer(CAPTIONS)  # (3, 77)

    with torch.no_grad():
        full_context = tower(token_ids)
    embedded = random_text_encoder.embed(CAPTIONS)

    assert embedded.shape == (3, 512)
    assert torch.allclose(embedded, full_context, atol=1e-4)
    assert tower.attn_mask.shape == (77, 77)


def test_text_encoder_is_frozen(random_text_encoder):
    random_text_encoder.train()

    assert not random_text_encoder.training
    assert not random_text_encoder.tower.training
    assert all(not parameter.requires_grad for parameter in random_text_encoder.parameters())
    assert not random_text_encoder.embed(CAPTIONS[:1]).requires_grad


def test_text_encoder_random_tower_is_reproducible(random_text_encoder):
    again = load_text_encoder(TextEncoderSpec(pretrained="none"))

    first = random_text_encoder.tower.state_dict()
    second = again.tower.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert again.weights_identity == random_text_encoder.weights_identity
    assert again.weights_identity.startswith("random-seed-0")


def test_text_encoder_loads_local_weights_file(random_text_encoder, tmp_path):
    # A full CLIP checkpoint in open_clip's layout: text tower at the top level, image tower under visual.
    tower_state = {key: value + 0.5 for key, value in random_text_encoder.tower.state_dict().items()}
    checkpoint = dict(tower_state, **{"visual.proj": torch.zeros(3), "logit_scale": torch.tensor(4.6)})
    path = tmp_path / "clip.safetensors"
    save_weights(path, checkpoint)

    encoder = load_text_encoder(TextEncoderSpec(weights_path=str(path)))

    loaded = encoder.tower.state_dict()
    assert all(torch.equal(loaded[key], tower_state[key]) for key in tower_state)
    assert encoder.weights_identity.startswith("file-sha256:")
    assert not torch.allclose(encoder.embed(CAPTIONS[:1]), random_text_encoder.embed(CAPTIONS[:1]))


def test_text_encoder_rejects_file_without_text_tower(tmp_path):
    path = tmp_path / "image_only.safetensors"
    save_weights(path, {"visual.proj": torch.zeros(3)})

    with pytest.raises(HybridcapError, match="does not contain the ViT-B-16 text tower"):
        load_text_encoder(TextEncoderSpec(weights_path=str(path)))


def test_text_encoder_missing_weights_file(tmp_path):
    with pytest.raises(HybridcapError, match="CLIP weights file not found: .*--clip-weights"):
        load_text_encoder(TextEncoderSpec(weights_path=str(tmp_path / "absent.safetensors")))


def test_text_encoder_unknown_tag():
    with pytest.raises(HybridcapError, match="unknown CLIP pretrained tag 'nonsense'.*openai"):
        load_text_encoder(TextEncoderSpec(pretrained="nonsense"))


def test_text_encoder_offline_fails_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A listening loopback socket as the hub: with HF_HUB_OFFLINE set, nothing may connect to it.
    with socket.socket() as hub:
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        hub.setblocking(False)
        port = hub.getsockname()[1]

        with pytest.raises(HybridcapError, match="HF_HUB_OFFLINE is set.*--clip-weights PATH.*--clip-pretrained none"):
            load_text_encoder(TextEncoderSpec(), hub_cache_dir=tmp_path, hub_endpoint=f"http://127.0.0.1:{port}")

        with pytest.raises(BlockingIOError):
            hub.accept()


def test_text_encoder_unreachable_hub_raises(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    # A port that was just free on the loopback interface: connecting to it is refused at once.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    # The message shows that the probe, not a download with huggingface_hub's retries, gave up.
    with pytest.raises(HybridcapError, match=f"not cached and 127.0.0.1:{closed_port} is unreachable.*--clip-weights PATH"):
        load_text_encoder(TextEncoderSpec(), hub_cache_dir=tmp_path, hub_endpoint=f"http://127.0.0.1:{closed_port}")


def test_caption_cache_embeds_each_caption_once(random_text_encoder, tmp_path):
    cache_path = tmp_path / "text_embeddings.safetensors"
    spec = TextEncoderSpec(pretrained="none")
    calls = []
    hook = random_text_encoder.tower.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        first = cached_caption_embeddings(cache_path, CAPTIONS + CAPTIONS[:1], spec, text_encoder=random_text_encoder)
        calls_after_first = list(calls)
        second = cached_caption_embeddings(cache_path, CAPTIONS[::-1], spec, text_encoder=random_text_encoder)
        grown = cached_caption_embeddings(cache_path, CAPTIONS + ["a bear."], spec, text_encoder=random_text_encoder)
    finally:
        hook.remove()

    assert first.computed == 3
    assert calls_after_first == [3]
    assert torch.equal(first.embeddings[3], first.embeddings[0])
    assert second.computed == 0
    assert torch.equal(second.embeddings, first.embeddings[:3].flip(0))
    assert grown.computed == 1
    assert calls == [3, 1]
    assert torch.equal(grown.embeddings[:3], first.embeddings[:3])
    _, metadata = load_weights(cache_path)
    assert metadata["model_name"] == "ViT-B-16"
    assert metadata["weights_identity"] == random_text_encoder.weights_identity
    assert sorted(metadata["captions"]) == sorted(CAPTIONS + ["a bear."])


def test_caption_cache_ignores_other_weights(random_text_encoder, tmp_path):
    cache_path = tmp_path / "text_embeddings.safetensors"
    save_weights(
        cache_path,
        {"embeddings": torch.zeros(1, 512)},
        {"model_name": "ViT-B-16", "weights_identity": "pretrained:openai", "captions": [CAPTIONS[0]]},
    )

    result = cached_caption_embeddings(cache_path, CAPTIONS[:1], TextEncoderSpec(pretrained="none"), text_encoder=random_text_encoder)

    assert result.computed == 1
    assert result.embeddings.abs().sum() > 0


def test_text_encoder_rejects_corrupt_weights_file(tmp_path):
    path = tmp_path / "clip.pt"
    path.write_bytes(b"PK\x03\x04 not really a zip archive" * 10)

    with pytest.raises(HybridcapError, match="cannot read CLIP weights .*clip.pt as a state dict"):
        load_text_encoder(TextEncoderSpec(weights_path=str(path)))
