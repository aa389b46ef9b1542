"""``hybridcap caption``: caption image files with a trained captioner run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from hybridcap.cli.console import console, error_console, handle_errors
from hybridcap.cli.options import MAX_BEAM_WIDTH
from hybridcap.device import DeviceChoice
from hybridcap.errors import HybridcapError

DEFAULT_RUNS_ROOT = Path("runs")
CHECKPOINT_FILE = "best.safetensors"
# Files that only a captioner run has next to its checkpoint.
CAPTIONER_MARKER_FILES = ("vocabulary.json", "captions.json")
BATCH_SIZE = 256
# Up to this many images are captioned on one CPU thread.
FEW_IMAGES = 16


def latest_captioner_run(runs_root: Path = DEFAULT_RUNS_ROOT) -> Path:
    """Return the captioner run under ``runs_root`` whose best checkpoint was written last.

    Raises:
        HybridcapError: no folder under ``runs_root`` contains a captioner checkpoint.
    """
    candidates = []
    if runs_root.is_dir():
        for checkpoint in runs_root.rglob(CHECKPOINT_FILE):
            run_dir = checkpoint.parent
            if all((run_dir / name).is_file() for name in CAPTIONER_MARKER_FILES):
                candidates.append((checkpoint.stat().st_mtime, run_dir))
    if not candidates:
        raise HybridcapError(
            f"no captioner run found under {runs_root}/ (a folder with {CHECKPOINT_FILE}); "
            "train one with `hybridcap train-captioner` or pass --run RUN_DIR"
        )
    return max(candidates)[1]


@handle_errors
def caption_command(
    images: Annotated[list[Path], typer.Argument(help="Image files, or folders whose image files are all captioned.", show_default=False)],
    run: Annotated[Path | None, typer.Option("--run", help="Captioner run folder. Default: the latest one under runs/.", show_default=False)] = None,
    beam: Annotated[int, typer.Option(min=1, max=MAX_BEAM_WIDTH, help="Beam width; 1 decodes greedily.")] = 3,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Show this many best beams per image with their log-probabilities.")] = 1,
    device: Annotated[DeviceChoice, typer.Option(help="Device to run the captioner on.")] = DeviceChoice.auto,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON list with an entry per image instead of text.")] = False,
) -> None:
    """Caption image files of any size and format; they are resized to 32x32 like the training images.

    A file that cannot be read gets one error line and the others are still captioned; the exit
    code is then 1.
    """
    if top_k > beam:
        raise HybridcapError(f"--top-k {top_k} is more than --beam {beam}; use --beam {top_k} or more")
    if run is not None:
        run_dir = run
    else:
        run_dir = latest_captioner_run()
        # On stderr, so that --json output stays one JSON document.
        error_console.print(f"using the latest captioner run, {run_dir}", highlight=False, markup=False, soft_wrap=True)

    # Torch is imported here, not at module level, to keep `hybridcap --help` fast.
    import torch

    from hybridcap.datasets import normalize_images
    from hybridcap.datasets.images import expand_image_paths, load_image
    from hybridcap.device import resolve_device
    from hybridcap.training.inference import images_per_batch, load_captioner

    entries: list[dict[str, Any]] = []
    loaded_images = []
    loaded_entries = []
    for argument in images:
        try:
            paths = expand_image_paths([argument])
        except HybridcapError as error:
            entries.append({"path": str(argument), "error": str(error)})
            continue
        for path in paths:
            try:
                image = load_image(path)  # (3, 32, 32) uint8
            except HybridcapError as error:
                entries.append({"path": str(path), "error": str(error)})
                continue
            entry = {"path": str(path)}
            entries.append(entry)
            loaded_images.append(image)
            loaded_entries.append(entry)

    errors = [entry for entry in entries if "error" in entry]
    for entry in errors:
        error_console.print(f"[bold red]error:[/] {escape(entry['error'])}", highlight=False, soft_wrap=True)

    if loaded_images:
        if len(loaded_images) <= FEW_IMAGES:
            # Starting a second CPU thread costs more than it saves on a handful of images
            # (about 0.7 s of a 3.5 s cold start on a busy 2-core machine, benchmarks/cli_startup.py).
            torch.set_num_threads(1)
        torch_device = resolve_device(device)
        loaded = load_captioner(run_dir, checkpoint="best", device=torch_device)
        batch_results = []
        batch_size = images_per_batch(BATCH_SIZE, beam)
        with torch.inference_mode():
            for start in range(0, len(loaded_images), batch_size):
                batch = torch.stack(loaded_images[start : start + batch_size]).to(torch_device)  # (B, 3, 32, 32) uint8
                batch_results.extend(loaded.model.generate_with_scores(normalize_images(batch), beam_size=beam, top_k=top_k))
        for entry, beams in zip(loaded_entries, batch_results):
            decoded = [{"caption": loaded.vocabulary.decode(token_ids), "log_probability": round(float(score), 4)} for token_ids, score in beams]
            entry["caption"] = decoded[0]["caption"]
            if top_k > 1:
                entry["beams"] = decoded

    if json_output:
        typer.echo(json.dumps(entries, indent=2, ensure_ascii=False))
    else:
        _print_captions(loaded_entries)
    if errors:
        raise typer.Exit(1)


def _print_captions(entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        if "beams" in entry:
            console.print(f"{entry['path']}:", highlight=False, markup=False, soft_wrap=True)
            for rank, beam in enumerate(entry["beams"], start=1):
                console.print(f"  {rank}. {beam['caption']}  (log p = {beam['log_probability']:.2f})", highlight=False, markup=False, soft_wrap=True)
        else:
            console.print(f"{entry['path']}: {entry['caption']}", highlight=False, markup=False, soft_wrap=True)
