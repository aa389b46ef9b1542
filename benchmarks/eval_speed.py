"""Time `hybridcap eval` on the 10,000 real test images, part by part, and print the seconds.

Usage (from the repository root):
    PYTHONPATH=. python benchmarks/eval_speed.py [--run RUN_DIR] [--data-root ROOT] [--threads N] [--beam K] [--precision bf16]

Without --run, a run folder with randomly initialised networks of the trainer's default sizes
(DCGAN width 64, projection head 1024, LSTM 512) is written to a temporary folder. An untrained
decoder rarely ends its beams early, so its generation time is a pessimistic estimate. Without
--data-root, the real archive in ../shared/data is prepared into a temporary folder first.
The target is under 20 s for caption generation plus all seven metrics on the test split.

Besides the run's own captions, the metrics are also timed on "template" captions, like those of
a trained template captioner. Half of the images get a reference caption of their true class and
the others one of a random class.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = REPOSITORY / ".." / "shared" / "data" / "cifar-100-python.tar.gz"


def write_random_run(run_dir: Path, data_root: Path) -> None:
    """Write a captioner run folder whose weights are freshly initialised, in the trainer's layout."""
    from hybridcap.datasets import load_prepared
    from hybridcap.io import atomic_write_json, save_weights
    from hybridcap.networks.captioner import CaptionerNetworkConfig
    from hybridcap.networks.dcgan import DcganConfig
    from hybridcap.training.caption_batches import caption_token_length
    from hybridcap.training.captioner import CaptionerConfig
    from hybridcap.training.inference import build_captioner

    data = load_prepared(data_root)
    dcgan = DcganConfig()
    network = CaptionerNetworkConfig(
        encoder_features=4 * dcgan.width * 4 * 4,
        vocabulary_size=len(data.vocabulary),
        max_caption_length=caption_token_length(data.captions),
    )
    training = CaptionerConfig(data_root=str(data_root), out=str(run_dir))
    metadata = {"network": network.to_dict(), "dcgan": dcgan.to_dict(), "epoch": 0, "training": training.to_dict()}
    model = build_captioner(metadata)
    save_weights(run_dir / "best.safetensors", model.state_dict(), metadata)
    atomic_write_json(run_dir / "vocabulary.json", data.vocabulary.to_dict())
    atomic_write_json(
        run_dir / "captions.json",
        {"fine_names": data.fine_names, "coarse_names": data.coarse_names, "fine_to_coarse": data.fine_to_coarse, "captions": data.captions},
    )


def time_scoring(label: str, scorer, hypotheses: list[str], references: list[list[str]]) -> None:
    """Print the time of each metric on one caption set, then of one full ``score`` call."""
    from hybridcap.metrics import captioning

    start = time.perf_counter()
    scorer.pretokenize([*hypotheses, *(caption for image_references in references[:1] for caption in image_references)])
    tokenize_seconds = time.perf_counter() - start
    hypothesis_tokens = scorer.tokenize(hypotheses)
    reference_tokens = [tuple(scorer.tokenize(image_references)) for image_references in references]
    pair_index: dict = {}
    image_pairs = [pair_index.setdefault(pair, len(pair_index)) for pair in zip(hypothesis_tokens, reference_tokens)]
    pairs = list(pair_index)

    parts = {}
    for name, function in (
        ("bleu", lambda: captioning._score_bleu(pairs, image_pairs)),
        ("rouge_l", lambda: captioning._score_rouge(pairs, image_pairs)),
        ("cider", lambda: captioning._score_cider(pairs, image_pairs)),
        ("meteor", lambda: captioning._score_meteor(scorer._meteor, pairs, image_pairs)),
    ):
        start = time.perf_counter()
        function()
        parts[name] = time.perf_counter() - start

    start = time.perf_counter()
    result = scorer.score(hypotheses, references)
    total = time.perf_counter() - start
    print(f"{label}: {len(set(hypotheses))} distinct captions, {len(pairs)} distinct (caption, references) pairs")
    print(f"  PTB tokenisation of new captions: {tokenize_seconds:.2f} s")
    print("  one metric at a time: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts.items()))
    print(f"  all seven in one score() call (METEOR beside the Python scorers): {total:.2f} s")
    print("  scores: " + ", ".join(f"{name} {value:.3f}" for name, value in result.corpus.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="captioner run folder; default: random weights")
    parser.add_argument("--data-root", type=Path, help="prepared CIFAR-100 folder; default: prepare the real archive")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 keeps torch's default")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast precision of generation")
    arguments = parser.parse_args()

    start = time.perf_counter()
    import torch

    print(f"import torch: {time.perf_counter() - start:.2f} s")
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    print(f"torch threads: {torch.get_num_threads()}")

    from hybridcap.datasets import load_prepared, prepare_cifar100
    from hybridcap.metrics.captioning import CaptionScorer
    from hybridcap.training.evaluation import baseline_captions, evaluate_run
    from hybridcap.training.inference import load_captioner

    with tempfile.TemporaryDirectory(prefix="hybridcap-eval-benchmark-") as temporary:
        temporary = Path(temporary)
        data_root = arguments.data_root
        if data_root is None:
            if not DEFAULT_ARCHIVE.is_file():
                sys.exit(f"archive {DEFAULT_ARCHIVE} not found; pass --data-root")
            data_root = temporary / "cifar100"
            start = time.perf_counter()
            prepare_cifar100(data_root, archive=DEFAULT_ARCHIVE)
            print(f"prepare real data: {time.perf_counter() - start:.1f} s (not part of eval)")
        run_dir = arguments.run
        if run_dir is None:
            run_dir = temporary / "captioner"
            write_random_run(run_dir, data_root)
            print("run: random weights of the default sizes (generation time is pessimistic)")
        data = load_prepared(data_root)
        test = data.split("test")

        # Part by part, with METEOR started first as evaluate_run does.
        start = time.perf_counter()
        scorer = CaptionScorer()
        start_loading = time.perf_counter()
        loaded = load_captioner(run_dir, device="cpu")
        print(f"load_captioner: {time.perf_counter() - start_loading:.2f} s")

        start_generation = time.perf_counter()
        captions = loaded.caption(test.images, beam_size=arguments.beam, batch_size=500, precision=arguments.precision)
        generation_seconds = time.perf_counter() - start_generation
        print(f"generate {len(captions)} captions, beam {arguments.beam}, {arguments.precision}: {generation_seconds:.2f} s")

        start_wait = time.perf_counter()
        scorer._meteor.statistics([("a cat", ["a cat"])])
        print(f"METEOR still loading after generation: waited {time.perf_counter() - start_wait:.2f} s more "
              f"({time.perf_counter() - start:.1f} s after it was started)")

        labels = test.fine_labels.tolist()
        references = [data.captions[label] for label in labels]
        time_scoring("run's captions", scorer, captions, references)
        floor, ceiling = baseline_captions(labels, data.captions, seed=0)
        template = [ceiling[index] if index % 2 == 0 else floor[index] for index in range(len(labels))]
        time_scoring("template captions (50% right class)", scorer, template, references)
        time_scoring("floor captions", scorer, floor, references)
        scorer.close()

        # The whole command as the CLI runs it: generation, model + floor + ceiling, files.
        start = time.perf_counter()
        result = evaluate_run(run_dir, splits=("test",), beam_size=arguments.beam, device="cpu", precision=arguments.precision)
        total = time.perf_counter() - start
        seconds = result.splits["test"].seconds
        print(f"evaluate_run --split test, all seven metrics: {total:.1f} s "
              f"(generation {seconds['generation']:.1f} s, scoring model + floor + ceiling {seconds['scoring']:.1f} s; target < 20 s)")
        print(json.dumps(result.metrics["splits"]["test"]["model"], sort_keys=True))


if __name__ == "__main__":
    main()
