"""Evaluation: recognise a labelled dataset with a saved model and score it (`hmer-hf evaluate`, scripts/evaluate.py).

Predictions come from the `image-to-latex` pipeline, so they are exactly what `hmer-hf predict` would print; the
samples are fed to it in size-sorted batches under a pixel budget (little padding). Scores come from the ExpRate
`evaluate` metric in this repository (`metrics/exprate`). Results: `predictions.jsonl` (id, reference, prediction,
score) and `metrics.json` (ExpRate, ExpRate<=1/2/3, per-length buckets, throughput).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import datasets

# The metric lives beside the package in the repository (an `evaluate` module is loaded from a folder).
# Shipped inside the package (so a wheel install has it); the repository's metrics/exprate links here.
EXPRATE_METRIC_DIR = Path(__file__).resolve().parent / "metrics" / "exprate"

# Reference-length buckets (in tokens): (label, lowest, highest or None for no upper end).
LENGTH_BUCKETS = (("1-5", 1, 5), ("6-10", 6, 10), ("11-20", 11, 20), ("21-40", 21, 40), ("41+", 41, None))

# Evaluation batches are capped by padded pixels as well as by count, so one huge image cannot blow up a batch.
DEFAULT_EVAL_MAX_PIXELS = 2_000_000


def load_exprate(path: str | Path | None = None):
    """Load the ExpRate metric (shipped in `hmer_hf/metrics/exprate`, or `path`) with `evaluate.load`, offline."""
    import evaluate

    path = Path(path) if path is not None else EXPRATE_METRIC_DIR
    if not (path / "exprate.py").is_file():
        raise FileNotFoundError(
            f"ExpRate metric not found at {path}; reinstall hmer-hf (it ships hmer_hf/metrics/exprate) or pass "
            "the folder that holds exprate.py"
        )
    return evaluate.load(str(path))


def select_split(
    dataset: datasets.Dataset | datasets.DatasetDict, split: str | None = None, prefer: str | None = None
) -> datasets.Dataset:
    """One split of what `load_hmer_dataset` returned: `split`, else the only split (or `prefer` among several)."""
    if isinstance(dataset, datasets.Dataset):
        if split not in (None, "", "all"):
            raise ValueError(f"this data has no splits, but split {split!r} was asked for; leave the split out")
        return dataset
    if split:
        if split not in dataset:
            raise ValueError(f"no split {split!r}; this data has {sorted(dataset)}")
        return dataset[split]
    if len(dataset) == 1:
        return next(iter(dataset.values()))
    if prefer in dataset:
        return dataset[prefer]
    raise ValueError(f"this data has several splits {sorted(dataset)}; choose one (--split / *_split)")


def load_split(
    path: str | Path,
    split: str | None = None,
    limit: int | None = None,
    prefer: str | None = None,
    num_proc: int = 1,
    verbose: bool = True,
) -> datasets.Dataset:
    """Load any layout the data layer reads (`load_hmer_dataset`), pick a split (see [`select_split`]) and keep the
    first `limit` samples. `num_proc` parallelises rendering when the layout is ink (CROHME root, InkML folder)."""
    from .data import detect_layout, load_hmer_dataset
    from .data.prepare import RENDERING_LAYOUTS

    layout = detect_layout(path)
    kwargs = {"num_proc": num_proc} if layout in RENDERING_LAYOUTS else {}  # the other builders take no num_proc
    if layout != "saved":  # a saved dataset is just loaded; builders show progress while checking/rendering
        kwargs["progress"] = verbose
    dataset, report = load_hmer_dataset(path, layout=layout, **kwargs)
    dataset = select_split(dataset, split, prefer)
    if report and verbose:
        print(f"{path}: {report.summary()}", file=sys.stderr)
    if limit is not None and limit < dataset.num_rows:
        dataset = dataset.select(range(limit))
    return dataset


def size_sorted_batches(dataset: datasets.Dataset, batch_size: int, max_pixels: int) -> list[list[int]]:
    """Dataset indices in batches of similar image size (at most `batch_size` samples and `max_pixels` padded)."""
    from .data import PixelBudgetBatchSampler

    sampler = PixelBudgetBatchSampler.from_dataset(dataset, max_pixels, max_batch_size=batch_size, shuffle=False)
    return sampler.batches()


def recognise_dataset(
    pipe,
    dataset: datasets.Dataset,
    batch_size: int = 16,
    max_pixels: int = DEFAULT_EVAL_MAX_PIXELS,
    progress: bool = True,
    **generate_kwargs,
) -> list[dict[str, Any]]:
    """Run an `image-to-latex` pipeline over a dataset in size-sorted batches.

    Returns one record per sample, in dataset order: `id`, `reference`, `prediction`, `score`, and `error` for an
    image the image processor rejected (its prediction is empty, so it counts as wrong).
    """
    from tqdm.auto import tqdm

    records: list[dict[str, Any] | None] = [None] * dataset.num_rows
    batches = size_sorted_batches(dataset, batch_size, max_pixels)
    with tqdm(total=dataset.num_rows, desc="evaluating", unit="expr", disable=not progress) as bar:
        for indices in batches:
            rows = dataset[indices]  # decodes only this batch's images
            try:
                results = pipe(rows["image"], batch_size=len(indices), **generate_kwargs)
            except ValueError:
                # One unusable image must not sink its batch: retry the batch one image at a time.
                results = []
                for image in rows["image"]:
                    try:
                        results.append(pipe(image, **generate_kwargs))
                    except ValueError as err:
                        results.append(err)
            for i, sample_id, reference, result in zip(indices, rows["id"], rows["latex"], results):
                record = {"id": sample_id, "reference": reference}
                if isinstance(result, Exception):
                    record.update(prediction="", score=None, error=str(result))
                else:
                    record.update(prediction=result["generated_text"], score=result["score"])
                records[i] = record
            bar.update(len(indices))
    return records


def length_bucket(length: int) -> str:
    """The LENGTH_BUCKETS label of a reference length in tokens."""
    for label, low, high in LENGTH_BUCKETS:
        if length >= low and (high is None or length <= high):
            return label
    return LENGTH_BUCKETS[0][0]  # an empty reference cannot come from the data layer; keep it countable anyway


def score_records(records: list[dict[str, Any]], metric=None) -> dict[str, Any]:
    """ExpRate, ExpRate<=1/2/3 and per-length buckets of prediction records (adds `edit_distance` to each record)."""
    metric = metric if metric is not None else load_exprate()
    predictions = [r["prediction"] for r in records]
    references = [r["reference"] for r in records]
    result = metric.compute(predictions=predictions, references=references, per_sample=True)
    distances, lengths = result.pop("edit_distances"), result.pop("reference_lengths")
    buckets: dict[str, dict[str, Any]] = {}
    for record, distance, length in zip(records, distances, lengths):
        record["edit_distance"] = distance
        bucket = buckets.setdefault(length_bucket(length), {"count": 0, "correct": 0})
        bucket["count"] += 1
        bucket["correct"] += distance == 0
    result["length_buckets"] = {
        label: {**buckets[label], "exprate": buckets[label]["correct"] / buckets[label]["count"]}
        for label, _, _ in LENGTH_BUCKETS
        if label in buckets
    }
    result["num_errors"] = sum("error" in r for r in records)
    return result


def evaluate_model(
    model: str | Path,
    data: str | Path,
    split: str | None = None,
    num_beams: int = 1,
    batch_size: int = 16,
    max_pixels: int = DEFAULT_EVAL_MAX_PIXELS,
    limit: int | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    **generate_kwargs,
) -> dict[str, Any]:
    """Evaluate a saved model on a dataset folder; writes predictions.jsonl and metrics.json to `out` if given."""
    from transformers import pipeline

    from . import TASK

    dataset = load_split(data, split, limit, verbose=progress)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = pipeline(TASK, model=str(model), device=device)
    generate_kwargs = {"num_beams": num_beams, **generate_kwargs}
    syntax = generate_kwargs.get("syntax_constraints")
    if syntax is None:
        syntax = bool(getattr(pipe.model.config, "syntax_constrained_decoding", False))
    start = time.perf_counter()
    records = recognise_dataset(pipe, dataset, batch_size, max_pixels, progress, **generate_kwargs)
    seconds = time.perf_counter() - start
    metrics = score_records(records)
    metrics.update(
        model=str(model), data=str(data), split=split, num_beams=num_beams, syntax_constraints=syntax,
        seconds=round(seconds, 3),
        expressions_per_second=len(records) / seconds if seconds > 0 else None, device=str(device),
    )
    if out is not None:
        write_results(out, records, metrics)
    return metrics


def write_results(out: str | Path, records: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
    """Write `predictions.jsonl` (one record per line, dataset order) and `metrics.json` into folder `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "predictions.jsonl").open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def format_metrics(metrics: dict[str, Any]) -> str:
    """A short human-readable report of `evaluate_model`'s metrics."""
    lines = [
        f"expressions: {metrics['num_samples']}" + (f" ({metrics['num_errors']} unreadable)" if metrics.get(
            "num_errors") else ""),
        f"ExpRate: {100 * metrics['exprate']:.2f}%   <=1: {100 * metrics['exprate_le1']:.2f}%   "
        f"<=2: {100 * metrics['exprate_le2']:.2f}%   <=3: {100 * metrics['exprate_le3']:.2f}%",
        "by reference length (tokens):",
    ]
    for label, bucket in metrics["length_buckets"].items():
        lines.append(f"  {label:>6}: {100 * bucket['exprate']:6.2f}%  ({bucket['correct']}/{bucket['count']})")
    if metrics.get("expressions_per_second"):
        syntax = "on" if metrics.get("syntax_constraints") else "off"
        lines.append(
            f"throughput: {metrics['expressions_per_second']:.2f} expressions/s ({metrics['seconds']:.1f} s, "
            f"num_beams={metrics['num_beams']}, syntax constraints {syntax}, {metrics['device']})"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `evaluate` arguments to a parser (or subparser); returns it."""
    parser.description = (
        "Recognise a labelled dataset with a saved model and report ExpRate, ExpRate<=1/2/3 (token edit distance), "
        "ExpRate by reference length and throughput; writes predictions.jsonl and metrics.json with --out."
    )
    parser.add_argument("--model", required=True, help="model folder written by save_pretrained (e.g. RUN/best)")
    parser.add_argument(
        "--data", required=True,
        help="labelled data in any layout the data layer reads: prepared dataset, CoMER/BTTR caption folder "
        "(caption.txt + img/), InkML folder, image folder with metadata.jsonl, ...",
    )
    parser.add_argument("--split", default=None, help="split to use when --data holds several (e.g. test_2014)")
    parser.add_argument("--num-beams", type=int, default=1, help="1 = greedy; >1 = bidirectional beam search")
    parser.add_argument("--batch-size", type=int, default=16, help="most expressions per batch")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_EVAL_MAX_PIXELS,
                        help="most padded pixels per batch (batches are formed from similar-size images)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--no-syntax-constraints", action="store_true",
                        help="decode without the LaTeX grammar constraints (on by default: LatexSyntaxLogitsProcessor)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--out", type=Path, default=None, help="folder for predictions.jsonl and metrics.json")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate as described by parsed `args`; prints the report and returns the exit code."""
    generate = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.no_syntax_constraints:
        generate["syntax_constraints"] = False
    try:
        metrics = evaluate_model(
            args.model, args.data, split=args.split, num_beams=args.num_beams, batch_size=args.batch_size,
            max_pixels=args.max_pixels, limit=args.limit, out=args.out, device=args.device,
            progress=not args.no_progress, **generate,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_metrics(metrics))
    if args.out is not None:
        print(f"wrote {Path(args.out) / 'predictions.jsonl'} and {Path(args.out) / 'metrics.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (scripts/evaluate.py)."""
    return run(add_arguments(argparse.ArgumentParser(prog="evaluate")).parse_args(argv))
