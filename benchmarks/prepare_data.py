"""Time prepare_cifar100 on the real CIFAR-100 archive and print the seconds and counts.

Usage, with hybridcap importable (installed, or PYTHONPATH=. from the repository root):
    python benchmarks/prepare_data.py [ARCHIVE]
Without ARCHIVE it reads ../shared/data/cifar-100-python.tar.gz beside the repository.
The target is under 60 s. The prepared folder goes to a temporary folder that is deleted afterwards.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from hybridcap.datasets import load_prepared, prepare_cifar100

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar-100-python.tar.gz"


def main() -> None:
    archive = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ARCHIVE
    if not archive.is_file():
        sys.exit(f"archive {archive} not found; pass its path as the first argument")

    with tempfile.TemporaryDirectory(prefix="hybridcap-benchmark-") as temporary:
        root = Path(temporary) / "cifar100"

        start = time.perf_counter()
        result = prepare_cifar100(root, archive=archive)
        prepare_seconds = time.perf_counter() - start

        start = time.perf_counter()
        rerun = prepare_cifar100(root, archive=archive)
        rerun_seconds = time.perf_counter() - start

        start = time.perf_counter()
        prepared = load_prepared(root)
        sizes = {name: len(prepared.split(name)) for name in ("train", "val", "test")}
        load_seconds = time.perf_counter() - start

    counts = result.manifest["counts"]
    print(f"archive: {archive}")
    print(f"prepare: {prepare_seconds:.1f} s (target < 60 s)")
    print(f"rerun with the same options: {rerun_seconds:.2f} s, rebuilt={rerun.rebuilt}")
    print(f"load_prepared + all three splits: {load_seconds:.2f} s")
    print(f"images: train {sizes['train']}, val {sizes['val']}, test {sizes['test']}")
    print(f"classes: {counts['fine_classes']}, superclasses: {counts['superclasses']}, vocabulary: {counts['vocabulary']} tokens")


if __name__ == "__main__":
    main()
