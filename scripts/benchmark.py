#!/usr/bin/env python
"""Model benchmark: parameters, training samples/s (fp32 vs bf16 autocast), decode speed (greedy/beam, cached vs
uncached, ms/token vs output length) and peak RSS. Prints Markdown tables; numbers depend on the machine.

    python scripts/benchmark.py                       # CoMER-size model, CROHME 2014 images if ../shared has them
    python scripts/benchmark.py --model DIR           # a trained model (decode lengths are then its own)
    python scripts/benchmark.py --quick               # fewer repetitions
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from pathlib import Path

import torch

from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer
from hmer_hf.training.trainer import has_native_bf16

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CROHME = REPO.parent / "shared" / "data" / "crohme"


def load_samples(crohme: Path, count: int, seed: int = 0) -> tuple[list, list[str]]:
    """Random CROHME 2014 test images and captions, or synthetic CROHME-sized images when the data is absent."""
    caption_file = crohme / "2014" / "caption.txt"
    if caption_file.is_file():
        pairs = [line.split("\t", 1) for line in caption_file.read_text().splitlines() if "\t" in line]
        random.Random(seed).shuffle(pairs)
        chosen = pairs[:count]
        return [str(crohme / "2014" / "img" / f"{n}.bmp") for n, _ in chosen], [c.strip() for _, c in chosen]
    import numpy as np

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        img = np.zeros((94, 256), dtype=np.uint8)  # the median canonical CROHME 2014 size
        img[rng.integers(10, 40) : rng.integers(50, 90), rng.integers(5, 60) : rng.integers(150, 250)] = 255
        images.append(img)
    return images, ["x ^ { 2 } + y ^ { 2 } = 1"] * count


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_it(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_training(model, batch, repeats: int) -> dict[str, float]:
    """Training-step samples/s (forward + backward + SGD step) in fp32 and under bf16 autocast."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    model.train()
    n = batch["pixel_values"].shape[0]
    results = {}
    for name, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):

        def step():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        results[name] = n / time_it(step, repeats)
    model.eval()
    return results


def bench_decoding(model, pixels, repeats: int, max_new_tokens: int):
    """Yields (beams, cached, ms/expression) for greedy and beam 10, cached vs uncached, one expression at a time."""
    n = pixels["pixel_values"].shape[0]
    for beams in (1, 10):
        for cached in (True, False):

            def run():
                for i in range(n):  # one expression at a time: the latency a user sees
                    one = {k: v[i : i + 1] for k, v in pixels.items()}
                    model.generate(**one, num_beams=beams, use_cache=cached, max_new_tokens=max_new_tokens)

            yield beams, cached, 1000 * time_it(run, repeats) / n


def bench_length(model, pixels, lengths: list[int], repeats: int) -> list[tuple]:
    """Greedy ms/token when forced to emit exactly L tokens, cached vs uncached (cached should stay flat)."""
    one = {k: v[:1] for k, v in pixels.items()}
    rows = []
    for length in lengths:
        row = [length]
        for cached in (True, False):
            seconds = time_it(
                lambda: model.generate(
                    **one, use_cache=cached, min_new_tokens=length, max_new_tokens=length, bidirectional_rescoring=False
                ),
                repeats,
            )
            row.append(1000 * seconds / length)
        rows.append(tuple(row))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved model folder (default: a randomly initialised CoMER-size model)")
    parser.add_argument("--config", type=Path,
                        help="a training YAML: build the model (preset + overrides) and image processor it trains")
    parser.add_argument("--channels-last", action="store_true", help="convolutions in channels-last (as the trainer)")
    parser.add_argument("--crohme-dir", type=Path, default=DEFAULT_CROHME)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--decode-samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--max-new-tokens", type=int, default=60, help="decode length cap (a random model never stops)")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else 3
    torch.manual_seed(0)

    if args.model:
        model = HMERForConditionalGeneration.from_pretrained(args.model)
        processor = HMERProcessor.from_pretrained(args.model)
    elif args.config:
        from hmer_hf.training import load_config

        cfg = load_config(args.config)
        model = HMERForConditionalGeneration(HMERConfig.from_preset(cfg.model.preset, **cfg.model.overrides))
        processor = HMERProcessor(HMERImageProcessor(**cfg.model.image_processor), HMERTokenizer())
    else:
        model = HMERForConditionalGeneration(HMERConfig())
        processor = HMERProcessor(HMERImageProcessor(), HMERTokenizer())
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.eval()
    images, captions = load_samples(args.crohme_dir, max(args.batch_size, args.decode_samples))
    params = sum(p.numel() for p in model.parameters())
    print(f"# hmer-hf benchmark (torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"native CPU bf16: {'yes' if has_native_bf16('cpu') else 'no'})\n")
    name = args.model or (f"{args.config}, random init" if args.config else "CoMER-size, random init")
    layout = "channels-last" if args.channels_last else "contiguous"
    print(f"model: {name}; parameters: {params / 1e6:.2f} M; convolutions {layout}\n")

    if not args.skip_training:
        batch = processor(images=images[: args.batch_size], text=captions[: args.batch_size])
        area = float(batch["pixel_mask"].sum()) / args.batch_size
        print(f"## Training step, batch {args.batch_size} (mean image {area:.0f} px, padded {tuple(batch['pixel_values'].shape[2:])})\n")
        print("| precision | samples/s |\n|---|---|")
        for name, value in bench_training(model, batch, repeats).items():
            print(f"| {name} | {value:.2f} |", flush=True)

    pixels = processor(images=images[: args.decode_samples])
    pixels = {k: pixels[k] for k in ("pixel_values", "pixel_mask")}
    print(f"\n## Decoding, {args.decode_samples} expressions one at a time (max {args.max_new_tokens} new tokens)\n")
    print("| beams | cache | ms/expression |\n|---|---|---|")
    for beams, cached, ms in bench_decoding(model, pixels, repeats, args.max_new_tokens):
        label = "greedy" if beams == 1 else f"beam {beams}" + (" (bidirectional)" if model.config.bidirectional else "")
        print(f"| {label} | {'on' if cached else 'off'} | {ms:.1f} |", flush=True)

    print("\n## Greedy ms/token vs output length (forced length)\n")
    print("| tokens | cached ms/token | uncached ms/token |\n|---|---|---|")
    for length, cached_ms, uncached_ms in bench_length(model, pixels, [10, 25, 50, 100], repeats):
        print(f"| {length} | {cached_ms:.2f} | {uncached_ms:.2f} |", flush=True)
    print(f"\npeak RSS: {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()
