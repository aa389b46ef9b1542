"""``hybridcap run``: data, GAN, captioner and evaluation in one experiment folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hybridcap.cli.console import console, handle_errors, warn
from hybridcap.device import DeviceChoice, Precision
from hybridcap.errors import HybridcapError
from hybridcap.training.pipeline import Preset


def parse_assignment(assignment: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into its key path and a TOML-typed value (bare text stays a string)."""
    import tomllib

    key, separator, raw_value = assignment.partition("=")
    if not separator or not key.strip():
        raise HybridcapError(f"invalid --set {assignment!r}; expected SECTION.KEY=VALUE, e.g. gan.epochs=5")
    try:
        value = tomllib.loads(f"value = {raw_value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value.strip()
    return key.strip().split("."), value


def _assign(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


@handle_errors
def run_command(
    preset: Annotated[Optional[Preset], typer.Option(help="Start from a recipe: cpu (under an hour on 2 CPU cores) or gpu (the full recipe).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with [data], [gan], [captioner] and [eval] tables; overrides the preset.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Experiment folder. [default: runs/experiment]")] = None,
    archive: Annotated[Optional[Path], typer.Option(help="Local cifar-100-python.tar.gz instead of downloading it.")] = None,
    directory: Annotated[Optional[Path], typer.Option("--dir", help="Extracted cifar-100-python folder instead of downloading.")] = None,
    url: Annotated[Optional[str], typer.Option(help="Download address of the CIFAR-100 archive.")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", "--data-root", help="Prepared-data folder. [default: the user cache folder]")] = None,
    device: Annotated[Optional[DeviceChoice], typer.Option(help="Device for training and evaluation; auto picks CUDA, then MPS, then the CPU. [default: auto]")] = None,
    precision: Annotated[Optional[Precision], typer.Option(help="Training precision: fp32, or bf16 autocast. [default: the preset's, else fp32]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for the split, both trainers and the evaluation floor. [default: 0]")] = None,
    clip_pretrained: Annotated[Optional[str], typer.Option(help="open_clip pretrained tag of the text encoder, or 'none' for random weights (testing only).")] = None,
    clip_weights: Annotated[Optional[Path], typer.Option(help="Local CLIP ViT-B-16 weights file for the text encoder.")] = None,
    contrastive_weight: Annotated[Optional[float], typer.Option(help="Weight of the contrastive loss; 0 turns it off.")] = None,
    assignments: Annotated[Optional[list[str]], typer.Option("--set", help="Override any config value, e.g. --set gan.epochs=5 (repeatable).")] = None,
    fresh: Annotated[bool, typer.Option(help="Start every stage over instead of resuming or skipping it.")] = False,
) -> None:
    """Prepare the data, train the GAN and the captioner, and evaluate, all in one experiment folder.

    A stage already done with the same config is skipped; an interrupted stage resumes from its last
    checkpoint when the same command runs again.
    """
    from hybridcap.cli.reporting import RichReporter
    from hybridcap.training.pipeline import PipelineReporter, read_config_file, resolve_config, run_pipeline

    overrides: dict[str, Any] = {
        "out": str(out) if out else None,
        "seed": seed,
        "device": device.value if device else None,
        "precision": precision.value if precision else None,
        "data": {
            "archive": str(archive) if archive else None,
            "directory": str(directory) if directory else None,
            "url": url,
            "root": str(root) if root else None,
        },
        "captioner": {
            "clip_pretrained": clip_pretrained,
            "clip_weights": str(clip_weights) if clip_weights else None,
            "contrastive_weight": contrastive_weight,
        },
    }
    for assignment in assignments or []:
        path, value = parse_assignment(assignment)
        _assign(overrides, path, value)
    file_values = read_config_file(config) if config else None
    pipeline_config = resolve_config(preset, file_values, overrides)

    class StageReporter(RichReporter, PipelineReporter):
        def stage_started(self, stage: str) -> None:
            console.rule(f"[bold]{stage}")

        def stage_finished(self, stage: str, seconds: float, skipped: bool) -> None:
            state = "already done, skipped" if skipped else f"done in {seconds:.0f} s"
            console.print(f"{stage}: {state}")

    # The context manager removes a live progress bar when a stage raises mid-epoch.
    with StageReporter() as reporter:
        result = run_pipeline(pipeline_config, reporter=reporter, fresh=fresh, clip_warning=warn)
    _print_summary(result)


def _print_summary(result: Any) -> None:
    from rich.table import Table

    from hybridcap.cli.evaluate import scores_table
    from hybridcap.metrics.captioning import METRIC_NAMES

    console.rule("[bold]results")
    for split_name in sorted(result.metrics["splits"], key=["val", "test"].index):
        split_result = result.metrics["splits"][split_name]
        metric_names = tuple(name for name in METRIC_NAMES if name in split_result["model"])
        console.print(scores_table(split_name, split_result, metric_names))
        for note in split_result.get("notes", []):
            warn(f"{split_name}: {note}")

    timings = Table(title="Wall time per stage")
    timings.add_column("stage")
    timings.add_column("seconds", justify="right")
    for timing in result.timings:
        timings.add_row(timing.stage, "skipped" if timing.skipped else f"{timing.seconds:.0f}")
    console.print(timings)

    artefacts = Table(title="Artefacts")
    artefacts.add_column("what")
    artefacts.add_column("where")
    artefacts.add_row("prepared data", str(result.data_root))
    artefacts.add_row("GAN run (weights, samples/, loss_curve.png)", str(result.gan_dir))
    artefacts.add_row("captioner run (best/last weights, loss_curve.png)", str(result.captioner_dir))
    artefacts.add_row("metrics", str(result.captioner_dir / "metrics.json"))
    artefacts.add_row("generated captions", str(result.captioner_dir / "captions.jsonl"))
    if result.gallery is not None:
        artefacts.add_row("caption gallery", str(result.gallery))
    console.print(artefacts)
