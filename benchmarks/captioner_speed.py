"""Measure captioner training speed (fp32 and bf16) and the caption-embedding cache build time.

The training side runs ``train_captioner``'s own step (augmentation, caption sampling, encoder,
decoder, cross-entropy and contrastive loss, AdamW) on the prepared training split, with a
randomly initialised DCGAN trunk of the given width: the weights do not change the speed.
The cache side builds the randomly initialised ViT-B-16 text tower (``--clip-pretrained none``)
and embeds the real caption set of the prepared data, as the first run of ``train-captioner``
does. The time includes importing open_clip.

Usage, with hybridcap importable (installed, or PYTHONPATH=. from the repository root), after
``hybridcap data``:
    python benchmarks/captioner_speed.py [--data-root DIR] [--steps 20] [--width 64] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hybridcap.datasets import default_data_root, load_prepared
from hybridcap.networks.captioner import DiscriminatorTrunk
from hybridcap.networks.dcgan import DcganConfig, Discriminator


def measure_cache(data_root: Path) -> dict[str, float]:
    """Return the seconds to import open_clip, build the random text tower and embed every caption."""
    started = time.perf_counter()
    import open_clip  # noqa: F401

    imported = time.perf_counter()
    from hybridcap.networks.text_encoder import TextEncoderSpec, cached_caption_embeddings, load_text_encoder

    spec = TextEncoderSpec(pretrained="none")
    encoder = load_text_encoder(spec)
    built = time.perf_counter()
    captions = [caption for class_captions in load_prepared(data_root).captions for caption in class_captions]
    with tempfile.TemporaryDirectory() as folder:
        result = cached_caption_embeddings(Path(folder) / "text_embeddings.safetensors", captions, spec, text_encoder=encoder)
    embedded = time.perf_counter()
    return {
        "captions": float(result.computed),
        "import_seconds": imported - started,
        "build_seconds": built - imported,
        "embed_seconds": embedded - built,
        "total_seconds": embedded - started,
    }


def measure_training(data_root: Path, width: int, batch_size: int, steps: int, precision: str, contrastive: bool) -> float:
    """Return training images per second over ``steps`` steps after two warm-up steps."""
    from hybridcap.training.captioner import CaptionerConfig, _CaptionerTrainer
    from hybridcap.training.reporting import TrainingReporter

    data = load_prepared(data_root)
    config = CaptionerConfig(data_root=str(data_root), batch_size=batch_size, precision=precision, device="cpu", clip_pretrained="none")
    trunk = DiscriminatorTrunk(Discriminator(DcganConfig(width=width)))
    caption_count = sum(len(class_captions) for class_captions in data.captions)
    # Random text embeddings stand in for the cache: the step only looks rows up in it.
    text_embeddings = torch.randn(caption_count, 512) if contrastive else None
    trainer = _CaptionerTrainer(config, torch.device("cpu"), data, trunk, text_embeddings, TrainingReporter())

    permutation = torch.randperm(trainer.train_images.shape[0])
    for step in range(2):
        trainer.train_step(permutation[step * batch_size : (step + 1) * batch_size])
    started = time.perf_counter()
    for step in range(2, steps + 2):
        trainer.train_step(permutation[step * batch_size : (step + 1) * batch_size])
    return steps * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=default_data_root(), help="prepared data folder (hybridcap data)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    parser.add_argument("--width", type=int, default=64, help="DCGAN width of the encoder trunk")
    parser.add_argument("--batch-size", type=int, default=128, help="images per training step")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    arguments = parser.parse_args()
    if arguments.threads is not None:
        torch.set_num_threads(arguments.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, width {arguments.width}, batch {arguments.batch_size}")
    cache = measure_cache(arguments.data_root)
    print(
        f"caption cache: {cache['captions']:.0f} captions in {cache['total_seconds']:.1f} s "
        f"(open_clip import {cache['import_seconds']:.1f} s, random ViT-B-16 text tower {cache['build_seconds']:.1f} s, "
        f"embedding {cache['embed_seconds']:.1f} s)"
    )
    for precision in ["fp32", "bf16"]:
        images_per_second = measure_training(arguments.data_root, arguments.width, arguments.batch_size, arguments.steps, precision, contrastive=True)
        print(f"training {precision}: {images_per_second:.0f} images/s, {45_000 / images_per_second / 60:.1f} min per 45,000-image epoch")


if __name__ == "__main__":
    main()
