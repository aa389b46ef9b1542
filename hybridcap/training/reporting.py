"""The interface through which trainers report progress; the CLI implements it with rich.

The library itself never prints. A trainer calls these methods and the default implementation
does nothing, so the library is usable from Python without any output.
"""

from __future__ import annotations

from collections.abc import Mapping


class TrainingReporter:
    """Receives progress events from a trainer. Every method is optional to override."""

    def epoch_started(self, epoch: int, total_epochs: int, total_steps: int, completed_steps: int) -> None:
        """Called before the first step of an epoch; ``completed_steps`` > 0 when resuming mid-epoch."""

    def steps_finished(self, completed_steps: int, values: Mapping[str, float]) -> None:
        """Called every few steps with the steps done so far in the epoch and the latest named values."""

    def epoch_finished(self, epoch: int, summary: Mapping[str, float]) -> None:
        """Called after an epoch (and its validation, if any) with the epoch's named averages."""

    def info(self, message: str) -> None:
        """Receive a one-line log message, e.g. the per-epoch summary or a resume notice."""

    def warning(self, message: str) -> None:
        """Receive a one-line warning, e.g. a suspected mode collapse."""
