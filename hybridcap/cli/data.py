"""``hybridcap data``: download or read CIFAR-100 and write the prepared-data folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from hybridcap.cli.console import console, fail, handle_errors, warn


@handle_errors
def data_command(
    url: Annotated[str | None, typer.Option("--url", help="Download the archive from this address instead of the official one.")] = None,
    archive: Annotated[Path | None, typer.Option("--archive", help="Read this local cifar-100-python.tar.gz instead of downloading.")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Read this extracted cifar-100-python folder instead of downloading.")] = None,
    root: Annotated[Path | None, typer.Option("--root", "--data-root", help="Prepared-data folder; defaults to $XDG_CACHE_HOME/hybridcap/cifar100 or ~/.cache/hybridcap/cifar100.", show_default=False)] = None,
    val_per_class: Annotated[int, typer.Option("--val-per-class", help="Training images per fine class held out for validation.")] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random choice of validation images.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the folder contains data prepared with the same options.")] = False,
) -> None:
    """Get CIFAR-100, split it into train/val/test and derive reference captions and the vocabulary.

    Without --archive or --dir, the official archive is downloaded and checked against its MD5.

    Rerunning with the same options does nothing; --force rebuilds.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    from hybridcap.datasets import default_data_root, prepare_cifar100

    root = root if root is not None else default_data_root()
    source = archive or directory or url or "the official CIFAR-100 address"
    console.print(f"Preparing CIFAR-100 in {root} from {source}", highlight=False)

    # The bar starts on the first download callback, so nothing is drawn when no download happens.
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    task_ids: list[Any] = []

    def show_download(received: int, total: int | None) -> None:
        if not task_ids:
            progress.start()
            task_ids.append(progress.add_task("Downloading", total=total))
        progress.update(task_ids[0], completed=received, total=total)

    try:
        result = prepare_cifar100(
            root,
            url=url,
            archive=archive,
            directory=directory,
            val_per_class=val_per_class,
            seed=seed,
            force=force,
            download_progress=show_download,
        )
    except KeyboardInterrupt:
        # A rebuild removes the manifest first, so the folder is unusable until a rerun finishes.
        raise fail(f"interrupted; rerun this command to finish preparing {root}", exit_code=130) from None
    finally:
        if task_ids:
            progress.stop()

    for message in result.warnings:
        warn(message)
    if result.rebuilt:
        console.print(f"Prepared CIFAR-100 in {result.root}", highlight=False)
    else:
        console.print(f"{result.root} already contains CIFAR-100 prepared with these options; nothing to do (use --force to rebuild)", highlight=False)
    counts = result.manifest["counts"]
    console.print(_counts_table(counts))
    console.print(
        f"{counts['fine_classes']} classes in {counts['superclasses']} superclasses, "
        f"{counts['captions']} reference captions, vocabulary of {counts['vocabulary']} tokens",
        highlight=False,
    )


def _counts_table(counts: dict[str, Any]) -> Table:
    table = Table(title="CIFAR-100 splits")
    table.add_column("split")
    table.add_column("images", justify="right")
    table.add_column("classes", justify="right")
    table.add_column("superclasses", justify="right")
    for split_name in ("train", "val", "test"):
        split = counts[split_name]
        table.add_row(split_name, f"{split['images']:,}", str(split["classes"]), str(split["superclasses"]))
    return table
