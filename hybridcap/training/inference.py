"""Load a trained captioner run folder for evaluation and captioning.

Everything needed to caption an image is in the run folder: the weights with their network
config, the vocabulary and the class names with their reference captions. This module never
imports open_clip, because the text encoder is needed only for training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from hybridcap.datasets import Vocabulary, caption_names_class, normalize_images
from hybridcap.device import Precision, autocast
from hybridcap.errors import RunFolderError
from hybridcap.io import load_weights, read_json, state_dict_mismatch
from hybridcap.networks.captioner import Captioner, CaptionerNetworkConfig
from hybridcap.networks.dcgan import DcganConfig
from hybridcap.training.run_folder import wrong_folder_message

# Decoder rows per generation batch: images times beams. Eval's default of 500 images at beam 3
# fits, and wide beams get fewer images per batch. On the CPU-preset run, 20 images at beam 5,000
# then peaked at 725 MB of resident memory.
MAX_BEAM_ROWS = 1536

CONFIG_FILE = "config.json"
BEST_FILE = "best.safetensors"
LAST_FILE = "last.safetensors"
VOCABULARY_FILE = "vocabulary.json"
CAPTIONS_FILE = "captions.json"
TEXT_EMBEDDINGS_FILE = "text_embeddings.safetensors"
STATE_FILE = "training_state.safetensors"
HISTORY_FILE = "history.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"

CHECKPOINT_FILES = {"best": BEST_FILE, "last": LAST_FILE}
# The contrastive loss's temperature is saved with the weights but is not part of the captioner.
LOGIT_SCALE_KEY = "contrastive_loss.logit_scale"


@dataclass
class LoadedCaptioner:
    """A captioner ready for inference, with the class names and captions stored in its run folder.

    Attributes:
        model: the network in eval mode.
        vocabulary: token ids of the captions.
        fine_names: readable fine class names, index = fine label.
        coarse_names: readable superclass names, index = coarse label.
        captions: reference captions per fine class.
        config: the checkpoint's metadata: ``network`` and ``dcgan`` configs, ``epoch``,
            validation figures and the training config under ``training``.
        fine_to_coarse: superclass label of each fine class.
    """

    model: Captioner
    vocabulary: Vocabulary
    fine_names: list[str]
    coarse_names: list[str]
    captions: list[list[str]]
    config: dict[str, Any]
    fine_to_coarse: list[int] = field(default_factory=list)

    @torch.no_grad()
    def caption(
        self,
        images: torch.Tensor,
        *,
        beam_size: int = 1,
        batch_size: int = 256,
        precision: Precision | str = Precision.fp32,
    ) -> list[str]:
        """Return one caption per uint8 image of ``images`` ``(N, 3, 32, 32)``, on any device.

        ``batch_size`` is lowered for wide beams, see ``images_per_batch``.
        """
        device = next(self.model.parameters()).device
        batch_size = images_per_batch(batch_size, beam_size)
        texts: list[str] = []
        for start in range(0, images.shape[0], batch_size):
            batch = normalize_images(images[start : start + batch_size].to(device))  # (b, 3, 32, 32)
            with autocast(device, precision):
                token_rows = self.model.generate(batch, beam_size=beam_size)
            texts.extend(self.vocabulary.decode(row) for row in token_rows)
        return texts


def images_per_batch(batch_size: int, beam_size: int) -> int:
    """Return how many images one generation batch may take: ``batch_size``, but at most ``MAX_BEAM_ROWS`` rows.

    Beam search keeps ``beam_size`` decoder rows per image, and a batch takes at least one image.
    """
    return max(1, min(batch_size, MAX_BEAM_ROWS // beam_size))


def checkpoint_path(run_dir: str | os.PathLike[str], checkpoint: str = "best") -> Path:
    """Return the weights file of ``checkpoint`` (``best``, ``last``, or a path to a safetensors file)."""
    if checkpoint in CHECKPOINT_FILES:
        return Path(run_dir) / CHECKPOINT_FILES[checkpoint]
    return Path(checkpoint)


def build_captioner(metadata: dict[str, Any]) -> Captioner:
    """Build an untrained captioner from a checkpoint's ``network`` and ``dcgan`` metadata."""
    network_config = CaptionerNetworkConfig.from_dict(metadata["network"])
    dcgan_config = DcganConfig.from_dict(metadata["dcgan"])
    return Captioner.from_dcgan(dcgan_config, network_config)


def load_captioner(run_dir: str | os.PathLike[str], checkpoint: str = "best", device: torch.device | str = "cpu") -> LoadedCaptioner:
    """Load a captioner run folder written by ``train_captioner``.

    Args:
        run_dir: the captioner run folder.
        checkpoint: ``best`` (highest validation class accuracy), ``last``, or a weights file.
        device: where the model goes.

    Raises:
        RunFolderError: the folder, the checkpoint or its vocabulary and caption files are
            missing, or the weights do not match their saved config.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"captioner run folder {run_dir} not found; run `hybridcap train-captioner --out {run_dir}` first")
    path = checkpoint_path(run_dir, checkpoint)
    if not path.is_file():
        wrong_folder = wrong_folder_message(run_dir, "captioner run")
        if wrong_folder is not None:
            raise RunFolderError(wrong_folder)
        raise RunFolderError(f"no {checkpoint} checkpoint in {run_dir} ({path.name} not found); run `hybridcap train-captioner --out {run_dir}` until one epoch finishes")

    tensors, metadata = load_weights(path)
    if "network" not in metadata or "dcgan" not in metadata:
        raise RunFolderError(f"{path} has no captioner config in its metadata; it was not written by train-captioner")
    try:
        model = build_captioner(metadata)
    except (TypeError, ValueError, KeyError) as error:
        raise RunFolderError(f"invalid captioner config in {path}: {error}") from error
    model_tensors = {key: value for key, value in tensors.items() if key != LOGIT_SCALE_KEY}
    mismatch = state_dict_mismatch(model, model_tensors)
    if mismatch is not None:
        raise RunFolderError(f"{path} does not match its own config ({mismatch}); it is damaged or was not written by hybridcap")
    model.load_state_dict(model_tensors, strict=True)
    model.to(device).eval()

    vocabulary_values = read_json(run_dir / VOCABULARY_FILE)
    try:
        vocabulary = Vocabulary.from_dict(vocabulary_values)
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"invalid vocabulary in {run_dir / VOCABULARY_FILE}: {error}") from error
    if len(vocabulary) != model.config.vocabulary_size:
        raise RunFolderError(f"{run_dir / VOCABULARY_FILE} has {len(vocabulary)} tokens but {path.name} was trained with {model.config.vocabulary_size}")

    caption_values = read_json(run_dir / CAPTIONS_FILE)
    if not isinstance(caption_values, dict) or not all(key in caption_values for key in ("fine_names", "coarse_names", "fine_to_coarse", "captions")):
        raise RunFolderError(f"invalid {run_dir / CAPTIONS_FILE}: expected fine_names, coarse_names, fine_to_coarse and captions")
    return LoadedCaptioner(
        model=model,
        vocabulary=vocabulary,
        fine_names=list(caption_values["fine_names"]),
        coarse_names=list(caption_values["coarse_names"]),
        captions=[list(class_captions) for class_captions in caption_values["captions"]],
        config=metadata,
        fine_to_coarse=list(caption_values["fine_to_coarse"]),
    )


def class_accuracy(captions: Sequence[str], fine_labels: Sequence[int], fine_names: Sequence[str]) -> float:
    """Return the fraction of captions that name their image's fine class as a whole phrase."""
    if not captions:
        return 0.0
    hits = sum(caption_names_class(caption, fine_names[label]) for caption, label in zip(captions, fine_labels))
    return hits / len(captions)
