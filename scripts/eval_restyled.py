"""Canvas-style input: how well the image processor's ink normalisation maps drawings back to CROHME geometry, and
what it does to accuracy.

    python scripts/eval_restyled.py [--data ../shared/data/crohme/2014] [--model DIR] [--limit N] [--seed 0]
        [--modes off,auto] [--canonical-modes off,auto] [--num-beams 1] [--batch-size 16] [--out restyled.json]

Every test image is restyled as a canvas drawing (`hmer_hf.data.restyle`: dark anti-aliased 6-12 px brush on a light
page, rescaled 0.5-3x, parameters drawn from (seed, image id)). Then:

1. geometry (no model needed): `measure_ink`'s writing size on the restyled copy against the known truth (the restyle
   scale; the canonical images are all at the CROHME size), its stroke width against the brush, which images
   `normalize_ink="auto"` leaves unchanged, and, at CROHME resolution (scale 1), the processed restyled image against
   the processed original: ink height ratio, ink IoU after aligning the ink boxes, stroke width;
2. with --model: ExpRate (and <=1, <=2, <=3 token edits, mean token edit distance) on the canonical images for each `normalize_ink` mode in
   --canonical-modes and on the restyled copies for each mode in --modes, with the model's own processor settings
   otherwise.

3. with a model and both image sets: the gap by restyle brush width and by restyle scale (every copy's parameters are
   known, so each bucket compares the same images canonical and restyled).

Prints the tables and writes everything (per-image geometry, predictions, buckets) to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import numpy as np

# Replace this script's folder on the path by the checkout root (as scripts/evaluate.py does): runs without
# installing, and scripts/evaluate.py must not shadow the `evaluate` library that hmer_hf.evaluation imports.
# (Only when run as a script: tests import it as a module.)
if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from hmer_hf.data.restyle import BRUSH_RANGE, SCALE_RANGE, aligned_ink_iou, restyle_dataset  # noqa: E402
from hmer_hf.evaluation import (  # noqa: E402
    DEFAULT_EVAL_MAX_PIXELS,
    load_split,
    recognise_dataset,
    score_records,
)
from hmer_hf.image_processing_hmer import NORMALIZE_INK, HMERImageProcessor, looks_like_crohme  # noqa: E402
from hmer_hf.rendering_hmer import stroke_width  # noqa: E402

PERCENTILES = (5, 25, 50, 75, 95)


def summarise(values: list[float], around: float | None = 1.0) -> dict[str, Any]:
    """Percentiles of a list, and (for ratios) the share within 10/20/30% of `around`."""
    v = np.asarray(values, dtype=float)
    out: dict[str, Any] = {f"p{q}": round(float(np.percentile(v, q)), 4) for q in PERCENTILES}
    out.update(min=round(float(v.min()), 4), max=round(float(v.max()), 4), n=int(v.size))
    if around is not None:
        for tol in (0.1, 0.2, 0.3):
            out[f"within_{round(100 * tol)}pct"] = round(float(np.mean(np.abs(v / around - 1) <= tol)), 4)
    return out


def _ink_height(values: np.ndarray) -> int:
    """Rows spanned by the ink (pixels above half) of a processed image."""
    rows = np.flatnonzero((values > 0.5).any(axis=1))
    return int(rows[-1] - rows[0] + 1)


def geometry_report(canonical, restyled, progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-image measurements of the restyled copies against their originals, and their summary (see the module
    docstring); processed at CROHME resolution with an otherwise default processor."""
    from tqdm.auto import tqdm

    processor = HMERImageProcessor()
    rows = []
    seconds = {"canonical": 0.0, "restyled": 0.0}
    for original, drawn in tqdm(zip(canonical, restyled), total=len(canonical), desc="geometry", disable=not progress):
        params = drawn["restyle"]
        truth_c, truth_r = processor.measure_ink(original["image"]), processor.measure_ink(drawn["image"])
        start = time.perf_counter()
        c_auto = processor.process_image(original["image"], normalize_ink="auto")
        middle = time.perf_counter()
        r_auto = processor.process_image(drawn["image"], normalize_ink="auto")
        seconds["canonical"] += middle - start
        seconds["restyled"] += time.perf_counter() - middle
        c_off = processor.process_image(original["image"], normalize_ink="off")
        r_off = processor.process_image(drawn["image"], normalize_ink="off")
        rows.append({
            "id": original["id"], "restyle": params,
            "canonical_width": truth_c.stroke_width, "canonical_scale": truth_c.scale,
            "restyled_width": truth_r.stroke_width, "restyled_scale": truth_r.scale,
            "scale_ratio": truth_r.scale / params["scale"],
            "scale_ratio_vs_canonical_reading": truth_r.scale / (params["scale"] * truth_c.scale),
            "width_ratio": truth_r.stroke_width / (params["brush"] * params["scale"]),
            "canonical_unchanged_by_auto": bool(c_auto.shape == c_off.shape and np.array_equal(c_auto, c_off)),
            "canonical_crohme_like": looks_like_crohme(truth_c),
            "restyled_normalised_by_auto": not looks_like_crohme(truth_r),
            "height_ratio_auto": _ink_height(r_auto) / _ink_height(c_off),
            "height_ratio_off": _ink_height(r_off) / _ink_height(c_off),
            "iou_auto": aligned_ink_iou(r_auto > 0.5, c_off > 0.5),
            "iou_off": aligned_ink_iou(r_off > 0.5, c_off > 0.5),
            "iou1_auto": aligned_ink_iou(r_auto > 0.5, c_off > 0.5, tolerance=1),
            "iou1_off": aligned_ink_iou(r_off > 0.5, c_off > 0.5, tolerance=1),
            "output_width_auto": stroke_width(r_auto > 0.5),
            "output_width_canonical": stroke_width(c_off > 0.5),
        })  # fmt: skip
    n = len(rows)
    summary = {
        "images": n,
        "canonical_scale": summarise([r["canonical_scale"] for r in rows]),
        "canonical_width": summarise([r["canonical_width"] for r in rows], around=None),
        "canonical_unchanged_by_auto": sum(r["canonical_unchanged_by_auto"] for r in rows),
        "scale_ratio": summarise([r["scale_ratio"] for r in rows]),
        "scale_ratio_vs_canonical_reading": summarise([r["scale_ratio_vs_canonical_reading"] for r in rows]),
        "width_ratio": summarise([r["width_ratio"] for r in rows]),
        "restyled_normalised_by_auto": sum(r["restyled_normalised_by_auto"] for r in rows),
        "height_ratio_auto": summarise([r["height_ratio_auto"] for r in rows]),
        "height_ratio_off": summarise([r["height_ratio_off"] for r in rows]),
        "iou_auto": summarise([r["iou_auto"] for r in rows], around=None),
        "iou_off": summarise([r["iou_off"] for r in rows], around=None),
        "iou1_auto": summarise([r["iou1_auto"] for r in rows], around=None),
        "iou1_off": summarise([r["iou1_off"] for r in rows], around=None),
        "output_width_auto": summarise([r["output_width_auto"] for r in rows], around=None),
        "output_width_canonical": summarise([r["output_width_canonical"] for r in rows], around=None),
        "ms_per_image_auto": {k: round(1000 * v / n, 2) for k, v in seconds.items()},
    }
    return summary, rows


def exprates(
    model: str | Path,
    sets: dict[str, tuple[Any, list[str]]],
    num_beams: int,
    batch_size: int,
    max_pixels: int,
    progress: bool,
) -> dict[str, dict[str, dict[str, Any]]]:
    """ExpRate metrics per image set and `normalize_ink` mode. `sets` maps a name to (dataset, modes); returns
    {name: {mode: metrics with the per-image "records"}}."""
    from transformers import pipeline

    from hmer_hf import TASK

    pipe = pipeline(TASK, model=str(model), device="cpu")
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for set_name, (dataset, modes) in sets.items():
        for mode in modes:
            pipe.image_processor.normalize_ink = mode  # the pipeline's processor reads its settings per image
            start = time.perf_counter()
            records = recognise_dataset(pipe, dataset, batch_size, max_pixels, progress, num_beams=num_beams)
            metrics = score_records(records)  # adds each record's token edit distance
            metrics.update(
                mean_edit_distance=float(np.mean([r["edit_distance"] for r in records])),
                seconds=round(time.perf_counter() - start, 2),
                records=records,
            )
            results.setdefault(set_name, {})[mode] = metrics
            print(f"{set_name:>9} normalize_ink={mode:<6} ExpRate {100 * metrics['exprate']:.2f}%", file=sys.stderr)
    return results


# Bucket edges for the gap table, spanning the restyle ranges: the brush (px at the CROHME size) in four equal steps,
# the scale (log-uniform) at round factors.
BRUSH_EDGES = tuple(float(e) for e in np.linspace(*BRUSH_RANGE, 5))
SCALE_EDGES = (SCALE_RANGE[0], 0.75, 1.0, 1.5, 2.0, SCALE_RANGE[1])


def gap_by_restyle(
    canonical_records: list[dict[str, Any]], restyled_records: list[dict[str, Any]], params: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Canonical and restyled ExpRate of the same images, bucketed by each copy's restyle brush and scale.

    The three lists are in dataset order (one entry per image; `params` are the restyle parameters). Returns
    {"brush": [...], "scale": [...]}, each bucket {"low", "high", "images", "canonical", "restyled", "gap"} with rates
    in [0, 1]; an image on an inner edge counts in the bucket above it, the top edge is inclusive."""
    if not len(canonical_records) == len(restyled_records) == len(params):
        raise ValueError("gap_by_restyle needs one canonical record, one restyled record and one parameter set per image")
    for c, r in zip(canonical_records, restyled_records):
        if c["id"] != r["id"]:
            raise ValueError(f"records out of step: canonical {c['id']!r} vs restyled {r['id']!r}")
    correct_c = np.array([c["edit_distance"] == 0 for c in canonical_records])
    correct_r = np.array([r["edit_distance"] == 0 for r in restyled_records])
    out: dict[str, list[dict[str, Any]]] = {}
    for key, edges in (("brush", BRUSH_EDGES), ("scale", SCALE_EDGES)):
        values = np.array([float(p[key]) for p in params])
        index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(edges) - 2)
        buckets = []
        for b in range(len(edges) - 1):
            chosen = index == b
            n = int(chosen.sum())
            canon = float(correct_c[chosen].mean()) if n else float("nan")
            drawn = float(correct_r[chosen].mean()) if n else float("nan")
            buckets.append({"low": edges[b], "high": edges[b + 1], "images": n,
                            "canonical": canon, "restyled": drawn, "gap": canon - drawn})  # fmt: skip
        out[key] = buckets
    return out


def format_gap(gaps: dict[str, list[dict[str, Any]]], canonical_mode: str, restyled_mode: str) -> str:
    """The bucketed gap as two small tables (ExpRate in %)."""
    lines = []
    for key, unit in (("brush", " px"), ("scale", "x")):
        lines += [
            f"\n| restyle {key} | images | canonical ({canonical_mode}) | restyled ({restyled_mode}) | gap |",
            "|---|---:|---:|---:|---:|",
        ]
        for b in gaps[key]:
            lines.append(
                f"| {b['low']:g}-{b['high']:g}{unit} | {b['images']} | {100 * b['canonical']:.2f} | "
                f"{100 * b['restyled']:.2f} | {100 * b['gap']:.2f} |"
            )
    return "\n".join(lines)


def format_geometry(summary: dict[str, Any]) -> str:
    """The geometry summary as a few readable lines."""

    def pct(key: str) -> str:
        s = summary[key]
        within = f"  within 10/20/30%: {s['within_10pct']:.3f}/{s['within_20pct']:.3f}/{s['within_30pct']:.3f}" if (
            "within_10pct" in s) else ""
        return " ".join(f"p{q}={s[f'p{q}']:.3f}" for q in PERCENTILES) + within

    n = summary["images"]
    return "\n".join([
        f"images: {n}",
        f"canonical: writing size read {pct('canonical_scale')}",
        f"canonical: stroke width read (px) {pct('canonical_width')}",
        f"canonical images unchanged by normalize_ink=auto: {summary['canonical_unchanged_by_auto']}/{n}",
        f"restyled: size read / true scale {pct('scale_ratio')}",
        f"restyled: size read / (true scale x canonical reading) {pct('scale_ratio_vs_canonical_reading')}",
        f"restyled: stroke width read / (brush x scale) {pct('width_ratio')}",
        f"restyled images normalised by auto: {summary['restyled_normalised_by_auto']}/{n}",
        f"processed restyled / processed canonical ink height, auto: {pct('height_ratio_auto')}",
        f"                                                     off:  {pct('height_ratio_off')}",
        f"aligned ink IoU with the processed canonical image, auto: {pct('iou_auto')}",
        f"                                                    off:  {pct('iou_off')}",
        f"the same with 1 px tolerance, auto: {pct('iou1_auto')}",
        f"                              off:  {pct('iou1_off')}",
        f"output stroke width (px), restyled auto: {pct('output_width_auto')}",
        f"                          canonical:     {pct('output_width_canonical')}",
        f"processing time, normalize_ink=auto (ms/image): {summary['ms_per_image_auto']}",
    ])  # fmt: skip


def format_exprates(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """ExpRate table: one row per image set and mode."""
    lines = [
        "| images | normalize_ink | ExpRate | <=1 | <=2 | <=3 | mean token edits | n |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for set_name, by_mode in results.items():
        for mode, m in by_mode.items():
            lines.append(
                f"| {set_name} | {mode} | {100 * m['exprate']:.2f} | {100 * m['exprate_le1']:.2f} | "
                f"{100 * m['exprate_le2']:.2f} | {100 * m['exprate_le3']:.2f} | {m['mean_edit_distance']:.2f} | "
                f"{m['num_samples']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=repo.parent / "shared" / "data" / "crohme" / "2014",
                    help="canonical test images with labels (CoMER layout: caption.txt + img/)")
    ap.add_argument("--model", type=Path, default=None, help="model folder; without it only the geometry is measured")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--seed", type=int, default=0, help="restyle seed (with each image id)")
    ap.add_argument("--modes", default="off,auto",
                    help=f"normalize_ink modes for the restyled images, from {NORMALIZE_INK}")
    ap.add_argument("--canonical-modes", default=None,
                    help="normalize_ink modes for the canonical images (default: --modes)")
    ap.add_argument("--num-beams", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_EVAL_MAX_PIXELS)
    ap.add_argument("--skip-geometry", action="store_true", help="only the ExpRate table")
    ap.add_argument("--out", type=Path, default=None, help="JSON file for all results")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    canonical_modes = [m.strip() for m in (args.canonical_modes or args.modes).split(",") if m.strip()]
    if not set(modes + canonical_modes) <= set(NORMALIZE_INK):
        ap.error(f"modes must be among {NORMALIZE_INK}, got {modes} and {canonical_modes}")
    progress = not args.no_progress
    if not progress:
        datasets.disable_progress_bars()

    canonical = load_split(args.data, limit=args.limit, verbose=progress)
    restyled = restyle_dataset(canonical, args.seed)
    out: dict[str, Any] = {"data": str(args.data), "limit": args.limit, "seed": args.seed, "images": len(canonical)}
    if not args.skip_geometry:
        summary, per_image = geometry_report(canonical, restyled, progress)
        out["geometry"] = {"summary": summary, "per_image": per_image}
        print(format_geometry(summary))
    if args.model is not None:
        sets = {"canonical": (canonical, canonical_modes), "restyled": (restyled, modes)}
        results = exprates(args.model, sets, args.num_beams, args.batch_size, args.max_pixels, progress)
        info = args.model / "trainer_info.json"  # the training step of a checkpoint folder, when it says
        out.update(
            model=str(args.model), num_beams=args.num_beams, exprate=results,
            model_info=json.loads(info.read_text()) if info.is_file() else None,
        )
        print(f"\nmodel {args.model}, {len(canonical)} images, num_beams={args.num_beams}, seed {args.seed}")
        print(format_exprates(results))
        if results.get("canonical") and results.get("restyled"):
            canonical_mode = next(iter(results["canonical"]))
            params = restyled["restyle"]
            out["gap_by_restyle"] = {}
            for mode, metrics in results["restyled"].items():
                gaps = gap_by_restyle(results["canonical"][canonical_mode]["records"], metrics["records"], params)
                out["gap_by_restyle"][mode] = gaps
                print(format_gap(gaps, canonical_mode, mode))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
