"""Shared fixtures: generated archives, a prepared-data folder, the real archive, the text tower,
the captioner's tiny data and GAN run, and a tiny captioner run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from captioner_helpers import tiny_config  # noqa: E402
from cifar_factory import write_cifar100_archive  # noqa: E402

# The real archive lies outside the repository, in ../shared/data seen from the repository root.
REAL_ARCHIVE = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar-100-python.tar.gz").resolve()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    # Every test runs on one torch thread. The test networks are tiny, and on a shared 2-core
    # machine a second intra-op thread mostly waits for other processes, which made the GAN and
    # captioner tests ten to twenty times slower.
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def generated_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated archive with 100 classes, 6 training and 2 test images per class."""
    return write_cifar100_archive(tmp_path_factory.mktemp("archive") / "cifar-100-python.tar.gz", train_per_class=6, test_per_class=2)


@pytest.fixture(scope="session")
def prepared_root(generated_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data folder: 500 train, 100 val (1 per class) and 200 test images."""
    from hybridcap.datasets import prepare_cifar100

    root = tmp_path_factory.mktemp("prepared") / "cifar100"
    prepare_cifar100(root, archive=generated_archive, val_per_class=1, seed=0)
    return root


@pytest.fixture(scope="session")
def real_archive() -> Path:
    """The real CIFAR-100 archive; tests that use it are skipped when it is absent."""
    if not REAL_ARCHIVE.is_file():
        pytest.skip(f"real CIFAR-100 archive not found at {REAL_ARCHIVE}")
    return REAL_ARCHIVE


@pytest.fixture(scope="session")
def random_text_encoder():
    """The real ViT-B-16 text tower, randomly initialised, built once per session (about 3 s)."""
    from hybridcap.networks.text_encoder import TextEncoderSpec, load_text_encoder

    return load_text_encoder(TextEncoderSpec(pretrained="none"))


# --- captioner fixtures: 10 classes, a real tiny GAN run, a shared caption embedding cache ----


@pytest.fixture(scope="session")
def captioner_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared data with 10 classes: 50 training, 10 validation and 10 test images."""
    from hybridcap.datasets import prepare_cifar100

    folder = tmp_path_factory.mktemp("captioner_data")
    archive = write_cifar100_archive(folder / "cifar-100-python.tar.gz", train_per_class=6, test_per_class=1, num_classes=10)
    prepare_cifar100(folder / "data", archive=archive, val_per_class=1, seed=0)
    return folder / "data"


@pytest.fixture(scope="session")
def captioner_gan_run(captioner_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real one-epoch GAN run of width 8 on ``captioner_data``."""
    from hybridcap.training.gan import GanConfig, train_gan

    out = tmp_path_factory.mktemp("captioner_gan") / "run"
    config = GanConfig(data_root=str(captioner_data), out=str(out), epochs=1, batch_size=10, width=8, latent_dim=16, save_every=0, log_every=5, device="cpu")
    train_gan(config)
    return out


@pytest.fixture(scope="session")
def captioner_embedding_cache(captioner_data: Path, captioner_gan_run: Path, random_text_encoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The caption embedding cache of ``captioner_data``, copied into runs so each need not rebuild it."""
    from hybridcap.training.captioner import train_captioner

    out = tmp_path_factory.mktemp("captioner_cache") / "run"
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1), text_encoder=random_text_encoder)
    return out / "text_embeddings.safetensors"


@pytest.fixture(scope="session")
def tiny_captioner_run(prepared_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A captioner run folder from a 2-epoch run of tiny networks on ``prepared_root``, no CLIP."""
    from captioner_runs import train_tiny_captioner

    return train_tiny_captioner(prepared_root, tmp_path_factory.mktemp("tiny-runs"))
