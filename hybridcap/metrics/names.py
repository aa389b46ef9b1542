"""Metric and tokenizer names, kept free of heavy imports so the CLI can build its options from them."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from hybridcap.errors import HybridcapError

METRIC_NAMES = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider")

# Display names of the metrics in tables and help text.
METRIC_TITLES = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
}


class Tokenizer(str, enum.Enum):
    """Tokenizer applied to captions before scoring."""

    ptb = "ptb"  # pycocoevalcap's Stanford PTB tokenizer (Java); the standard for COCO metrics
    simple = "simple"  # hybridcap.datasets.tokenize in Python; for machines without Java


def parse_metric_names(values: Iterable[str] | None) -> tuple[str, ...]:
    """Turn ``--metrics`` values (repeated and/or comma separated) into metric names in standard order.

    ``None`` or an empty list means all seven. Names are case-insensitive and ``-`` may be used
    for ``_`` (``bleu-4``). Raises HybridcapError for an unknown name.
    """
    requested: set[str] = set()
    for value in values or ():
        for part in value.split(","):
            name = part.strip().lower().replace("-", "_")
            if not name:
                continue
            if name not in METRIC_NAMES:
                raise HybridcapError(f"unknown metric {part.strip()!r}; choose from {', '.join(METRIC_NAMES)}")
            requested.add(name)
    if not requested:
        return METRIC_NAMES
    return tuple(name for name in METRIC_NAMES if name in requested)
