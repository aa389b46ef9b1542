"""Time cold starts of `hybridcap --help` and `hybridcap caption one.png` in fresh processes.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/cli_startup.py [--run RUN_DIR] [--data-root ROOT] [--repeats N]

Targets: `hybridcap --help` under 0.5 s and `hybridcap caption one.png` under 3 s. Without --run, a
run folder with randomly initialised networks of the trainer's default sizes is written to a
temporary folder (see eval_speed.py), which needs the prepared real data for its vocabulary.
Each command runs --repeats times; the minimum and the median are printed because other processes
on a shared machine slow single runs down. One extra run with ``-X importtime`` checks that
open_clip is never imported and reports the slowest imports.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPOSITORY / ".." / "shared" / "data" / "cifar-100-python.tar.gz"


def time_command(arguments: list[str], repeats: int, environment: dict[str, str]) -> list[float]:
    """Run ``python -m hybridcap ARGUMENTS`` ``repeats`` times and return the wall times in seconds."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        completed = subprocess.run([sys.executable, "-m", "hybridcap", *arguments], env=environment, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if completed.returncode != 0:
            sys.exit(f"hybridcap {' '.join(arguments)} failed: {completed.stderr.strip()}")
    return seconds


def slowest_imports(arguments: list[str], environment: dict[str, str], count: int = 5) -> tuple[list[tuple[float, str]], bool]:
    """Return the ``count`` top-level imports with the highest cumulative time, and whether open_clip was imported."""
    completed = subprocess.run([sys.executable, "-X", "importtime", "-m", "hybridcap", *arguments], env=environment, capture_output=True, text=True)
    entries = []
    for line in completed.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        # Nested imports are indented by two more spaces per level.
        if cumulative.strip().isdigit() and not name.startswith("  "):
            entries.append((int(cumulative) / 1e6, name.strip()))
    imported_open_clip = any(line.split("|")[-1].strip().split(".")[0] == "open_clip" for line in completed.stderr.splitlines() if "|" in line)
    return sorted(entries, reverse=True)[:count], imported_open_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="captioner run folder; default: random weights")
    parser.add_argument("--data-root", type=Path, help="prepared CIFAR-100 folder for the random run")
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()

    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    with tempfile.TemporaryDirectory(prefix="hybridcap-startup-benchmark-") as temporary:
        temporary = Path(temporary)
        run_dir = arguments.run
        if run_dir is None:
            sys.path.insert(0, str(REPOSITORY))
            from eval_speed import write_random_run

            from hybridcap.datasets import prepare_cifar100

            data_root = arguments.data_root
            if data_root is None:
                data_root = temporary / "cifar100"
                prepare_cifar100(data_root, archive=DEFAULT_ARCHIVE)
            run_dir = temporary / "captioner"
            write_random_run(run_dir, data_root)

        from PIL import Image

        image = temporary / "one.png"
        Image.new("RGB", (640, 480), (120, 80, 40)).save(image)

        for label, command, target in (
            ("hybridcap --help", ["--help"], 0.5),
            ("hybridcap caption one.png", ["caption", str(image), "--run", str(run_dir), "--device", "cpu"], 3.0),
        ):
            seconds = time_command(command, arguments.repeats, environment)
            imports, imported_open_clip = slowest_imports(command, environment)
            print(f"{label}: min {min(seconds):.2f} s, median {statistics.median(seconds):.2f} s over {len(seconds)} runs (target < {target} s)")
            print(f"  open_clip imported: {imported_open_clip}")
            print("  slowest imports: " + ", ".join(f"{name} {seconds:.2f} s" for seconds, name in imports))


if __name__ == "__main__":
    main()
