"""Placeholder until this command is implemented."""

from __future__ import annotations

from hybridcap.cli.console import fail


def train_gan_command() -> None:
    """Not implemented yet."""
    raise fail("this command is not implemented yet")
