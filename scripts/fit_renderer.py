"""Fit and check render_strokes against the canonical CROHME 2014 offline images.

    python scripts/fit_renderer.py [--crohme ../shared/data/crohme] [--limit N] [--reference-height H]

For the 986 pairs 2014_inkml/NAME.inkml <-> 2014/img/NAME.bmp it prints:
  * what the canonical images are (value set, margins) and the fitted size rule: per image, the true scale
    (from the canonical image size) times the reference stroke height of the ink -> the reference height in px;
  * the median ratio of rendered to canonical height and width;
  * stroke width of both (ink area / skeleton length, Zhang-Suen thinning);
  * pixel IoU of the binarised ink after aligning bounding boxes (rendered crop resized to the canonical crop),
    exact and with 1 px tolerance;
  * render speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hmer_hf.data.inkml import read_inkml  # noqa: E402
from hmer_hf.data.render import MARGIN, REFERENCE_HEIGHT, STROKE_WIDTH, ink_scale, render_strokes  # noqa: E402
from hmer_hf.rendering_hmer import skeletonize  # noqa: E402  (Zhang-Suen thinning)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in px: ink area divided by the length of its skeleton."""
    skeleton = skeletonize(ink)
    return float(ink.sum() / max(skeleton.sum(), 1))


def crop(ink: np.ndarray) -> np.ndarray:
    """The ink's bounding box."""
    ys, xs = np.nonzero(ink)
    return ink[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def margins_of(ink: np.ndarray) -> tuple[int, int, int, int]:
    """Background rows/columns (top, bottom, left, right) around the ink."""
    ys, xs = np.nonzero(ink)
    return int(ys.min()), ink.shape[0] - 1 - int(ys.max()), int(xs.min()), ink.shape[1] - 1 - int(xs.max())


def dilate(ink: np.ndarray) -> np.ndarray:
    """3x3 binary dilation (1 px tolerance)."""
    out = ink.copy()
    for n in _neighbours(ink.astype(np.uint8)):
        out |= n.astype(bool)
    return out


def aligned_iou(rendered: np.ndarray, canonical: np.ndarray) -> tuple[float, float]:
    """IoU of the binarised ink after resizing the rendered ink box to the canonical one; exact and 1-px tolerant."""
    target = crop(canonical)
    box = Image.fromarray(crop(rendered).astype(np.uint8) * 255)
    ours = np.asarray(box.resize((target.shape[1], target.shape[0]), Image.Resampling.BILINEAR)) >= 128
    iou = (ours & target).sum() / max((ours | target).sum(), 1)
    # tolerant: a pixel matches when the other image has ink within 1 px
    hit = (ours & dilate(target)).sum() + (target & dilate(ours)).sum()
    tolerant = hit / max(ours.sum() + target.sum(), 1)
    return float(iou), float(tolerant)


def pct(values, qs=(5, 25, 50, 75, 95)) -> str:
    """Percentiles as a compact string."""
    return " ".join(f"p{q}={v:.3f}" for q, v in zip(qs, np.percentile(values, qs)))


def main() -> None:
    """Command-line entry point."""
    repo = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crohme", type=Path, default=repo.parent / "shared" / "data" / "crohme")
    ap.add_argument("--limit", type=int, default=None, help="only the first N pairs (sorted by name)")
    ap.add_argument("--reference-height", type=float, default=REFERENCE_HEIGHT)
    ap.add_argument("--stroke-width", type=int, default=STROKE_WIDTH)
    args = ap.parse_args()

    names = sorted(p.stem for p in (args.crohme / "2014" / "img").glob("*.bmp"))[: args.limit]
    inks, canon = [], []
    values: set[int] = set()
    margins: set[tuple[int, int, int, int]] = set()
    for name in names:
        a = np.asarray(Image.open(args.crohme / "2014" / "img" / f"{name}.bmp").convert("L"))
        values |= set(np.unique(a).tolist())
        margins.add(margins_of(a > 127))
        inks.append(read_inkml(args.crohme / "2014_inkml" / f"{name}.inkml").traces)
        canon.append(a > 127)
    print(f"{len(names)} pairs; canonical pixel values: {sorted(values)[:8]}{' ...' if len(values) > 8 else ''}; "
          f"ink margins (top, bottom, left, right): {sorted(margins)[:4]}")

    # Size rule. The canonical image spans extent * s + stroke width + margins; solving for the true s of each image
    # and multiplying by the ink's reference stroke height gives the reference height in px that the rule targets.
    pad = sum(MARGIN) + round(args.stroke_width)
    fitted = []
    for traces, c in zip(inks, canon):
        pts = np.concatenate(traces)
        extent = np.ptp(pts, axis=0)
        s_true = (c.shape[1] + c.shape[0] - 2 * pad) / (extent[0] + extent[1])
        fitted.append(s_true / ink_scale(traces, 1.0))
    print(f"size rule: reference stroke height -> px on the canonical images: {pct(fitted)}; "
          f"median {np.median(fitted):.2f} (renderer uses {args.reference_height})")

    t0 = time.perf_counter()
    rendered = [render_strokes(t, reference_height=args.reference_height, stroke_width=args.stroke_width)
                for t in inks]
    dt = time.perf_counter() - t0
    r_h = [r.height / c.shape[0] for r, c in zip(rendered, canon)]
    r_w = [r.width / c.shape[1] for r, c in zip(rendered, canon)]
    print(f"height ratio rendered/canonical: median {np.median(r_h):.4f}  ({pct(r_h)})")
    print(f"width  ratio rendered/canonical: median {np.median(r_w):.4f}  ({pct(r_w)})")
    within = np.mean([abs(a - 1) <= 0.05 and abs(b - 1) <= 0.05 for a, b in zip(r_h, r_w)])
    print(f"images with both ratios within 5%: {100 * within:.1f}%")

    ours_ink = [np.asarray(r) >= 128 for r in rendered]
    ours_margins = Counter(margins_of(r) for r in ours_ink)
    print(f"rendered ink margins (top, bottom, left, right): {dict(ours_margins.most_common(4))}")
    sw_c = [stroke_width(c) for c in canon]
    sw_r = [stroke_width(r) for r in ours_ink]
    print(f"stroke width (area / skeleton length): canonical median {np.median(sw_c):.2f} px ({pct(sw_c)}), "
          f"rendered median {np.median(sw_r):.2f} px ({pct(sw_r)})")
    ious = [aligned_iou(r, c) for r, c in zip(ours_ink, canon)]
    exact, tolerant = np.array(ious).T
    print(f"pixel IoU after bbox alignment: median {np.median(exact):.3f} mean {exact.mean():.3f} ({pct(exact)})")
    print(f"  with 1 px tolerance (matched ink fraction): median {np.median(tolerant):.3f} "
          f"mean {tolerant.mean():.3f}")
    print(f"render speed: {len(inks) / dt:.0f} images/s ({1000 * dt / len(inks):.2f} ms/image, single process)")


if __name__ == "__main__":
    main()
