"""Train the captioner: DCGAN discriminator trunk + projection head + LSTM decoder.

Per step, each image gets one of its class's reference captions at random. The decoder is
trained on it with teacher forcing (cross-entropy over the vocabulary, padding ignored), and
the projected image embedding is pulled towards the frozen CLIP text embedding of the same
caption by the contrastive loss. The CLIP embeddings come from a cache built before the first
step, so the text tower never runs during training.

After each epoch the trainer measures the validation loss and the greedy captions' class
accuracy, and writes ``last.safetensors``. It also writes ``best.safetensors`` when the
accuracy is the best so far, or equal to the best with a lower validation loss. Accuracy comes
first because naming the right class is what the product promises. The loss breaks ties,
which are common with 100 classes and a few thousand validation images.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from hybridcap.datasets import PreparedCifar100, default_data_root, load_prepared, normalize_images
from hybridcap.device import DeviceChoice, Precision, autocast, resolve_device
from hybridcap.errors import DataError, HybridcapError, RunFolderError, TrainingDivergedError
from hybridcap.io import CONFIG_METADATA_KEY, atomic_write_json, atomic_write_text, remove_stale_temporary_files, save_weights
from hybridcap.losses.contrastive import ClipContrastiveLoss
from hybridcap.networks.captioner import Captioner, CaptionerNetworkConfig, DiscriminatorTrunk
from hybridcap.networks.text_encoder import FrozenTextEncoder, TextEncoderSpec, cached_caption_embeddings
from hybridcap.training.caption_batches import CaptionTable, augment_images, caption_token_length
from hybridcap.training.encoder_mode import EncoderMode
from hybridcap.training.gan_step import uses_channels_last
from hybridcap.training.checkpoint import load_training_state, save_training_state
from hybridcap.training.inference import (
    BEST_FILE,
    CAPTIONS_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    LAST_FILE,
    LOGIT_SCALE_KEY,
    LOSS_CURVE_FILE,
    STATE_FILE,
    TEXT_EMBEDDINGS_FILE,
    VOCABULARY_FILE,
    class_accuracy,
)
from hybridcap.training.reporting import TrainingReporter
from hybridcap.training.run_folder import derived_seed, epoch_permutation, read_log_rows, reject_other_run_folder, reject_resume_on_other_split, saved_config_to_resume, split_change


# Fraction of all steps over which the learning rates rise linearly from 0 before the cosine decay.
WARMUP_FRACTION = 0.03
# The cosine decay ends at this fraction of each base learning rate instead of 0.
FINAL_LEARNING_RATE_FRACTION = 0.01
# Gradients are clipped to this global norm, the usual guard against LSTM gradient spikes.
MAX_GRADIENT_NORM = 1.0
VALIDATION_BATCH_SIZE = 500

# The run's own files, the training state first (see _remove_run_files). The caption embedding
# cache is not among them because --fresh keeps it.
RUN_FILES = (STATE_FILE, BEST_FILE, LAST_FILE, HISTORY_FILE, LOSS_CURVE_FILE, CONFIG_FILE, VOCABULARY_FILE, CAPTIONS_FILE)

# Config keys that a resumed run must keep, because changing them would make the saved state
# meaningless or the run's history inconsistent. Learning rates and weight decay may change, so
# a diverged run can resume with a lower rate.
RESUME_KEYS = [
    "data_root",
    "encoder",
    "batch_size",
    "label_smoothing",
    "contrastive_weight",
    "max_shift",
    "clip_model",
    "clip_pretrained",
    "clip_weights",
    "head_hidden_dim",
    "word_embedding_dim",
    "decoder_hidden_dim",
    "decoder_layers",
    "dropout",
    "seed",
]

# Seeds of the independent random streams, mixed with the run's seed.
_SEED_WEIGHTS = 1
_SEED_PERMUTATION = 2
_SEED_STEPS = 3


@dataclass
class CaptionerConfig:
    """Options of one captioner training run, saved as the run folder's ``config.json``.

    The defaults are a GPU recipe. On a CPU, fewer epochs with ``precision="bf16"`` train
    usefully; ``benchmarks/captioner_speed.py`` measures the speed of a machine.

    Attributes:
        data_root: folder written by ``hybridcap data``; None means ``default_data_root()``.
        gan_run: GAN run folder whose discriminator becomes the image encoder.
        out: run folder for weights, caches, history and plots.
        encoder: ``train`` to fine-tune the discriminator trunk, ``freeze`` to keep it fixed.
        epochs: total epochs, counting those of a resumed run. The cosine schedule spans them, so
            raising it on a finished run raises the learning rate again.
        batch_size: images per step; the last incomplete batch of each epoch is dropped.
        learning_rate: AdamW peak learning rate of the projection head, decoder and logit scale.
        encoder_learning_rate: AdamW peak learning rate of the discriminator trunk when trained.
        weight_decay: AdamW weight decay of weight matrices; biases, norms and the logit scale
            get none.
        label_smoothing: label smoothing of the training cross-entropy. Validation reports the
            plain cross-entropy.
        contrastive_weight: weight of the contrastive loss in the total; 0 turns it off and
            skips the text encoder entirely.
        max_shift: largest random translation of training images in pixels (flips are always on).
        clip_model: open_clip model whose text tower embeds the captions.
        clip_pretrained: open_clip pretrained tag, or ``none`` for a random text tower.
        clip_weights: local open_clip checkpoint to use instead of ``clip_pretrained``.
        head_hidden_dim: hidden width of the projection head.
        word_embedding_dim: decoder word embedding size.
        decoder_hidden_dim: LSTM hidden size.
        decoder_layers: stacked LSTM layers.
        dropout: dropout in the projection head and decoder.
        seed: seed of the head and decoder weights, batch order, caption choice, augmentation.
        save_every: also save the training state every this many steps; 0 saves only after
            each epoch.
        log_every: steps between two history rows and two reporter updates.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        precision: ``fp32``, or ``bf16`` autocast.
    """

    data_root: str | None = None
    gan_run: str = "runs/gan"
    out: str = "runs/captioner"
    encoder: str = EncoderMode.train.value
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 2e-3
    encoder_learning_rate: float = 1e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    contrastive_weight: float = 1.0
    max_shift: int = 4
    clip_model: str = "ViT-B-16"
    clip_pretrained: str = "openai"
    clip_weights: str | None = None
    head_hidden_dim: int = 1024
    word_embedding_dim: int = 256
    decoder_hidden_dim: int = 512
    decoder_layers: int = 1
    dropout: float = 0.3
    seed: int = 0
    save_every: int = 200
    log_every: int = 20
    device: str = DeviceChoice.auto.value
    precision: str = Precision.fp32.value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CaptionerConfig:
        known = {config_field.name for config_field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def text_encoder_spec(self) -> TextEncoderSpec:
        return TextEncoderSpec(model_name=self.clip_model, pretrained=self.clip_pretrained, weights_path=self.clip_weights)


@dataclass
class CaptionerResult:
    """Outcome of one ``train_captioner`` call.

    Attributes:
        run_dir: the run folder.
        epochs_completed: epochs finished in the run folder, counting earlier invocations.
        global_step: steps finished in the run folder, counting earlier invocations.
        resumed_from_step: global step restored from the training state, or None for a new run.
        epoch_summaries: per-epoch training means and validation figures of the epochs this
            invocation finished.
        best_epoch: epoch of ``best.safetensors`` (1-based), or None before the first epoch.
        best_val_class_accuracy: validation class accuracy of the best checkpoint.
        text_embeddings_computed: captions the text tower embedded in this invocation; 0 when
            the cache had them all or the contrastive loss is off.
        text_embedding_seconds: time spent building the tower and embedding them.
    """

    run_dir: Path
    epochs_completed: int
    global_step: int
    resumed_from_step: int | None
    epoch_summaries: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_class_accuracy: float | None = None
    text_embeddings_computed: int = 0
    text_embedding_seconds: float = 0.0


def validate_config(config: CaptionerConfig) -> None:
    """Raise HybridcapError naming the first invalid option of ``config``."""
    def invalid(name: str, requirement: str) -> HybridcapError:
        return HybridcapError(f"invalid captioner config: {name} must be {requirement}, got {getattr(config, name)!r}")

    for name in ["epochs", "batch_size", "head_hidden_dim", "word_embedding_dim", "decoder_hidden_dim", "decoder_layers", "log_every"]:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid(name, "a positive integer")
    for name in ["save_every", "max_shift"]:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise invalid(name, "0 or a positive integer")
    for name in ["learning_rate", "encoder_learning_rate"]:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise invalid(name, "a positive number")
    for name in ["weight_decay", "contrastive_weight"]:
        value = getattr(config, name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise invalid(name, "0 or a positive number")
    for name in ["label_smoothing", "dropout"]:
        if not 0.0 <= getattr(config, name) < 1.0:
            raise invalid(name, "in [0, 1)")
    for name, choices in [("device", DeviceChoice), ("precision", Precision), ("encoder", EncoderMode)]:
        if getattr(config, name) not in [choice.value for choice in choices]:
            raise invalid(name, "one of " + ", ".join(choice.value for choice in choices))


def _learning_rate_factor(step: int, total_steps: int) -> float:
    """Return the multiplier of the base learning rates at ``step``: linear warm-up, then cosine decay."""
    warmup_steps = max(1, round(WARMUP_FRACTION * total_steps))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return FINAL_LEARNING_RATE_FRACTION + (1 - FINAL_LEARNING_RATE_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def _load_gan_trunk(gan_run: Path, data_root: str, device: torch.device) -> DiscriminatorTrunk:
    from hybridcap.training.gan import load_discriminator

    if not gan_run.is_dir():
        raise RunFolderError(f"GAN run folder {gan_run} not found; run `hybridcap train-gan --data-root {data_root} --out {gan_run}` first or pass --gan with an existing run")
    discriminator = load_discriminator(gan_run, device)
    return DiscriminatorTrunk(discriminator)


def _warn_if_gan_split_differs(gan_run: Path, data: PreparedCifar100, reporter: TrainingReporter) -> None:
    """Warn when the GAN run recorded another train/validation split than ``data`` has.

    Only a warning: the GAN never saw labels, but its features may fit the images that moved into
    the validation split better than unseen ones.
    """
    from hybridcap.training.gan import STATE_FILE as GAN_STATE_FILE

    gan_state = gan_run / GAN_STATE_FILE
    if not gan_state.is_file():
        return
    try:
        recorded = _read_state_counters(gan_state).get("data_split")
    except RunFolderError:
        # The discriminator loaded, so only the state file is unreadable, and a warning is not worth failing for.
        return
    change = split_change(recorded, data)
    if change is not None:
        reporter.warning(f"the GAN run {gan_run} was trained on another split, so validation figures may be optimistic: {change}")


def _remove_run_files(run_dir: Path) -> None:
    """Delete an earlier run's files, the training state first, so a kill cannot resume a half-deleted run.

    The caption embedding cache stays: it is keyed by weights and caption text, so it is valid
    for any run.
    """
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _parameter_groups(model: Captioner, contrastive_loss: ClipContrastiveLoss, config: CaptionerConfig) -> list[dict[str, Any]]:
    """Split the learnable parameters into AdamW groups by learning rate and weight decay.

    Only matrices, convolution kernels and embeddings are decayed. Decaying biases, norm scales
    or the logit scale would only pull them towards values with no special meaning.
    """
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    named = [("encoder", parameter) for parameter in model.encoder.parameters()]
    named += [("head", parameter) for parameter in model.projection_head.parameters()]
    named += [("head", parameter) for parameter in model.decoder.parameters()]
    named += [("head", contrastive_loss.logit_scale)]
    for part, parameter in named:
        if parameter.requires_grad:
            groups.setdefault((part, parameter.ndim >= 2), []).append(parameter)

    # Sorted so that the group order, which the saved optimiser state depends on, never varies.
    groups_in_order = [{"params": parameters, "part": part, "decayed": decayed} for (part, decayed), parameters in sorted(groups.items())]
    _apply_rates(groups_in_order, config)
    return groups_in_order


def _apply_rates(param_groups: list[dict[str, Any]], config: CaptionerConfig) -> None:
    """Set each group's base learning rate and weight decay from ``config``, also after loading a saved state."""
    base_rates = {"encoder": config.encoder_learning_rate, "head": config.learning_rate}
    for group in param_groups:
        group["base_lr"] = base_rates[group["part"]]
        group["lr"] = group["base_lr"]
        group["weight_decay"] = config.weight_decay if group["decayed"] else 0.0


class _CaptionerTrainer:
    """The state of one ``train_captioner`` call, whose ``run_epoch`` does the work."""

    def __init__(
        self,
        config: CaptionerConfig,
        device: torch.device,
        data: PreparedCifar100,
        trunk: DiscriminatorTrunk,
        text_embeddings: torch.Tensor | None,
        reporter: TrainingReporter,
    ) -> None:
        self.config = config
        self.device = device
        self.reporter = reporter
        self.run_dir = Path(config.out)
        self.precision = Precision(config.precision)
        self.fine_names = data.fine_names
        self.data_split = data.split_record()

        train = data.split("train")
        validation = data.split("val")
        self.train_images = train.images.to(device)  # (N, 3, 32, 32) uint8, the whole split
        self.train_labels = train.fine_labels.to(device)  # (N,)
        self.val_images = validation.images.to(device)  # (M, 3, 32, 32) uint8
        self.val_labels = validation.fine_labels.to(device)  # (M,)
        self.steps_per_epoch = self.train_images.shape[0] // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs

        max_length = caption_token_length(data.captions)
        self.captions = CaptionTable.build(data.captions, data.vocabulary, max_length).to(device)
        self.text_embeddings = text_embeddings.to(device) if text_embeddings is not None else None  # (num_captions, 512)
        self.vocabulary = data.vocabulary

        self.network_config = CaptionerNetworkConfig(
            encoder_features=trunk.num_features,
            vocabulary_size=len(data.vocabulary),
            max_caption_length=max_length,
            pad_id=data.vocabulary.pad_id,
            start_id=data.vocabulary.start_id,
            end_id=data.vocabulary.end_id,
            head_hidden_dim=config.head_hidden_dim,
            word_embedding_dim=config.word_embedding_dim,
            decoder_hidden_dim=config.decoder_hidden_dim,
            decoder_layers=config.decoder_layers,
            dropout=config.dropout,
        )
        self.dcgan_config = trunk.discriminator.config
        # The head and decoder weights come from a seed of their own. Dropout draws from the
        # global RNG, seeded below from the run's seed and saved with the training state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derived_seed(config.seed, _SEED_WEIGHTS))
            self.model = Captioner(trunk, self.network_config)
        self.model.to(device)
        self.channels_last = uses_channels_last(device)
        if self.channels_last:
            self.model.encoder.to(memory_format=torch.channels_last)
        if config.encoder == EncoderMode.freeze.value:
            self.model.freeze_encoder()
        self.model.train()
        self.contrastive_loss = ClipContrastiveLoss().to(device)
        self.optimizer = torch.optim.AdamW(_parameter_groups(self.model, self.contrastive_loss, config))
        self.step_random = torch.Generator(device).manual_seed(derived_seed(config.seed, _SEED_STEPS))
        torch.manual_seed(derived_seed(config.seed, _SEED_STEPS))

        # Counters saved in the training state.
        self.epochs_completed = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.epoch_sums: dict[str, float] = {}
        self.epoch_logged_steps = 0
        self.best: dict[str, Any] | None = None
        self.saved_step: int | None = None
        self.history: list[dict[str, Any]] = []
        self.interval_sums: dict[str, torch.Tensor] = {}
        self.interval_steps = 0
        self.interval_start = time.perf_counter()

    # Checkpoints

    def _state_parts(self) -> dict[str, Any]:
        generators = {"steps": self.step_random}
        if self.device.type == "cuda":
            # Dropout on CUDA draws from the device's default generator, which must resume too.
            generators["cuda_default"] = torch.cuda.default_generators[self.device.index or 0]
        return {
            "modules": {"captioner": self.model, "contrastive_loss": self.contrastive_loss},
            "optimizers": {"adamw": self.optimizer},
            "generators": generators,
        }

    def _checkpoint_metadata(self, epoch: int, validation: dict[str, float]) -> dict[str, Any]:
        return {
            "network": self.network_config.to_dict(),
            "dcgan": self.dcgan_config.to_dict(),
            "epoch": epoch,
            "global_step": self.global_step,
            **validation,
            "training": self.config.to_dict(),
            "data_split": self.data_split,
        }

    def load(self) -> None:
        state = load_training_state(self.run_dir / STATE_FILE, **self._state_parts())
        _apply_rates(self.optimizer.param_groups, self.config)
        counters = state.counters
        if counters.get("steps_per_epoch") != self.steps_per_epoch:
            raise RunFolderError(
                f"cannot resume {self.run_dir}: it has {counters.get('steps_per_epoch')} steps per epoch but the "
                f"training split now gives {self.steps_per_epoch}; pass --fresh to start over or choose another --out"
            )
        self.epochs_completed = int(counters["epochs_completed"])
        self.step_in_epoch = int(counters["step_in_epoch"])
        self.global_step = int(counters["global_step"])
        self.epoch_sums = {name: float(value) for name, value in counters["epoch_sums"].items()}
        self.epoch_logged_steps = int(counters["epoch_logged_steps"])
        self.best = counters.get("best")
        self.saved_step = self.global_step
        self.history = read_log_rows(self.run_dir / HISTORY_FILE, self.global_step)

    def save_state(self) -> None:
        """Write the history and then the training state, so the state is never ahead of the rest."""
        parameters = [*self.model.parameters(), self.contrastive_loss.logit_scale]
        if not all(torch.isfinite(parameter).all() for parameter in parameters):
            raise self._diverged("a network weight is NaN or infinite")
        atomic_write_text(self.run_dir / HISTORY_FILE, "".join(json.dumps(row) + "\n" for row in self.history))
        counters = {
            "epochs_completed": self.epochs_completed,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch,
            "epoch_sums": self.epoch_sums,
            "epoch_logged_steps": self.epoch_logged_steps,
            "best": self.best,
            "dcgan": self.dcgan_config.to_dict(),
            "data_split": self.data_split,
        }
        save_training_state(self.run_dir / STATE_FILE, config=self.config.to_dict(), counters=counters, **self._state_parts())
        self.saved_step = self.global_step

    def save_weights(self, validation: dict[str, float]) -> bool:
        """Write ``last.safetensors``, and ``best.safetensors`` when validation improved, and return whether it improved."""
        tensors = dict(self.model.state_dict())
        tensors[LOGIT_SCALE_KEY] = self.contrastive_loss.logit_scale.detach()
        if not all(torch.isfinite(tensor).all() for tensor in tensors.values() if tensor.is_floating_point()):
            raise self._diverged("a network weight is NaN or infinite")
        metadata = self._checkpoint_metadata(self.epochs_completed, validation)
        save_weights(self.run_dir / LAST_FILE, tensors, metadata)

        improved = self.best is None or (validation["val_class_accuracy"], -validation["val_loss"]) > (self.best["val_class_accuracy"], -self.best["val_loss"])
        if improved:
            save_weights(self.run_dir / BEST_FILE, tensors, metadata)
            self.best = {"epoch": self.epochs_completed, **validation}
        return improved

    def _diverged(self, what: str) -> TrainingDivergedError:
        if self.saved_step is None:
            kept = "no checkpoint was written yet"
        else:
            kept = f"the checkpoint of step {self.saved_step} in {self.run_dir} is kept"
        return TrainingDivergedError(
            f"training diverged at step {self.global_step} (epoch {self.epochs_completed + 1}): {what}; {kept}; "
            "try a lower --learning-rate or --precision fp32"
        )

    # Training

    def learning_rate_factor(self) -> float:
        return _learning_rate_factor(self.global_step, self.total_steps)

    def train_step(self, batch_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        config = self.config
        factor = self.learning_rate_factor()
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

        labels = self.train_labels[batch_indices]  # (B,)
        images = augment_images(self.train_images[batch_indices], self.step_random, config.max_shift)  # (B, 3, 32, 32) uint8
        images = self._layout(normalize_images(images))  # (B, 3, 32, 32) in [-1, 1]
        caption_indices = self.captions.sample(labels, self.step_random)  # (B,)
        caption_ids = self.captions.token_ids[caption_indices]  # (B, T)

        with autocast(self.device, self.precision):
            image_embeddings = self.model.encode_images(images)  # (B, 512)
            logits = self.model.decoder(image_embeddings, caption_ids[:, :-1])  # (B, T - 1, V)
        losses = self._losses(image_embeddings, logits, caption_ids, caption_indices, labels, config.label_smoothing)

        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for group in self.optimizer.param_groups for p in group["params"]], MAX_GRADIENT_NORM)
        self.optimizer.step()
        values = {name: value.detach() for name, value in losses.items()}
        values["learning_rate"] = torch.tensor(config.learning_rate * factor)
        return values

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _losses(
        self,
        image_embeddings: torch.Tensor,
        logits: torch.Tensor,
        caption_ids: torch.Tensor,
        caption_indices: torch.Tensor,
        labels: torch.Tensor,
        label_smoothing: float,
    ) -> dict[str, torch.Tensor]:
        """Return the named loss parts and their weighted total ``loss``.

        The contrastive loss takes the fine class as group id: all captions of a class describe
        every image of it equally, so any same-class pair in the batch is a positive, including
        pairs that drew different captions of that class.
        """
        cross_entropy = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),  # (B * (T - 1), V)
            caption_ids[:, 1:].reshape(-1),  # (B * (T - 1),)
            ignore_index=self.network_config.pad_id,
            label_smoothing=label_smoothing,
        )
        losses = {"cross_entropy": cross_entropy}
        total = cross_entropy
        if self.text_embeddings is not None:
            parts = self.contrastive_loss(image_embeddings.float(), self.text_embeddings[caption_indices], labels)
            losses["contrastive"] = parts["contrastive"]
            losses["logit_scale"] = parts["logit_scale"]
            total = total + self.config.contrastive_weight * parts["contrastive"]
        losses["loss"] = total
        return losses

    def accumulate(self, values: dict[str, torch.Tensor]) -> None:
        # Sums stay on the device until the next flush, so steps do not wait for each other.
        for name, value in values.items():
            self.interval_sums[name] = self.interval_sums.get(name, 0.0) + value.float()
        self.interval_steps += 1

    def flush(self) -> None:
        """Turn the interval's sums into one history row, check them, and report them."""
        if self.interval_steps == 0:
            return
        means = {name: float(total) / self.interval_steps for name, total in self.interval_sums.items()}
        for name, value in means.items():
            if not math.isfinite(value):
                raise self._diverged(f"{name} is {value}")
        now = time.perf_counter()
        images_per_second = self.interval_steps * self.config.batch_size / max(now - self.interval_start, 1e-9)

        self.history.append({"kind": "train", "step": self.global_step, "epoch": self.epochs_completed + 1, **means})
        for name, value in means.items():
            self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value * self.interval_steps
        self.epoch_logged_steps += self.interval_steps
        self.reporter.steps_finished(self.step_in_epoch, {**means, "images_per_second": images_per_second})
        self.interval_sums = {}
        self.interval_steps = 0
        self.interval_start = now

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Return the validation loss parts and the class accuracy of greedy captions."""
        self.model.eval()
        try:
            sums: dict[str, float] = {}
            captions: list[str] = []
            count = self.val_images.shape[0]
            for start in range(0, count, VALIDATION_BATCH_SIZE):
                stop = min(start + VALIDATION_BATCH_SIZE, count)
                labels = self.val_labels[start:stop]  # (b,)
                images = self._layout(normalize_images(self.val_images[start:stop]))  # (b, 3, 32, 32)
                caption_indices = self.captions.fixed(labels, torch.arange(start, stop, device=self.device))  # (b,)
                caption_ids = self.captions.token_ids[caption_indices]  # (b, T)
                with autocast(self.device, self.precision):
                    image_embeddings = self.model.encode_images(images)  # (b, 512)
                    logits = self.model.decoder(image_embeddings, caption_ids[:, :-1])  # (b, T - 1, V)
                    token_rows = self.model.generate(images)
                losses = self._losses(image_embeddings, logits, caption_ids, caption_indices, labels, label_smoothing=0.0)
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value) * (stop - start)
                captions.extend(self.vocabulary.decode(row) for row in token_rows)
        finally:
            self.model.train()

        results = {f"val_{name}": total / count for name, total in sums.items() if name != "logit_scale"}
        results["val_class_accuracy"] = class_accuracy(captions, self.val_labels.tolist(), self.fine_names)
        self.last_val_examples = captions[:3]
        return results

    def write_loss_curve(self) -> None:
        from hybridcap.training.plots import save_loss_curve

        rows = [row for row in self.history if row.get("kind") == "train"]
        names = [name for name in ("loss", "cross_entropy", "contrastive") if rows and name in rows[-1]]
        series = {name: [row.get(name, float("nan")) for row in rows] for name in names}
        save_loss_curve(self.run_dir / LOSS_CURVE_FILE, [row["step"] for row in rows], series, title="Captioner training losses")

    def run_epoch(self, epoch_index: int) -> dict[str, float]:
        config = self.config
        permutation = epoch_permutation(config.seed, _SEED_PERMUTATION, epoch_index, self.train_images.shape[0]).to(self.device)
        self.reporter.epoch_started(epoch_index + 1, config.epochs, self.steps_per_epoch, self.step_in_epoch)
        epoch_start_time = time.perf_counter()
        epoch_start_step = self.global_step
        self.interval_start = epoch_start_time

        while self.step_in_epoch < self.steps_per_epoch:
            start = self.step_in_epoch * config.batch_size
            values = self.train_step(permutation[start : start + config.batch_size])
            self.accumulate(values)
            self.step_in_epoch += 1
            self.global_step += 1

            if self.global_step % config.log_every == 0:
                self.flush()
            epoch_ends = self.step_in_epoch == self.steps_per_epoch
            if config.save_every and self.global_step % config.save_every == 0 and not epoch_ends:
                self.flush()
                self.save_state()

        self.flush()
        train_seconds = time.perf_counter() - epoch_start_time
        summary = {name: total / max(self.epoch_logged_steps, 1) for name, total in self.epoch_sums.items()}
        validation = self.validate()
        self.epochs_completed += 1
        self.step_in_epoch = 0
        self.epoch_sums = {}
        self.epoch_logged_steps = 0

        improved = self.save_weights(validation)
        summary.update(validation)
        summary["images_per_second"] = (self.global_step - epoch_start_step) * config.batch_size / max(train_seconds, 1e-9)
        summary["seconds"] = time.perf_counter() - epoch_start_time
        self.history.append({"kind": "epoch", "step": self.global_step, "epoch": self.epochs_completed, "best": improved, **summary})
        self.write_loss_curve()
        self.save_state()
        self.reporter.epoch_finished(epoch_index + 1, summary)
        examples = "; ".join(f'"{caption}"' for caption in self.last_val_examples)
        self.reporter.info(f"epoch {epoch_index + 1}: validation captions {examples}")
        return summary


def _write_caption_files(run_dir: Path, data: PreparedCifar100) -> None:
    atomic_write_json(run_dir / VOCABULARY_FILE, data.vocabulary.to_dict())
    atomic_write_json(
        run_dir / CAPTIONS_FILE,
        {
            "fine_names": data.fine_names,
            "coarse_names": data.coarse_names,
            "fine_to_coarse": data.fine_to_coarse,
            "captions": data.captions,
        },
    )


def train_captioner(
    config: CaptionerConfig,
    *,
    reporter: TrainingReporter | None = None,
    fresh: bool = False,
    text_encoder: FrozenTextEncoder | None = None,
) -> CaptionerResult:
    """Train or resume a captioner run in ``config.out`` until ``config.epochs`` epochs are finished.

    Every check (config, data, GAN run, run folder) runs before the first file is written.
    When the run folder has a training state and ``fresh`` is False, training resumes from it.

    Args:
        config: the run's options.
        reporter: receives progress events; the default reports nothing.
        fresh: delete the run folder's earlier files (but not its caption embedding cache) and
            start over.
        text_encoder: an already built text tower matching ``config``'s CLIP options, used
            instead of building one when captions are missing from the cache.

    Raises:
        DataError: the prepared data folder is missing, incomplete or too small for one batch.
        RunFolderError: the GAN run is missing or incomplete, or the run folder was made with
            an incompatible config or another GAN width.
        TrainingDivergedError: a loss or weight became NaN or infinite; the last good
            checkpoint stays in the run folder.
        HybridcapError: the config is invalid, the CLIP weights are unavailable, or the run
            folder cannot be written.
    """
    reporter = reporter or TrainingReporter()
    validate_config(config)
    data_root = Path(config.data_root) if config.data_root is not None else default_data_root()
    config = dataclasses.replace(config, data_root=str(data_root.expanduser().resolve()))
    run_dir = Path(config.out)
    device = resolve_device(config.device)

    reject_other_run_folder(run_dir, "captioner run")
    remove_stale_temporary_files(run_dir, (*RUN_FILES, TEXT_EMBEDDINGS_FILE))
    resume = False if fresh else saved_config_to_resume(run_dir, STATE_FILE, CONFIG_FILE, config.to_dict(), RESUME_KEYS) is not None
    data = load_prepared(config.data_root)
    train_count = len(data.split("train"))
    if train_count < config.batch_size:
        raise DataError(f"the training split in {config.data_root} has {train_count} images, fewer than one batch of {config.batch_size}; lower --batch-size")
    if len(data.split("val")) == 0:
        raise DataError(f"the validation split in {config.data_root} is empty, so no checkpoint could be selected; run `{data.data_command(val_per_class=50)}`")
    trunk = _load_gan_trunk(Path(config.gan_run), str(config.data_root), device)
    if resume:
        counters = _read_state_counters(run_dir / STATE_FILE)
        _check_same_gan_width(run_dir, counters.get("dcgan"), trunk)
        reject_resume_on_other_split(run_dir, counters.get("data_split"), data)
    _warn_if_gan_split_differs(Path(config.gan_run), data, reporter)

    if fresh:
        _remove_run_files(run_dir)

    result = CaptionerResult(run_dir=run_dir, epochs_completed=0, global_step=0, resumed_from_step=None)
    text_embeddings = None
    if config.contrastive_weight > 0:
        cache = cached_caption_embeddings(
            run_dir / TEXT_EMBEDDINGS_FILE,
            [caption for class_captions in data.captions for caption in class_captions],
            config.text_encoder_spec(),
            text_encoder=text_encoder,
            device=device,
        )
        text_embeddings = cache.embeddings  # (num_captions, 512)
        result.text_embeddings_computed = cache.computed
        result.text_embedding_seconds = cache.seconds
        if cache.computed:
            reporter.info(f"embedded {cache.computed} captions with the {config.text_encoder_spec().describe()} text tower in {cache.seconds:.1f} s")
        else:
            reporter.info(f"caption embeddings loaded from {run_dir / TEXT_EMBEDDINGS_FILE}")

    trainer = _CaptionerTrainer(config, device, data, trunk, text_embeddings, reporter)
    if resume:
        trainer.load()
    # Written only once the text tower has loaded, so missing CLIP weights leave no run folder behind.
    # A finished run asked for fewer epochs keeps them, and its config records how many it has.
    atomic_write_json(run_dir / CONFIG_FILE, {**config.to_dict(), "epochs": max(config.epochs, trainer.epochs_completed)})
    _write_caption_files(run_dir, data)

    if resume:
        if trainer.epochs_completed < config.epochs:
            reporter.info(
                f"resuming {run_dir} at epoch {trainer.epochs_completed + 1}, step {trainer.step_in_epoch} of "
                f"{trainer.steps_per_epoch} (global step {trainer.global_step})"
            )
    else:
        reporter.info(
            f"training a new captioner in {run_dir} on {device.type} ({config.precision}): {train_count} images, "
            f"{trainer.steps_per_epoch} steps per epoch, encoder {config.encoder}"
        )

    result.resumed_from_step = trainer.saved_step
    if trainer.epochs_completed >= config.epochs:
        reporter.info(f"{run_dir} has already finished {trainer.epochs_completed} epochs; pass --epochs above that to train further")
    for epoch_index in range(trainer.epochs_completed, config.epochs):
        result.epoch_summaries.append(trainer.run_epoch(epoch_index))

    result.epochs_completed = trainer.epochs_completed
    result.global_step = trainer.global_step
    if trainer.best is not None:
        result.best_epoch = int(trainer.best["epoch"])
        result.best_val_class_accuracy = float(trainer.best["val_class_accuracy"])
    return result


def _check_same_gan_width(run_dir: Path, saved: dict[str, Any] | None, trunk: DiscriminatorTrunk) -> None:
    """Raise RunFolderError when ``saved``, the GAN network config the run recorded, differs from the GAN of ``trunk``."""
    current = trunk.discriminator.config.to_dict()
    if saved is not None and saved != current:
        raise RunFolderError(
            f"cannot resume {run_dir}: it was trained on a GAN of width {saved.get('width')} but --gan has width "
            f"{current.get('width')}; pass --gan with the original GAN run, or --fresh to start over"
        )


def _read_state_counters(path: Path) -> dict[str, Any]:
    """Return the counters of a training-state file without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
        return dict(json.loads(metadata.get(CONFIG_METADATA_KEY, "{}")).get("counters", {}))
    except (SafetensorError, OSError, json.JSONDecodeError, AttributeError) as error:
        raise RunFolderError(f"cannot read {path} ({error}); pass --fresh to start over") from error
