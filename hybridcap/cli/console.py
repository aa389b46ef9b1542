"""Rich consoles and the error handling every command shares."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hybridcap.errors import HybridcapError

console = Console()
error_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, exit_code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr and return the typer.Exit to raise.

    The message is printed literally: square brackets in it are not rich markup.
    """
    error_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)
    return typer.Exit(exit_code)


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr; the message is printed literally, not as rich markup."""
    error_console.print(f"[bold yellow]warning:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True)


def handle_errors(command: F) -> F:
    """Turn HybridcapError and Ctrl-C into one stderr line and a non-zero exit, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except HybridcapError as error:
            raise fail(str(error)) from None
        except KeyboardInterrupt:
            raise fail("interrupted; training commands resume from their last checkpoint when run again", exit_code=130) from None
        except MemoryError:
            raise fail("out of memory; free some memory, or lower --batch-size when training") from None
        except OSError as error:
            # Disk full, permission denied and the like: the user can act on these without a traceback.
            if error.filename:
                raise fail(f"{error.strerror or error} ({error.filename})") from None
            raise fail(str(error)) from None

    return wrapper  # type: ignore[return-value]
