import pytest


@pytest.fixture(scope="session")
def random_text_encoder():
    """The real ViT-B-16 text tower, randomly initialised, built once per session (about 3 s)."""
    from hybridcap.networks.text_encoder import TextEncoderSpec, load_text_encoder

    return load_text_encoder(TextEncoderSpec(pretrained="none"))
