"""``hybridcap eval``: caption the val and test images of a run and score them against a floor and a ceiling."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hybridcap.cli.console import console, error_console, handle_errors, warn
from hybridcap.cli.options import MAX_BEAM_WIDTH
from hybridcap.device import DeviceChoice, Precision
from hybridcap.metrics.names import METRIC_NAMES, METRIC_TITLES, Tokenizer
from hybridcap.training.reporting import TrainingReporter


class SplitChoice(str, enum.Enum):
    val = "val"
    test = "test"
    both = "both"


@handle_errors
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="Captioner run folder (contains best.safetensors).", show_default=False)],
    split: Annotated[SplitChoice, typer.Option(help="Which split to caption and score.")] = SplitChoice.both,
    beam: Annotated[int, typer.Option(min=1, max=MAX_BEAM_WIDTH, help="Beam width for caption generation; 1 decodes greedily.")] = 3,
    metrics: Annotated[
        list[str] | None,
        typer.Option(help=f"Metrics to compute, comma separated or repeated, from: {', '.join(METRIC_NAMES)}. Default: all seven."),
    ] = None,
    tokenizer: Annotated[
        Tokenizer,
        typer.Option(help="Caption tokenizer: ptb is pycocoevalcap's Java PTB tokenizer (standard); simple needs no Java."),
    ] = Tokenizer.ptb,
    device: Annotated[DeviceChoice, typer.Option(help="Device for caption generation.")] = DeviceChoice.auto,
    precision: Annotated[Precision, typer.Option(help="Caption generation in fp32, or in bf16 autocast (faster on CPUs with bf16).")] = Precision.fp32,
    json_output: Annotated[bool, typer.Option("--json", help="Print the metrics JSON to stdout instead of tables.")] = False,
) -> None:
    """Caption every val/test image with the run's best checkpoint and score the captions.

    Prints BLEU-1..4, METEOR, ROUGE-L, CIDEr and class/superclass accuracy for the model, for a
    floor (a reference caption of a random class) and for a ceiling (the same template with the
    true class). Writes metrics.json, captions.jsonl and per_class_<split>.csv in RUN_DIR; with
    --split val or test, the other split's results stay if the same checkpoint and settings made them.
    """
    from hybridcap.metrics.names import parse_metric_names
    from hybridcap.training.evaluation import evaluate_run

    metric_names = parse_metric_names(metrics)
    splits = ("val", "test") if split is SplitChoice.both else (split.value,)
    result = evaluate_run(
        run_dir,
        splits=splits,
        beam_size=beam,
        metrics=metric_names,
        device=device,
        precision=precision,
        tokenizer=tokenizer,
        reporter=_StderrReporter(),
    )

    if json_output:
        typer.echo(json.dumps(result.metrics, indent=2, sort_keys=True))
    else:
        for split_name, split_result in result.metrics["splits"].items():
            console.print(scores_table(split_name, split_result, metric_names))
        console.print(f"Wrote {', '.join(path.name for path in result.files)} in {result.run_dir}", highlight=False)
    for split_name, split_result in result.metrics["splits"].items():
        for note in split_result["notes"]:
            warn(f"{split_name}: {note}")


class _StderrReporter(TrainingReporter):
    """Progress lines on stderr, so ``--json`` output on stdout stays clean."""

    def info(self, message: str) -> None:
        error_console.print(message, highlight=False)

    def warning(self, message: str) -> None:
        warn(message)


def scores_table(split_name: str, split_result: dict[str, Any], metric_names: tuple[str, ...]) -> Table:
    table = Table(
        title=f"{split_name}: {split_result['images']} images",
        caption="floor: a reference caption of a random class; ceiling: the same template with the true class; position: 0% at the floor, 100% at the ceiling",
    )
    table.add_column("metric")
    for system in ("model", "floor", "ceiling", "position"):
        table.add_column(system, justify="right")

    rows = [(METRIC_TITLES[name], name, False) for name in metric_names]
    rows += [("class accuracy", "class_accuracy", True), ("superclass accuracy", "superclass_accuracy", True)]
    for title, key, is_accuracy in rows:
        values = [split_result[system][key] for system in ("model", "floor", "ceiling")]
        cells = [f"{value:.1%}" if is_accuracy else f"{value:.3f}" for value in values]
        table.add_row(title, *cells, _position(*values))
    return table


def _position(model: float, floor: float, ceiling: float) -> str:
    # 0% means no better than the random-class floor, 100% means as good as a reference caption.
    if ceiling <= floor:
        return "n/a"
    percent = round(100 * (model - floor) / (ceiling - floor))
    return f"{percent + 0}%"  # + 0 turns -0 into 0
