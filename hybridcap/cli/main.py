"""The ``hybridcap`` command: one Typer app whose commands import torch only when they run."""

from __future__ import annotations

import signal

import typer

from hybridcap import __version__

app = typer.Typer(
    name="hybridcap",
    help="Caption CIFAR-100 images with a DCGAN image encoder, a frozen CLIP text encoder and an LSTM decoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hybridcap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Caption CIFAR-100 images with a DCGAN image encoder, a frozen CLIP text encoder and an LSTM decoder."""


def _register_commands() -> None:
    # Each module defines one command and imports only typer and rich at module level.
    from hybridcap.cli import caption, captioner, data, evaluate, gan, pipeline

    app.command("data")(data.data_command)
    app.command("train-gan")(gan.train_gan_command)
    app.command("train-captioner")(captioner.train_captioner_command)
    app.command("eval")(evaluate.eval_command)
    app.command("caption")(caption.caption_command)
    app.command("run")(pipeline.run_command)


_register_commands()


def main() -> None:
    # Batch schedulers stop jobs with SIGTERM. Turning it into the Ctrl-C path lets atomic writes
    # remove their temporary files and prints the same one-line message.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


def _interrupt(signal_number: int, frame: object) -> None:
    raise KeyboardInterrupt
