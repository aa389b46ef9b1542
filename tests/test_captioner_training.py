import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch

from captioner_helpers import tiny_config, with_cache
from hybridcap.datasets import load_prepared
from hybridcap.errors import DataError, HybridcapError, RunFolderError, TrainingDivergedError
from hybridcap.io import load_weights, read_json, save_weights
from hybridcap.training.captioner import CaptionerConfig, train_captioner
from hybridcap.training.gan import GanConfig, load_discriminator, train_gan
from hybridcap.training.inference import class_accuracy, load_captioner
from hybridcap.training.reporting import TrainingReporter

# The captioner_data fixture has 50 training images, so tiny_config's batches of 10 give 5 steps.
STEPS_PER_EPOCH = 5


class SimulatedKill(Exception):
    """Raised from a reporter to stop training the way a killed process would."""


class EventReporter(TrainingReporter):
    """Record every event in order, and raise SimulatedKill at a chosen global step."""

    def __init__(self, events: list[str] | None = None, kill_at_step: int | None = None) -> None:
        self.events = events if events is not None else []
        self.kill_at_step = kill_at_step
        self.epoch = 0
        self.summaries: list[dict[str, float]] = []

    def epoch_started(self, epoch: int, total_epochs: int, total_steps: int, completed_steps: int) -> None:
        self.epoch = epoch
        self.events.append(f"epoch_started {epoch}")

    def steps_finished(self, completed_steps: int, values: Mapping[str, float]) -> None:
        self.events.append(f"steps_finished {completed_steps}")
        if self.kill_at_step is not None and (self.epoch - 1) * STEPS_PER_EPOCH + completed_steps >= self.kill_at_step:
            raise SimulatedKill

    def epoch_finished(self, epoch: int, summary: Mapping[str, float]) -> None:
        self.summaries.append(dict(summary))

    def info(self, message: str) -> None:
        self.events.append(f"info {message}")


def assert_same_tensor_file(first: Path, second: Path) -> None:
    first_tensors, first_metadata = load_weights(first)
    second_tensors, _ = load_weights(second)
    assert sorted(first_tensors) == sorted(second_tensors)
    for name, tensor in first_tensors.items():
        assert torch.equal(tensor, second_tensors[name]), name


def test_captioner_training_overfits_tiny_set(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=40))

    loaded = load_captioner(out, "last")
    train = load_prepared(captioner_data).split("train")
    captions = loaded.caption(train.images)

    assert result.text_embeddings_computed == 0
    assert class_accuracy(captions, train.fine_labels.tolist(), loaded.fine_names) == 1.0
    assert all(caption in sum(loaded.captions, []) for caption in captions)
    assert result.best_val_class_accuracy is not None and result.best_val_class_accuracy > 0.1


def test_captioner_training_writes_run_folder(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    reporter = EventReporter()

    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, out), reporter=reporter)

    names = {path.name for path in out.iterdir()}
    expected = {"config.json", "best.safetensors", "last.safetensors", "vocabulary.json", "captions.json", "text_embeddings.safetensors", "training_state.safetensors", "history.jsonl", "loss_curve.png"}
    assert names == expected
    assert result.epochs_completed == 2
    assert result.global_step == 2 * STEPS_PER_EPOCH
    data = load_prepared(captioner_data)
    captions = read_json(out / "captions.json")
    assert captions["fine_names"] == data.fine_names
    assert captions["captions"] == data.captions
    assert captions["fine_to_coarse"] == data.fine_to_coarse
    assert read_json(out / "vocabulary.json") == data.vocabulary.to_dict()
    assert read_json(out / "config.json")["clip_pretrained"] == "none"
    _, metadata = load_weights(out / "last.safetensors")
    assert metadata["epoch"] == 2
    assert metadata["dcgan"] == {"latent_dim": 16, "width": 8}
    assert metadata["training"]["clip_pretrained"] == "none"
    assert set(reporter.summaries[0]) >= {"loss", "cross_entropy", "contrastive", "logit_scale", "val_loss", "val_class_accuracy", "images_per_second"}
    rows = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if row["kind"] == "train"] == list(range(1, 11))
    assert [row["epoch"] for row in rows if row["kind"] == "epoch"] == [1, 2]
    assert all(row["loss"] == pytest.approx(row["cross_entropy"] + row["contrastive"]) for row in rows if row["kind"] == "train")


def test_captioner_text_tower_frozen_and_only_used_for_cache(captioner_data: Path, captioner_gan_run: Path, random_text_encoder, tmp_path: Path):
    tower = random_text_encoder.tower
    before = {name: tensor.clone() for name, tensor in tower.state_dict().items()}
    events: list[str] = []
    hook = tower.register_forward_hook(lambda module, inputs, output: events.append("text_tower"))
    try:
        train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run"), reporter=EventReporter(events), text_encoder=random_text_encoder)
    finally:
        hook.remove()

    first_epoch = events.index("epoch_started 1")
    assert events[:first_epoch].count("text_tower") >= 1
    assert "text_tower" not in events[first_epoch:]
    after = tower.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)
    # Every optimiser moment in the saved state belongs to a trainable captioner parameter.
    state, metadata = load_weights(tmp_path / "run" / "training_state.safetensors")
    moment_shapes = sorted(tuple(tensor.shape) for name, tensor in state.items() if name.startswith("optimizer.") and name.endswith(".exp_avg"))
    loaded = load_captioner(tmp_path / "run", "last")
    trainable_shapes = sorted([tuple(parameter.shape) for parameter in loaded.model.parameters()] + [()])
    assert moment_shapes == trainable_shapes
    assert not any(name.startswith("module.text") or ".tower." in name for name in state)


def test_captioner_resume_after_kill_matches_uninterrupted(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    config = tiny_config(captioner_data, captioner_gan_run, with_cache(tmp_path / "straight", captioner_embedding_cache), epochs=3, save_every=3, dropout=0.2, max_shift=2)
    train_captioner(config)
    killed = dataclasses.replace(config, out=str(with_cache(tmp_path / "killed", captioner_embedding_cache)))

    with pytest.raises(SimulatedKill):
        train_captioner(killed, reporter=EventReporter(kill_at_step=8))
    reporter = EventReporter()
    result = train_captioner(killed, reporter=reporter)

    # The kill came at step 8, after the save at step 6, so training resumed mid-epoch 2.
    assert result.resumed_from_step == 6
    assert any("resuming" in event and "step 1 of 5" in event for event in reporter.events)
    for name in ["last.safetensors", "best.safetensors", "training_state.safetensors"]:
        assert_same_tensor_file(tmp_path / "straight" / name, tmp_path / "killed" / name)
    assert (tmp_path / "straight" / "history.jsonl").read_text().count("\n") == (tmp_path / "killed" / "history.jsonl").read_text().count("\n")


def test_captioner_frozen_encoder_keeps_gan_weights(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", encoder="freeze", contrastive_weight=0.0))

    trained, _ = load_weights(tmp_path / "run" / "last.safetensors")
    discriminator = load_discriminator(captioner_gan_run)
    for name, tensor in discriminator.state_dict().items():
        if name.startswith("head."):
            assert f"encoder.discriminator.{name}" not in trained
        else:
            assert torch.equal(trained[f"encoder.discriminator.{name}"], tensor), name


def test_captioner_contrastive_weight_zero_skips_text_encoder(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", epochs=1, contrastive_weight=0.0, clip_pretrained="openai"))

    assert not (tmp_path / "run" / "text_embeddings.safetensors").exists()
    assert "contrastive" not in result.epoch_summaries[0]
    assert result.epoch_summaries[0]["loss"] == pytest.approx(result.epoch_summaries[0]["cross_entropy"])


def test_captioner_divergence_keeps_last_good_checkpoint(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    config = tiny_config(captioner_data, captioner_gan_run, out, epochs=1)
    train_captioner(config)
    state_before = (out / "training_state.safetensors").read_bytes()
    last_before = (out / "last.safetensors").read_bytes()
    history_before = (out / "history.jsonl").read_text()

    # AdamW moves every weight by about the learning rate, so 1e30 overflows within two steps.
    with pytest.raises(TrainingDivergedError) as raised:
        train_captioner(dataclasses.replace(config, epochs=2, learning_rate=1e30, encoder_learning_rate=1e30))

    message = str(raised.value)
    assert f"the checkpoint of step {STEPS_PER_EPOCH} in" in message
    assert "\n" not in message
    assert (out / "training_state.safetensors").read_bytes() == state_before
    assert (out / "last.safetensors").read_bytes() == last_before
    assert (out / "history.jsonl").read_text() == history_before


def test_captioner_fresh_starts_over(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1))

    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1, seed=5), fresh=True)

    assert result.resumed_from_step is None
    assert result.text_embeddings_computed == 0  # the cache survives --fresh
    assert read_json(out / "config.json")["seed"] == 5


def test_captioner_finished_run_trains_nothing(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1))
    before = (out / "training_state.safetensors").read_bytes()
    reporter = EventReporter()

    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1), reporter=reporter)

    assert result.epoch_summaries == []
    assert any("already finished 1 epochs" in event for event in reporter.events)
    assert (out / "training_state.safetensors").read_bytes() == before


def test_captioner_fewer_epochs_keeps_config(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=2))
    reporter = EventReporter()

    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1), reporter=reporter)

    assert result.epoch_summaries == []
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    assert not any(event.startswith("info resuming") for event in reporter.events)


def test_captioner_missing_gan_run_raises(captioner_data: Path, tmp_path: Path):
    with pytest.raises(RunFolderError, match=r"GAN run folder .*absent not found; run `hybridcap train-gan --data-root .* --out"):
        train_captioner(tiny_config(captioner_data, tmp_path / "absent", tmp_path / "run"))

    assert not (tmp_path / "run").exists()


def test_captioner_incomplete_gan_run_raises(captioner_data: Path, tmp_path: Path):
    (tmp_path / "gan").mkdir()

    with pytest.raises(RunFolderError, match="no trained discriminator in"):
        train_captioner(tiny_config(captioner_data, tmp_path / "gan", tmp_path / "run"))


def test_captioner_gan_width_mismatch_on_resume_raises(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    config = tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", epochs=1, contrastive_weight=0.0)
    train_captioner(config)
    wider = tmp_path / "wide_gan"
    train_gan(GanConfig(data_root=str(captioner_data), out=str(wider), epochs=1, batch_size=10, width=12, latent_dim=16, save_every=0, device="cpu"))

    with pytest.raises(RunFolderError, match="trained on a GAN of width 8 but --gan has width 12"):
        train_captioner(dataclasses.replace(config, epochs=2, gan_run=str(wider)))


def test_captioner_changed_config_on_resume_raises(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    config = tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", epochs=1, contrastive_weight=0.0)
    train_captioner(config)

    with pytest.raises(RunFolderError, match="decoder_layers is 1 in the saved run but 2 now; pass --fresh"):
        train_captioner(dataclasses.replace(config, decoder_layers=2))


def test_captioner_unprepared_data_raises(captioner_gan_run: Path, tmp_path: Path):
    with pytest.raises(DataError, match="run `hybridcap data"):
        train_captioner(tiny_config(tmp_path / "no_data", captioner_gan_run, tmp_path / "run"))

    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "name"),
    [({"epochs": 0}, "epochs"), ({"dropout": 1.0}, "dropout"), ({"encoder": "thaw"}, "encoder"), ({"contrastive_weight": -1.0}, "contrastive_weight")],
)
def test_captioner_invalid_config_raises(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path, change: dict, name: str):
    with pytest.raises(HybridcapError, match=f"invalid captioner config: {name} must be"):
        train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", **change))


def test_captioner_bf16_trains_on_cpu(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    result = train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", epochs=1, precision="bf16", contrastive_weight=0.0))

    assert result.epochs_completed == 1
    assert torch.isfinite(torch.tensor(result.epoch_summaries[0]["loss"]))


def test_load_captioner_wrong_shape_names_tensor(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1))
    tensors, metadata = load_weights(out / "best.safetensors")
    tensors["decoder.output.bias"] = torch.zeros(3)
    del tensors["decoder.output.weight"]
    save_weights(out / "best.safetensors", tensors, metadata)

    with pytest.raises(RunFolderError) as raised:
        load_captioner(out)

    message = str(raised.value)
    assert "1 missing, e.g. decoder.output.weight" in message
    assert "1 of another shape, e.g. decoder.output.bias is (3,), expected" in message


def test_load_captioner_missing_checkpoint_raises(tmp_path: Path):
    with pytest.raises(RunFolderError, match="captioner run folder .* not found"):
        load_captioner(tmp_path / "absent")
    (tmp_path / "run").mkdir()
    with pytest.raises(RunFolderError, match="no best checkpoint in"):
        load_captioner(tmp_path / "run")


def test_load_captioner_captions_with_beam_search(captioner_data: Path, captioner_gan_run: Path, captioner_embedding_cache: Path, tmp_path: Path):
    out = with_cache(tmp_path / "run", captioner_embedding_cache)
    train_captioner(tiny_config(captioner_data, captioner_gan_run, out, epochs=1))
    loaded = load_captioner(out, "best")
    images = load_prepared(captioner_data).split("val").images

    greedy = loaded.caption(images, batch_size=3)
    beam = loaded.caption(images, beam_size=3)

    assert len(greedy) == len(beam) == 10
    assert all(isinstance(caption, str) and caption for caption in beam)
    assert not loaded.model.training
    assert loaded.fine_to_coarse == load_prepared(captioner_data).fine_to_coarse
    assert loaded.config["network"]["vocabulary_size"] == len(loaded.vocabulary)


def test_load_captioner_does_not_import_open_clip(captioner_data: Path, captioner_gan_run: Path, tmp_path: Path):
    train_captioner(tiny_config(captioner_data, captioner_gan_run, tmp_path / "run", epochs=1, contrastive_weight=0.0))
    code = (
        "import sys, torch; from hybridcap.training.inference import load_captioner; "
        f"loaded = load_captioner({str(tmp_path / 'run')!r}); loaded.caption(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)); "
        "print('open_clip' in sys.modules)"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True)

    assert completed.stdout.strip() == "False"


def test_captioner_config_round_trip():
    config = CaptionerConfig(epochs=3, clip_weights="/weights.safetensors", encoder="freeze")

    assert CaptionerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
