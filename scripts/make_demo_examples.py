"""Make the demo's example images from strokes written here (no dataset files): `python scripts/make_demo_examples.py`.

Every glyph is a few polylines in a unit box (height 1, y down, as on a screen); a formula places glyphs (scaled and
raised for exponents, stacked for fractions), jitters every point a little like a hand would, and is rendered by the
image processor's stroke renderer, exactly like the training ink, then saved as dark ink on white PNG in
demo/examples/ (the image processor detects the polarity).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from hmer_hf import HMERImageProcessor

OUT_DIR = Path(__file__).resolve().parents[1] / "demo" / "examples"
Stroke = list[tuple[float, float]]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 14) -> Stroke:
    """Points on an elliptic arc from angle `start` to `end` (degrees; 0 = right, 90 = down since y grows down)."""
    angles = np.radians(np.linspace(start, end, n))
    return [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]


# Glyph strokes in a box of height 1 (x from 0 to the glyph's width); the baseline is y = 1.
GLYPHS: dict[str, tuple[float, list[Stroke]]] = {
    "1": (0.45, [[(0.05, 0.25), (0.3, 0.0), (0.3, 1.0)]]),
    "2": (0.6, [arc(0.3, 0.28, 0.28, 0.26, 200, 380)[:-3] + [(0.5, 0.45), (0.02, 1.0), (0.6, 0.98)]]),
    "3": (0.55, [arc(0.25, 0.25, 0.27, 0.24, 210, 450) + arc(0.25, 0.74, 0.3, 0.26, 270, 510)]),
    "x": (0.55, [[(0.0, 0.4), (0.55, 1.0)], [(0.55, 0.4), (0.0, 1.0)]]),
    "y": (0.55, [[(0.0, 0.4), (0.28, 0.85)], [(0.55, 0.4), (0.3, 0.95), (0.12, 1.3)]]),
    "a": (0.55, [arc(0.25, 0.7, 0.25, 0.3, 330, 20), [(0.5, 0.42), (0.52, 1.0)]]),
    "b": (0.5, [[(0.05, 0.0), (0.05, 1.0)], arc(0.25, 0.7, 0.23, 0.3, 180, 540)]),
    "c": (0.5, [arc(0.28, 0.7, 0.26, 0.3, 320, 50)]),
    "+": (0.6, [[(0.0, 0.6), (0.6, 0.6)], [(0.3, 0.3), (0.3, 0.9)]]),
    "-": (0.5, [[(0.0, 0.62), (0.5, 0.62)]]),
    "=": (0.6, [[(0.0, 0.5), (0.6, 0.5)], [(0.0, 0.75), (0.6, 0.75)]]),
}

# Each formula: items (glyph, scale, raise) laid out left to right; raise lifts the glyph (exponents); the special
# item ("frac", numerator, denominator) stacks two glyph runs over a bar.
FORMULAS: dict[str, list] = {
    "x_squared_plus_1": [("x", 1, 0), ("2", 0.6, 0.55), ("+", 1, 0), ("1", 1, 0)],
    "pythagoras": [
        ("a", 1, 0), ("2", 0.55, 0.55), ("+", 1, 0), ("b", 1, 0), ("2", 0.55, 0.55), ("=", 1, 0),
        ("c", 1, 0), ("2", 0.55, 0.55),
    ],
    "one_half": [("frac", "1", "2")],
    "y_equals_3x_minus_1": [("y", 1, 0), ("=", 1, 0), ("3", 1, 0), ("x", 1, 0), ("-", 1, 0), ("1", 1, 0)],
}  # fmt: skip


def place(glyph: str, x: float, y: float, scale: float, rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """The glyph's strokes moved to (x, baseline-top y) at `scale`, with hand-like jitter; returns strokes, width."""
    width, strokes = GLYPHS[glyph]
    scale *= rng.uniform(0.95, 1.05)
    slant = rng.uniform(-0.06, 0.06)
    out = []
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float64)
        points = points + rng.normal(0.0, 0.015, points.shape)  # a wobbly hand
        points[:, 0] += slant * (1.0 - points[:, 1])  # slight slant
        out.append(points * scale + (x, y))
    return out, width * scale


def formula_strokes(items: list, seed: int, unit: float = 100.0) -> list[np.ndarray]:
    """Strokes of a formula in ink units (`unit` per glyph height)."""
    rng = np.random.default_rng(seed)
    strokes: list[np.ndarray] = []
    x = 0.0
    for item in items:
        if item[0] == "frac":
            _, top, bottom = item
            numerator, top_width = place(top, x + 0.2, -0.75, 0.7, rng)
            denominator, bottom_width = place(bottom, x + 0.2, 0.45, 0.7, rng)
            bar = max(top_width, bottom_width) + 0.4
            y = 0.3 + rng.normal(0, 0.01)
            strokes += numerator + denominator + [np.array([[x, y], [x + bar, y + rng.normal(0, 0.02)]])]
            x += bar + 0.25
            continue
        glyph, scale, lift = item
        top = 1.0 - scale - lift  # the glyph's box bottom sits `lift` above the baseline
        placed, width = place(glyph, x, top, scale, rng)
        strokes += placed
        x += width + rng.uniform(0.28, 0.38)
    return [s * unit for s in strokes]


def render(strokes: list[np.ndarray], processor: HMERImageProcessor) -> Image.Image:
    """The strokes rendered like the training ink, as dark ink on white."""
    return ImageOps.invert(Image.fromarray(processor.render_strokes(strokes)))


def main(argv: list[str] | None = None) -> int:
    """Write one PNG per formula."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    processor = HMERImageProcessor()
    for i, (name, items) in enumerate(FORMULAS.items()):
        path = args.out / f"{name}.png"
        image = render(formula_strokes(items, seed=args.seed + i), processor)
        image.save(path, optimize=True)
        print(f"{path}  {image.width}x{image.height}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
