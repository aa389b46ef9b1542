"""``hybridcap run`` options: layering, type checks, and errors raised before any stage runs."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from hybridcap.cli.main import app
from hybridcap.errors import HybridcapError
from hybridcap.training.pipeline import Preset, resolve_config


def test_resolve_config_layers_in_order() -> None:
    file_values = {"gan": {"epochs": 7, "width": 32}, "captioner": {"epochs": 9}}
    overrides = {"gan": {"epochs": 2}, "captioner": {"contrastive_weight": None}}

    config = resolve_config(Preset.cpu, file_values, overrides)

    assert config.gan == {"epochs": 2, "width": 32}
    assert config.captioner == {"epochs": 9}
    assert config.precision == "bf16"


def test_resolve_config_metrics_string() -> None:
    config = resolve_config(None, None, {"eval": {"metrics": "cider,bleu-4"}})

    assert config.eval.metrics == ["bleu_4", "cider"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gan": {"epochs": "abc"}}, "invalid value 'abc' for epochs in [gan]: expected an integer"),
        ({"gan": {"adam_betas": 0.5}}, "invalid value 0.5 for adam_betas in [gan]"),
        ({"captioner": {"dropout": "high"}}, "invalid value 'high' for dropout in [captioner]: expected a number"),
        ({"data": {"val_per_class": "abc"}}, "invalid value 'abc' for val_per_class in [data]"),
        ({"seed": "abc"}, "invalid value 'abc' for seed: expected an integer"),
        ({"device": "tpu"}, "invalid value 'tpu' for device: expected one of auto, cpu, cuda, mps"),
        ({"precision": "fp16"}, "invalid value 'fp16' for precision: expected one of fp32, bf16"),
        ({"gan": 3}, "invalid value 3 for gan: expected a [gan] table"),
        ({"gan": {"epoch": 3}}, "unknown key(s) epoch in [gan]"),
        ({"captioner": {"gan_run": "elsewhere"}}, "unknown key(s) gan_run in [captioner]"),
        ({"eval": {"beam_size": 0}}, "invalid eval beam_size 0"),
        ({"eval": {"metrics": ["bleu_9"]}}, "unknown metric 'bleu_9'"),
        ({"eval": {"tokenizer": "nltk"}}, "invalid eval tokenizer 'nltk'"),
        ({"data": {"archive": "a.tar.gz", "url": "http://127.0.0.1/a.tar.gz"}}, "give at most one data source"),
    ],
)
def test_resolve_config_rejects(overrides: dict, expected: str) -> None:
    with pytest.raises(HybridcapError) as raised:
        resolve_config(None, None, overrides)

    assert expected in str(raised.value)


def _run(tmp_path: Path, *extra: str) -> tuple[int, str]:
    arguments = ["run", "--archive", str(tmp_path / "missing.tar.gz"), "--root", str(tmp_path / "data"), "--out", str(tmp_path / "experiment"), "--clip-pretrained", "none", *extra]
    result = CliRunner().invoke(app, arguments)
    return result.exit_code, result.output


def test_run_checks_captioner_before_training(tmp_path: Path) -> None:
    exit_code, output = _run(tmp_path, "--contrastive-weight", "-1")

    assert exit_code == 1
    assert "contrastive_weight must be 0 or a positive number" in output
    assert "Traceback" not in output
    assert not (tmp_path / "experiment").exists()
    assert not (tmp_path / "data").exists()


def test_run_checks_clip_weights_file(tmp_path: Path) -> None:
    exit_code, output = _run(tmp_path, "--clip-weights", str(tmp_path / "absent.safetensors"))

    assert exit_code == 1
    assert "absent.safetensors not found" in output
    assert not (tmp_path / "experiment").exists()


def test_run_without_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_folder = tmp_path / "bin"
    empty_folder.mkdir()
    monkeypatch.setenv("PATH", str(empty_folder))

    exit_code, output = _run(tmp_path)

    assert exit_code == 1
    assert "java was not found on PATH" in output
    assert "--set eval.tokenizer=simple" in output
    assert not (tmp_path / "experiment").exists()


def test_run_invalid_toml(tmp_path: Path) -> None:
    config = tmp_path / "experiment.toml"
    config.write_text("[gan\nepochs = 1\n")

    exit_code, output = _run(tmp_path, "--config", str(config))

    assert exit_code == 1
    assert f"invalid TOML in {config}" in output


def test_run_set_without_equals(tmp_path: Path) -> None:
    exit_code, output = _run(tmp_path, "--set", "gan.epochs")

    assert exit_code == 1
    assert "invalid --set 'gan.epochs'" in output


def test_run_checks_clip_download_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))

    exit_code, output = _run(tmp_path, "--clip-pretrained", "openai", "--contrastive-weight", "0.5")

    assert exit_code == 1
    assert "CLIP weights ViT-B-16 (openai) are not in the Hugging Face cache" in output
    assert not (tmp_path / "experiment").exists()
    assert not (tmp_path / "data").exists()


def test_run_checks_val_per_class_first(tmp_path: Path) -> None:
    exit_code, output = _run(tmp_path, "--set", "data.val_per_class=-1")

    assert exit_code == 1
    assert "data.val_per_class must be 0 or more, got -1" in output
    assert not (tmp_path / "experiment").exists()


def test_run_without_java_names_only_needed_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_folder = tmp_path / "bin"
    empty_folder.mkdir()
    monkeypatch.setenv("PATH", str(empty_folder))

    exit_code, output = _run(tmp_path, "--set", "eval.tokenizer=simple", "--set", "eval.metrics=meteor,cider")

    assert exit_code == 1
    assert "needs it for METEOR;" in output
    assert "--set eval.metrics=cider" in output
