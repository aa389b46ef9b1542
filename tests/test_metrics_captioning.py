"""Caption metrics on small cases whose values can be checked by hand, run with the real Java scorers."""

from __future__ import annotations

import math
import random
import stat
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from hybridcap.errors import HybridcapError
from hybridcap.metrics.captioning import (
    METRIC_NAMES,
    CaptionScorer,
    JavaNotFoundError,
    ScorerError,
    parse_metric_names,
    sanitize_caption,
    score_captions,
)
from hybridcap.metrics import java as java_module
from hybridcap.metrics.java import MeteorProcess, find_java, run_ptb_tokenizer

pytestmark = pytest.mark.skipif(find_java() is None, reason="needs Java for METEOR and the PTB tokenizer")


@pytest.fixture(scope="module")
def scorer():
    """One scorer with every metric, so METEOR's Java process starts once for the module."""
    with CaptionScorer(METRIC_NAMES) as shared:
        yield shared


def test_sanitize_caption_line_breaks_and_controls():
    text = "a\nphoto\r\nof\u2028a\u2029cat\x0bon\x0ca\x1cmat\x85now\ttoday\u00a0here\u200bthere\x00end"
    assert sanitize_caption(text) == "a photo of a cat on a mat now today here there end"


def test_sanitize_caption_meteor_separator():
    assert sanitize_caption("a cat ||| a dog|a bird") == "a cat a dog a bird"


def test_sanitize_caption_collapses_and_strips():
    assert sanitize_caption("   a    cat  ") == "a cat"
    assert sanitize_caption("\n\n") == ""


def test_sanitize_caption_lone_surrogate():
    assert sanitize_caption("a \ud83d cat") == "a cat"


def test_sanitize_caption_keeps_non_ascii_words():
    assert sanitize_caption("a café in zürich") == "a café in zürich"


def test_score_perfect_captions(scorer):
    references = [["a red cat sits on the mat"], ["a blue dog runs in the park"]]
    result = scorer.score(["a red cat sits on the mat", "a blue dog runs in the park"], references)
    for name in ("bleu_1", "bleu_2", "bleu_3", "bleu_4"):
        assert result.corpus[name] == pytest.approx(1.0, abs=1e-6)
    assert result.corpus["meteor"] == pytest.approx(1.0)
    assert result.corpus["rouge_l"] == pytest.approx(1.0)
    # Every n-gram occurs in one of the two documents except "a", so each cosine is 1 and CIDEr-D is 10.
    assert result.corpus["cider"] == pytest.approx(10.0)


def test_score_ignores_case_and_punctuation(scorer):
    result = scorer.score(["A Red cat, sits on the mat."], [["a red cat sits on the mat"]])
    assert result.corpus["bleu_4"] == pytest.approx(1.0, abs=1e-6)
    assert result.corpus["rouge_l"] == pytest.approx(1.0)


def test_score_empty_hypothesis_isolated(scorer):
    references = [["a red cat sits on the mat"], ["a blue dog runs in the park"], ["a green bird flies over a tree"]]
    with_empty = scorer.score(["a red cat on the mat", "", "a green bird over a tree"], references)
    with_caption = scorer.score(["a red cat on the mat", "a blue dog", "a green bird over a tree"], references)

    for name in METRIC_NAMES:
        assert with_empty.per_image[name][1] == 0.0, name
        assert with_empty.per_image[name][0] == pytest.approx(with_caption.per_image[name][0]), name
        assert with_empty.per_image[name][2] == pytest.approx(with_caption.per_image[name][2]), name
    assert with_empty.per_image["bleu_1"][0] > 0.5


def test_score_punctuation_only_hypothesis_is_empty(scorer):
    result = scorer.score(["...", "a dog"], [["a cat"], ["a dog"]])
    for name in METRIC_NAMES:
        assert result.per_image[name][0] == 0.0, name
    assert result.per_image["rouge_l"][1] == pytest.approx(1.0)


def test_score_one_word_hypothesis(scorer):
    result = scorer.score(["cat"], [["a cat"]])
    # Precision 1/1, brevity penalty exp(1 - 2/1).
    assert result.corpus["bleu_1"] == pytest.approx(math.exp(-1.0), rel=1e-6)
    # No bigram at all: pycocoevalcap's smoothing makes BLEU-2 tiny but not exactly 0.
    assert result.corpus["bleu_2"] < 1e-3
    # LCS 1: precision 1, recall 1/2, F with beta 1.2.
    beta_squared = 1.2**2
    assert result.corpus["rouge_l"] == pytest.approx((1 + beta_squared) * 0.5 / (0.5 + beta_squared))


def test_score_articles_a_and_an(scorer):
    right = scorer.score(["an apple"], [["an apple"]])
    wrong = scorer.score(["a apple"], [["an apple"]])
    assert right.corpus["bleu_1"] == pytest.approx(1.0, abs=1e-6)
    assert wrong.corpus["bleu_1"] == pytest.approx(0.5, abs=1e-6)
    assert wrong.corpus["rouge_l"] == pytest.approx(0.5)
    assert wrong.corpus["meteor"] < right.corpus["meteor"]


def test_score_line_breaks_no_shift(scorer):
    references = [["a red cat\nsits on the mat", "a cat\r\non a mat"], ["a blue dog runs"], ["a green bird flies"]]
    clean_references = [["a red cat sits on the mat", "a cat on a mat"], ["a blue dog runs"], ["a green bird flies"]]
    broken = scorer.score(["a red\u2028cat sits\x0bon the mat", "a blue\ndog\nruns", "a green | bird ||| flies"], references)
    clean = scorer.score(["a red cat sits on the mat", "a blue dog runs", "a green bird flies"], clean_references)
    for name in METRIC_NAMES:
        assert broken.per_image[name] == pytest.approx(clean.per_image[name]), name
    assert broken.per_image["rouge_l"] == pytest.approx([1.0, 1.0, 1.0])


def test_score_non_ascii_text_keeps_alignment(scorer):
    result = scorer.score(["a café 😀 in paris", "a blue dog"], [["a café in paris"], ["a blue dog"]])
    assert result.per_image["rouge_l"] == pytest.approx([1.0, 1.0])


def test_score_matches_plain_pycocoevalcap(scorer):
    # Repeated pairs exercise the deduplication; the values must equal per-image scoring.
    references = [["a photo of a cat", "a small cat"], ["a photo of a dog", "a big dog"], ["a bird in the sky"]]
    hypotheses = ["a photo of a cat", "a photo of a cat", "a dog", "a photo of a dog", "a bird", "a photo of a cat", "a small bird in the sky"]
    image_references = [references[0], references[1], references[1], references[1], references[2], references[0], references[2]]
    result = scorer.score(hypotheses, image_references)

    tokenized_hypotheses = {index: [text] for index, text in enumerate(scorer.tokenize(hypotheses))}
    tokenized_references = {index: scorer.tokenize(refs) for index, refs in enumerate(image_references)}
    bleu, _ = Bleu(4).compute_score(tokenized_references, tokenized_hypotheses, verbose=0)
    rouge, _ = Rouge().compute_score(tokenized_references, tokenized_hypotheses)
    cider, cider_per_image = Cider().compute_score(tokenized_references, tokenized_hypotheses)
    # The scorer's METEOR process is a pycocoevalcap Meteor; its unmodified compute_score is the reference.
    meteor_score, _ = Meteor.compute_score(scorer._meteor, tokenized_references, tokenized_hypotheses)

    for order in range(4):
        assert result.corpus[f"bleu_{order + 1}"] == pytest.approx(bleu[order], rel=1e-12)
    assert result.corpus["rouge_l"] == pytest.approx(rouge, rel=1e-12)
    assert result.corpus["cider"] == pytest.approx(cider, rel=1e-12)
    assert result.per_image["cider"] == pytest.approx(list(cider_per_image), rel=1e-12)
    assert result.corpus["meteor"] == pytest.approx(meteor_score, rel=1e-9)


def test_score_cider_note_for_single_class(scorer):
    result = scorer.score(["a cat", "a small cat"], [["a cat", "a small cat"], ["a cat", "a small cat"]])
    assert result.corpus["cider"] == 0.0
    assert any("same references" in note for note in result.notes)


def test_score_cider_note_for_small_set(scorer):
    result = scorer.score(["a cat", "a dog"], [["a cat"], ["a dog"]])
    assert any("only 2 images" in note for note in result.notes)


def test_score_no_cider_note_large_set():
    references = [[f"a photo of thing {index}"] for index in range(120)]
    with CaptionScorer(["cider"], tokenizer="simple") as scorer:
        result = scorer.score([f"a photo of thing {index}" for index in range(120)], references)
    assert result.notes == []


def test_score_rejects_mismatched_lengths(scorer):
    with pytest.raises(ValueError, match="2 hypotheses but 1"):
        scorer.score(["a", "b"], [["a"]])


def test_score_rejects_image_without_references(scorer):
    with pytest.raises(ValueError, match="image 1"):
        scorer.score(["a cat", "a dog"], [["a cat"], []])


def test_scorer_builds_only_requested():
    with CaptionScorer(["bleu_1", "rouge_l"], tokenizer="simple") as scorer:
        assert scorer._meteor is None
        result = scorer.score(["a cat"], [["a cat"]])
    assert set(result.corpus) == {"bleu_1", "rouge_l"}


def test_score_captions_returns_corpus():
    scores = score_captions(["a red cat"], [["a red cat"]], metrics=["bleu_1", "cider"], tokenizer="simple")
    assert set(scores) == {"bleu_1", "cider"}
    assert scores["bleu_1"] == pytest.approx(1.0, abs=1e-6)


def test_simple_tokenizer_matches_ptb(scorer):
    captions = ["A photo of an apple, a kind of fruit.", "a medium-sized mammal", "The  CAT!"]
    with CaptionScorer(["bleu_1"], tokenizer="simple") as simple:
        assert simple.tokenize(captions) == scorer.tokenize(captions)


def test_ptb_tokenizer_count_check():
    # A vertical tab makes the Java tokenizer start a new line; sanitising normally removes it.
    with pytest.raises(ScorerError, match="returned 3 lines for 2 captions"):
        run_ptb_tokenizer(find_java(), ["a cat\x0bon a mat", "a dog"])


def test_ptb_tokenizer_rejects_newline():
    with pytest.raises(ValueError, match="line break"):
        run_ptb_tokenizer(find_java(), ["a\ncat"])


def _empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    folder = tmp_path / "no-java"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))


def test_java_missing_message(monkeypatch, tmp_path):
    _empty_path(monkeypatch, tmp_path)
    with pytest.raises(JavaNotFoundError) as raised:
        CaptionScorer(METRIC_NAMES)
    message = str(raised.value)
    assert "METEOR" in message
    assert "PTB tokenizer" in message
    assert "--tokenizer simple --metrics bleu_1,bleu_2,bleu_3,bleu_4,rouge_l,cider" in message
    assert "\n" not in message


def test_java_missing_simple_tokenizer_meteor(monkeypatch, tmp_path):
    _empty_path(monkeypatch, tmp_path)
    with pytest.raises(JavaNotFoundError) as raised:
        CaptionScorer(["bleu_4", "meteor"], tokenizer="simple")
    assert "METEOR needs it" in str(raised.value)
    assert "--metrics bleu_4" in str(raised.value)
    assert "PTB" not in str(raised.value)


def test_java_missing_ptb_without_meteor(monkeypatch, tmp_path):
    _empty_path(monkeypatch, tmp_path)
    with pytest.raises(JavaNotFoundError) as raised:
        CaptionScorer(["bleu_4"])
    assert "the PTB tokenizer (which every metric uses by default) needs it" in str(raised.value)
    assert str(raised.value).endswith("or pass --tokenizer simple")
    assert "METEOR" not in str(raised.value)


def test_java_missing_simple_tokenizer_works(monkeypatch, tmp_path):
    _empty_path(monkeypatch, tmp_path)
    scores = score_captions(["a cat"], [["a cat"]], metrics=["bleu_1", "rouge_l", "cider"], tokenizer="simple")
    assert scores["rouge_l"] == pytest.approx(1.0)


def test_meteor_timeout_kills_process():
    meteor = MeteorProcess(find_java(), timeout_s=0.05)
    with pytest.raises(ScorerError, match="timed out"):
        meteor.statistics([("a cat", ["a cat"])])
    assert meteor.meteor_p.poll() is not None


def fake_java(folder: Path, script: str) -> str:
    """Write an executable shell script named java into ``folder`` and return its path."""
    path = folder / "java"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_meteor_crash_reports_exit_code(tmp_path):
    java = fake_java(tmp_path, "echo 'Error: could not reserve heap' >&2\nexit 3\n")
    with MeteorProcess(java) as meteor:
        with pytest.raises(ScorerError, match="exit code 3: Error: could not reserve heap"):
            meteor.statistics([("a cat", ["a cat"])])
    assert meteor.meteor_p.poll() == 3


def test_meteor_closed_output_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(java_module, "METEOR_EXIT_WAIT_S", 0.2)
    java = fake_java(tmp_path, "exec >&-\necho 'Error: output closed' >&2\nsleep 30\n")
    with MeteorProcess(java) as meteor:
        with pytest.raises(ScorerError, match="METEOR closed its output but is still running: Error: output closed"):
            meteor.statistics([("a cat", ["a cat"])])
    assert meteor.meteor_p.poll() is not None


def test_parse_metric_names_forms():
    assert parse_metric_names(None) == METRIC_NAMES
    assert parse_metric_names(["cider,BLEU-4", "meteor"]) == ("bleu_4", "meteor", "cider")
    with pytest.raises(HybridcapError, match="unknown metric 'spice'"):
        parse_metric_names(["spice"])


def test_scorer_close_stops_meteor():
    scorer = CaptionScorer(["meteor"])
    process = scorer._meteor.meteor_p
    scorer.close()
    assert process.poll() is not None


def test_score_matches_plain_pycocoevalcap_random_set():
    # Many images share (caption, references) pairs, as template captions do.
    generator = random.Random(0)
    class_references = [[f"a photo of a thing{label}", f"a blurry picture of a thing{label} outside"] for label in range(8)]
    templates = ["a photo of a thing{}", "a picture of thing{}", "thing{} outside", "a blurry photo"]
    labels = [generator.randrange(8) for _ in range(300)]
    hypotheses = [generator.choice(templates).format(generator.randrange(8)) for _ in labels]
    references = [class_references[label] for label in labels]
    with CaptionScorer(["bleu_1", "bleu_4", "rouge_l", "cider"], tokenizer="simple") as simple:
        result = simple.score(hypotheses, references)
        tokenized_hypotheses = {index: [text] for index, text in enumerate(simple.tokenize(hypotheses))}
        tokenized_references = {index: simple.tokenize(refs) for index, refs in enumerate(references)}

    bleu, _ = Bleu(4).compute_score(tokenized_references, tokenized_hypotheses, verbose=0)
    rouge, _ = Rouge().compute_score(tokenized_references, tokenized_hypotheses)
    cider, cider_per_image = Cider().compute_score(tokenized_references, tokenized_hypotheses)
    assert result.corpus["bleu_1"] == pytest.approx(bleu[0], rel=1e-12)
    assert result.corpus["bleu_4"] == pytest.approx(bleu[3], rel=1e-12)
    assert result.corpus["rouge_l"] == pytest.approx(rouge, rel=1e-12)
    assert result.corpus["cider"] == pytest.approx(cider, rel=1e-12)
    assert result.per_image["cider"] == pytest.approx(list(cider_per_image), rel=1e-12)
