"""Training progress in the terminal: a rich progress bar per epoch and one log line per epoch."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from hybridcap.cli.console import console as stdout_console
from hybridcap.cli.console import warn
from hybridcap.training.reporting import TrainingReporter


def format_number(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 100_000:
        return f"{value:.3f}"
    return f"{value:.2e}"


def format_values(values: Mapping[str, float]) -> str:
    """Format named values as ``name value`` pairs; throughput and duration get their units."""
    parts = []
    for name, value in values.items():
        if name == "images_per_second":
            parts.append(f"{value:,.0f} images/s")
        elif name == "seconds":
            parts.append(f"{value:.1f} s")
        else:
            parts.append(f"{name} {format_number(value)}")
    return "  ".join(parts)


class RichReporter(TrainingReporter):
    """Show each epoch as a progress bar with the latest values, then replace it with one line.

    The bar is drawn only when the console is a terminal, so piped output and logs contain just
    the per-epoch lines, info messages and warnings. Use it as a context manager so an exception
    in the middle of an epoch still removes the live bar.

    Args:
        console: where to draw; the shared stdout console by default.
    """

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stdout_console
        self.progress: Progress | None = None
        self.task: TaskID | None = None
        self.total_epochs = 0

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live progress bar, if one is shown."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.task = None

    def epoch_started(self, epoch: int, total_epochs: int, total_steps: int, completed_steps: int) -> None:
        self.close()
        self.total_epochs = total_epochs
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{total_epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[values]}"),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=completed_steps, values="")

    def steps_finished(self, completed_steps: int, values: Mapping[str, float]) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed_steps, values=escape(format_values(values)))

    def epoch_finished(self, epoch: int, summary: Mapping[str, float]) -> None:
        self.close()
        self.console.print(f"epoch {epoch}/{self.total_epochs}  {format_values(summary)}", markup=False, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def warning(self, message: str) -> None:
        warn(message)
