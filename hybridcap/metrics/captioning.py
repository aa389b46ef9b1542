"""Caption metrics with pycocoevalcap's scorers: BLEU-1..4, METEOR, ROUGE-L and CIDEr.

The values are those of pycocoevalcap 1.2 (the COCO caption evaluation code): captions are
tokenised with its PTB tokenizer and scored with its ``Bleu``, ``Meteor``, ``Rouge`` and
``Cider`` scorers. SPICE is never built. Three things differ from calling those classes directly,
none of which changes a score:

- Text is sanitised first (``sanitize_caption``), because a line break inside a caption shifts
  every later caption in the tokenizer's line-based protocol, and ``|`` can form METEOR's field
  separator ``|||``.
- Each distinct text is tokenised once, and each distinct (hypothesis, references) pair is scored
  once: BLEU's n-gram counts, CIDEr's n-gram vectors and similarities, ROUGE-L and METEOR's
  statistics. Corpus statistics and CIDEr's document frequencies still count every image, so the
  results equal a plain per-image computation. Template captions repeat a lot, so this is most of
  the speed.
- The Java processes run with timeouts, and METEOR is started once per ``CaptionScorer``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.bleu.bleu_scorer import cook_refs as cook_bleu_references
from pycocoevalcap.bleu.bleu_scorer import cook_test as cook_bleu_hypothesis
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.cider.cider_scorer import cook_refs as cook_cider_references
from pycocoevalcap.cider.cider_scorer import cook_test as cook_cider_hypothesis
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from hybridcap.metrics.java import JavaNotFoundError, MeteorProcess, ScorerError, find_java, run_ptb_tokenizer
from hybridcap.metrics.names import METRIC_NAMES, Tokenizer, parse_metric_names

__all__ = [
    "METRIC_NAMES",
    "MIN_IMAGES_FOR_CIDER",
    "CaptionScorer",
    "CaptionScores",
    "JavaNotFoundError",
    "ScorerError",
    "Tokenizer",
    "parse_metric_names",
    "require_java",
    "sanitize_caption",
    "score_captions",
]

BLEU_NAMES = METRIC_NAMES[:4]

# CIDEr weights n-grams by how rare they are among the evaluated images' references. Below this
# many images those weights rest on too few documents to compare CIDEr with other evaluations.
MIN_IMAGES_FOR_CIDER = 100

# Characters that become a space: Unicode line and paragraph separators, control and format
# characters (tab, vertical tab, NEL, zero-width space, ...) and lone surrogates, which cannot be
# encoded for the Java processes.
_SPACE_CATEGORIES = frozenset({"Zl", "Zp", "Zs", "Cc", "Cf", "Cs"})


def sanitize_caption(text: str) -> str:
    """Return ``text`` on one line, safe for the line-based Java scorers.

    Every Unicode line break, whitespace, control or format character and every ``|`` becomes a
    space (``|`` because three of them form METEOR's field separator), then runs of spaces
    collapse to one and the ends are stripped.
    """
    if text.isprintable():
        # Fast path: printable text has no line breaks or control characters, only maybe "|".
        return " ".join(text.replace("|", " ").split())
    characters = [" " if character == "|" or unicodedata.category(character) in _SPACE_CATEGORIES else character for character in text]
    return " ".join("".join(characters).split())


def parts_needing_java(metrics: Sequence[str], tokenizer: Tokenizer | str = Tokenizer.ptb) -> list[str]:
    """Return the names of the scorer parts that run in Java for ``metrics`` and ``tokenizer``, for messages."""
    parts = []
    if "meteor" in metrics:
        parts.append("METEOR")
    if Tokenizer(tokenizer) is Tokenizer.ptb:
        parts.append("the PTB tokenizer")
    return parts


def require_java(metrics: Sequence[str], tokenizer: Tokenizer | str = Tokenizer.ptb) -> str | None:
    """Return the Java executable when ``metrics`` or ``tokenizer`` need it, else None.

    Raises:
        JavaNotFoundError: Java is needed but not on PATH. The message names the parts that need
            it and the options that skip them.
    """
    tokenizer = Tokenizer(tokenizer)
    if not parts_needing_java(metrics, tokenizer):
        return None
    java = find_java()
    if java is not None:
        return java
    without_meteor = ",".join(name for name in metrics if name != "meteor") or ",".join(name for name in METRIC_NAMES if name != "meteor")
    if tokenizer is Tokenizer.ptb and "meteor" in metrics:
        raise JavaNotFoundError(
            "java was not found on PATH, but METEOR and the PTB tokenizer (which every metric uses by default) need it; "
            f"install a Java runtime, or skip both with --tokenizer simple --metrics {without_meteor}"
        )
    if tokenizer is Tokenizer.ptb:
        raise JavaNotFoundError(
            "java was not found on PATH, but the PTB tokenizer (which every metric uses by default) needs it; "
            "install a Java runtime, or pass --tokenizer simple"
        )
    raise JavaNotFoundError(f"java was not found on PATH, but METEOR needs it; install a Java runtime, or skip it with --metrics {without_meteor}")


@dataclass
class CaptionScores:
    """Scores of one set of captions.

    Attributes:
        corpus: metric name to corpus score, as pycocoevalcap reports it.
        per_image: metric name to one score per image, in input order.
        notes: caveats a reader needs, e.g. that CIDEr is not meaningful on this set.
    """

    corpus: dict[str, float]
    per_image: dict[str, list[float]]
    notes: list[str] = field(default_factory=list)


class CaptionScorer:
    """Caption scorer with one METEOR process and a cache of tokenised texts.

    Create one per command and reuse it for every set of captions, so METEOR's Java process starts
    once. It starts in the constructor and loads in the background. Close it with ``close`` or use
    the scorer as a context manager.

    Args:
        metrics: names from ``METRIC_NAMES``; only the scorers for these are built.
        tokenizer: ``ptb`` (pycocoevalcap's, needs Java) or ``simple``.

    Raises:
        JavaNotFoundError: Java is needed for ``metrics``/``tokenizer`` but not on PATH.
    """

    def __init__(self, metrics: Sequence[str] = METRIC_NAMES, tokenizer: Tokenizer | str = Tokenizer.ptb) -> None:
        unknown = [name for name in metrics if name not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; expected names from {METRIC_NAMES}")
        self.metrics = tuple(name for name in METRIC_NAMES if name in metrics)
        self.tokenizer = Tokenizer(tokenizer)
        self._java = require_java(self.metrics, self.tokenizer)
        self._tokenized: dict[str, str] = {}
        self._meteor: MeteorProcess | None = None
        if "meteor" in self.metrics:
            assert self._java is not None
            self._meteor = MeteorProcess(self._java)

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the METEOR process, if any. Calling it again does nothing."""
        if self._meteor is not None:
            self._meteor.close()
            self._meteor = None

    def pretokenize(self, texts: Iterable[str]) -> None:
        """Tokenise ``texts`` in one tokenizer run, so later ``score`` calls find them cached.

        Each PTB run starts a Java process, so collect every caption first when scoring several sets.
        """
        new_texts = list(dict.fromkeys(text for text in texts if text not in self._tokenized))
        if not new_texts:
            return
        sanitized = [sanitize_caption(text) for text in new_texts]
        to_tokenize = sorted({text for text in sanitized if text})
        if self.tokenizer is Tokenizer.ptb:
            assert self._java is not None
            tokenized = dict(zip(to_tokenize, run_ptb_tokenizer(self._java, to_tokenize)))
        else:
            tokenized = {text: _simple_tokenize(text) for text in to_tokenize}
        for text, clean in zip(new_texts, sanitized):
            self._tokenized[text] = tokenized.get(clean, "")

    def tokenize(self, texts: Sequence[str]) -> list[str]:
        """Return the tokenised form of each text (tokens joined by one space, possibly empty)."""
        self.pretokenize(texts)
        return [self._tokenized[text] for text in texts]

    def score(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> CaptionScores:
        """Score one hypothesis per image against that image's references.

        An empty hypothesis (also one that is only punctuation) scores 0 on every metric for its
        image; the other images are unaffected.

        Args:
            hypotheses: one generated caption per image.
            references: for each image, its reference captions (at least one, none empty).

        Raises:
            ValueError: the lengths differ, an image has no references, or a reference is empty
                after tokenisation.
            ScorerError: a Java scorer failed or timed out.
        """
        if len(hypotheses) != len(references):
            raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
        if not hypotheses:
            raise ValueError("no captions to score")
        for index, image_references in enumerate(references):
            if isinstance(image_references, str) or len(image_references) == 0:
                raise ValueError(f"image {index} needs a non-empty list of reference captions")

        self.pretokenize([*hypotheses, *(reference for image_references in references for reference in image_references)])
        hypothesis_tokens = [self._tokenized[text] for text in hypotheses]
        reference_tokens = [tuple(self._tokenized[text] for text in image_references) for image_references in references]
        for index, image_references in enumerate(reference_tokens):
            if not all(image_references):
                raise ValueError(f"image {index} has a reference caption that is empty after tokenisation")

        # Score each distinct (hypothesis, references) pair once and expand back to images.
        pair_index: dict[tuple[str, tuple[str, ...]], int] = {}
        image_pairs = [pair_index.setdefault(pair, len(pair_index)) for pair in zip(hypothesis_tokens, reference_tokens)]
        pairs = list(pair_index)

        corpus: dict[str, float] = {}
        per_image: dict[str, list[float]] = {}
        with ThreadPoolExecutor(max_workers=1) as executor:
            # METEOR works in its own Java process; while this thread waits for its replies,
            # the Python scorers below run on another core.
            meteor_future = None
            if "meteor" in self.metrics:
                assert self._meteor is not None
                meteor_future = executor.submit(_score_meteor, self._meteor, pairs, image_pairs)
            try:
                if any(name in self.metrics for name in BLEU_NAMES):
                    bleu_corpus, bleu_per_image = _score_bleu(pairs, image_pairs)
                    for order, name in enumerate(BLEU_NAMES):
                        if name in self.metrics:
                            corpus[name] = bleu_corpus[order]
                            per_image[name] = bleu_per_image[order]
                if "rouge_l" in self.metrics:
                    per_image["rouge_l"] = _score_rouge(pairs, image_pairs)
                    corpus["rouge_l"] = float(np.mean(per_image["rouge_l"]))
                if "cider" in self.metrics:
                    corpus["cider"], per_image["cider"] = _score_cider(pairs, image_pairs)
            except BaseException:
                # Stop METEOR so the worker thread ends instead of keeping the executor waiting.
                self.close()
                raise
            if meteor_future is not None:
                corpus["meteor"], per_image["meteor"] = meteor_future.result()

        # pycocoevalcap's per-image BLEU of an empty hypothesis is 0 only up to rounding
        # (its smoothing constants); make "scores 0" exact. Corpus scores stay as computed.
        for index, hypothesis in enumerate(hypothesis_tokens):
            if not hypothesis:
                for scores in per_image.values():
                    scores[index] = 0.0

        notes = _cider_notes(reference_tokens) if "cider" in self.metrics else []
        return CaptionScores(corpus={name: float(corpus[name]) for name in self.metrics}, per_image=per_image, notes=notes)


def _simple_tokenize(text: str) -> str:
    from hybridcap.datasets import tokenize

    punctuation = set(PUNCTUATIONS)
    return " ".join(token for token in tokenize(text) if token not in punctuation)


def _score_bleu(pairs: Sequence[tuple[str, tuple[str, ...]]], image_pairs: Sequence[int]) -> tuple[list[float], list[list[float]]]:
    # Same as pycocoevalcap.bleu.Bleu(4).compute_score, which uses the "closest" reference length,
    # but with each pair's n-gram counts computed once and shared by the images that repeat it.
    cooked = []
    for hypothesis, references in pairs:
        cooked_references = cook_bleu_references(list(references))
        cooked.append((cooked_references, cook_bleu_hypothesis(hypothesis, cooked_references)))
    scorer = BleuScorer(n=4)
    for pair in image_pairs:
        scorer.crefs.append(cooked[pair][0])
        scorer.ctest.append(cooked[pair][1])
    corpus, per_image = scorer.compute_score(option="closest", verbose=0)
    return [float(value) for value in corpus], [[float(value) for value in order] for order in per_image]


def _score_rouge(pairs: Sequence[tuple[str, tuple[str, ...]]], image_pairs: Sequence[int]) -> list[float]:
    # Same per-image values as pycocoevalcap.rouge.Rouge().compute_score, computed once per pair.
    rouge = Rouge()
    pair_scores = [float(rouge.calc_score([hypothesis], list(references))) for hypothesis, references in pairs]
    return [pair_scores[pair] for pair in image_pairs]


def _score_meteor(meteor: MeteorProcess, pairs: Sequence[tuple[str, tuple[str, ...]]], image_pairs: Sequence[int]) -> tuple[float, list[float]]:
    # As Meteor.compute_score: one EVAL line with every image's statistics, from which METEOR
    # computes the corpus score (not the mean of per-image scores). Only the SCORE round trips,
    # the slow part, are made once per distinct pair.
    statistics = meteor.statistics([(hypothesis, list(references)) for hypothesis, references in pairs])
    return meteor.evaluate([statistics[pair] for pair in image_pairs])


def _score_cider(pairs: Sequence[tuple[str, tuple[str, ...]]], image_pairs: Sequence[int]) -> tuple[float, list[float]]:
    # Same values as pycocoevalcap.cider.Cider().compute_score, whose corpus score is the mean of
    # the per-image scores. Document frequencies must count every image's references, so
    # compute_doc_freq sees every image. compute_cider (pycocoevalcap 1.2) takes log(len(crefs))
    # as the log image count and scores zip(ctest, crefs), so it gets the distinct pairs first,
    # then placeholders that pad crefs to the image count and are never scored.
    cooked = [(cook_cider_references(list(references)), cook_cider_hypothesis(hypothesis)) for hypothesis, references in pairs]
    scorer = CiderScorer(n=4, sigma=6.0)
    scorer.crefs = [cooked[pair][0] for pair in image_pairs]
    scorer.compute_doc_freq()
    scorer.crefs = [cooked_references for cooked_references, _ in cooked] + [None] * (len(image_pairs) - len(pairs))
    scorer.ctest = [cooked_hypothesis for _, cooked_hypothesis in cooked]
    pair_scores = scorer.compute_cider()
    if len(pair_scores) != len(pairs):
        raise RuntimeError(f"pycocoevalcap's CiderScorer returned {len(pair_scores)} scores for {len(pairs)} pairs; its internals changed")
    per_image = [float(pair_scores[pair]) for pair in image_pairs]
    return float(np.mean(per_image)), per_image


def _cider_notes(reference_tokens: Sequence[tuple[str, ...]]) -> list[str]:
    distinct_reference_sets = len(set(reference_tokens))
    if distinct_reference_sets == 1:
        return [
            "CIDEr is not meaningful here: every image has the same references, so every n-gram "
            "occurs in all documents, gets zero weight, and CIDEr is 0 for any caption"
        ]
    if len(reference_tokens) < MIN_IMAGES_FOR_CIDER:
        return [
            f"CIDEr is not meaningful here: its n-gram weights come from only {len(reference_tokens)} images "
            f"(fewer than {MIN_IMAGES_FOR_CIDER}), so it is not comparable with CIDEr on a larger set"
        ]
    return []


def score_captions(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    metrics: Sequence[str] = METRIC_NAMES,
    tokenizer: Tokenizer | str = Tokenizer.ptb,
) -> dict[str, float]:
    """Return corpus scores (``bleu_1`` .. ``cider``) of one caption per image against its references.

    Starts and stops its own METEOR process; to score several sets, use one ``CaptionScorer``.

    Args:
        hypotheses: one generated caption per image.
        references: for each image, its reference captions.
        metrics: names from ``METRIC_NAMES``; only these scorers are built.
        tokenizer: ``ptb`` (pycocoevalcap's, needs Java) or ``simple``.
    """
    with CaptionScorer(metrics, tokenizer) as scorer:
        return scorer.score(hypotheses, references).corpus
