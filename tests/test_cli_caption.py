"""`hybridcap caption`: captions for image files, per-file errors, run selection and JSON output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hybridcap.cli.caption import latest_captioner_run
from hybridcap.cli.main import app
from hybridcap.errors import HybridcapError

runner = CliRunner()


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    generator = np.random.default_rng(0)
    paths = {
        "photo": folder / "photo.jpg",
        "icon": folder / "icon.png",
        "gray": folder / "gray16.png",
    }
    Image.fromarray(generator.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(paths["photo"])
    Image.new("RGBA", (40, 40), (255, 0, 0, 128)).save(paths["icon"])
    Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(paths["gray"])
    return paths


def test_cli_caption_files(tiny_captioner_run: Path, images: dict[str, Path]) -> None:
    result = runner.invoke(app, ["caption", str(images["photo"]), str(images["icon"]), "--run", str(tiny_captioner_run), "--device", "cpu"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{images['photo']}: ")
    assert lines[1].startswith(f"{images['icon']}: ")
    assert result.stderr == ""


def test_cli_caption_bad_files_reported(tiny_captioner_run: Path, images: dict[str, Path], tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(images["photo"].read_bytes()[:2000])
    missing = tmp_path / "missing.png"

    result = runner.invoke(
        app,
        ["caption", str(fake), str(images["gray"]), str(truncated), str(missing), "--run", str(tiny_captioner_run), "--device", "cpu"],
    )

    assert result.exit_code == 1
    error_lines = result.stderr.strip().splitlines()
    assert len(error_lines) == 3
    assert error_lines[0] == f"error: {fake}: not an image file that Pillow can read"
    assert error_lines[1].startswith(f"error: {truncated}: cannot decode the image")
    assert error_lines[2] == f"error: {missing}: file not found"
    assert result.stdout.startswith(f"{images['gray']}: ")
    assert "Traceback" not in result.output


def test_cli_caption_folder_json_top_k(tiny_captioner_run: Path, images: dict[str, Path]) -> None:
    folder = images["photo"].parent
    result = runner.invoke(app, ["caption", str(folder), "--run", str(tiny_captioner_run), "--beam", "3", "--top-k", "2", "--json", "--device", "cpu"])

    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [Path(entry["path"]).name for entry in entries] == ["gray16.png", "icon.png", "photo.jpg"]
    for entry in entries:
        assert len(entry["beams"]) == 2
        assert entry["caption"] == entry["beams"][0]["caption"]
        assert entry["beams"][0]["log_probability"] >= entry["beams"][1]["log_probability"]


def test_cli_caption_json_includes_errors(tiny_captioner_run: Path, images: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    result = runner.invoke(app, ["caption", str(missing), str(images["icon"]), "--run", str(tiny_captioner_run), "--json"])

    assert result.exit_code == 1
    entries = json.loads(result.stdout)
    assert entries[0] == {"path": str(missing), "error": f"{missing}: file not found"}
    assert "caption" in entries[1]


def test_cli_caption_top_k_above_beam(tiny_captioner_run: Path, images: dict[str, Path]) -> None:
    result = runner.invoke(app, ["caption", str(images["icon"]), "--run", str(tiny_captioner_run), "--beam", "2", "--top-k", "3"])

    assert result.exit_code == 1
    assert "--top-k 3 is more than --beam 2" in result.stderr


def test_cli_caption_no_run_found(tmp_path: Path, images: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["caption", str(images["icon"])])

    assert result.exit_code == 1
    assert "no captioner run found under runs/" in result.stderr


def test_latest_captioner_run_by_checkpoint_time(tmp_path: Path) -> None:
    for name, mtime in (("old", 1_000_000), ("new", 2_000_000), ("gan", 3_000_000)):
        run = tmp_path / "experiment" / name
        run.mkdir(parents=True)
        (run / "best.safetensors").write_bytes(b"")
        os.utime(run / "best.safetensors", (mtime, mtime))
        if name != "gan":
            (run / "vocabulary.json").write_text("{}")
            (run / "captions.json").write_text("{}")
    assert latest_captioner_run(tmp_path) == tmp_path / "experiment" / "new"
    with pytest.raises(HybridcapError, match="no captioner run found"):
        latest_captioner_run(tmp_path / "experiment" / "gan")


def test_cli_caption_default_run_subprocess(tiny_captioner_run: Path, images: dict[str, Path], tmp_path: Path) -> None:
    # A fresh interpreter shows what the command imports; the latest run under runs/ is used.
    workspace = tmp_path / "workspace"
    shutil.copytree(tiny_captioner_run, workspace / "runs" / "experiment" / "captioner")
    script = (
        "import sys\n"
        "from hybridcap.cli.main import app\n"
        "try:\n"
        f"    app(['caption', {str(images['icon'])!r}, '--device', 'cpu'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code in (0, None), exit.code\n"
        "print('open_clip imported:', 'open_clip' in sys.modules)\n"
    )
    repository = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=workspace,
        env={**os.environ, "PYTHONPATH": str(repository)},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"{images['icon']}: ")
    assert "open_clip imported: False" in completed.stdout
    assert completed.stderr.strip() == f"using the latest captioner run, {Path('runs') / 'experiment' / 'captioner'}"
