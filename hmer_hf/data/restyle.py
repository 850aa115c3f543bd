"""Restyling CROHME images as canvas drawings: dark, thick, anti-aliased ink on a light page at another scale.

The models are trained on CROHME-style images (white strokes ~3.8 px wide on black, symbols at one fixed size). A
drawing from a web canvas or a tablet looks different: dark ink on white, a 6-12 px brush, anti-aliased edges, any
size. [`restyle_image`] turns a canonical CROHME image into such a drawing with recorded parameters, so that the image
processor's ink normalisation (`HMERImageProcessor(normalize_ink=...)`) can be measured against the original, whose
geometry is known (scripts/eval_restyled.py, docs/canvas.md).

How an image is restyled ([`RestyleParams`] records every choice):

1. the ink (threshold at half contrast, either polarity) is thinned to its skeleton (`rendering_hmer.skeletonize`);
2. a round brush of `brush` px (at the original scale) is stamped at every skeleton pixel, drawn at `scale` times the
   original size on a `supersample` times finer grid and reduced by box filtering (anti-aliased edges), on a page
   with `margin` extra pixels on every side;
3. a Gaussian blur of `blur` px (soft pen edges), then the coverage is composed as `ink` colour (RGB) over a
   `background` grey page.

[`restyle`] draws the parameters from a generator seeded by `(seed, crc32(key))`, so one image with one key and seed
always gives the same drawing, whatever the order or the process.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..rendering_hmer import skeletonize
from .augment import has_dark_background

__all__ = [
    "RestyleParams", "sample_restyle_params", "restyle_image", "restyle", "restyle_dataset", "aligned_ink_iou",
    "ink_mask", "CanvasRestyle",
]  # fmt: skip

BRUSH_RANGE = (6.0, 12.0)  # px at the original scale (the canonical pen is ~3.8 px)
SCALE_RANGE = (0.5, 3.0)  # drawn log-uniformly
MARGIN_RANGE = (0, 40)  # extra page around the ink, output px
BLUR_RANGE = (0.0, 1.0)  # Gaussian sigma, output px
GREY_PAGE_RANGE = (215.0, 250.0)  # half of the pages are light grey, the others white
INK_RANGE = (0, 70)  # per RGB channel: dark, possibly tinted ink
# The drawing grid is `supersample` times finer than the output; finer grids above this many pixels are not used.
_MAX_SUPERSAMPLED_PIXELS = 24_000_000


@dataclass(frozen=True)
class RestyleParams:
    """One restyling: brush width (px at the original scale), output scale, extra margin (output px), blur sigma
    (output px), page grey level, RGB ink colour and the supersampling factor of the drawing grid."""

    brush: float
    scale: float
    margin: int
    blur: float
    background: int
    ink: tuple[int, int, int]
    supersample: int = 4

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters."""
        return {**asdict(self), "ink": list(self.ink)}


def sample_restyle_params(
    rng: np.random.Generator,
    brush_range: tuple[float, float] = BRUSH_RANGE,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> RestyleParams:
    """Draw restyling parameters: brush ~ U(brush_range), scale log-uniform in scale_range, the rest as documented
    at the top of this module. The supersampling factor is chosen later, from the image size."""
    brush = float(rng.uniform(*brush_range))
    scale = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
    margin = int(rng.integers(MARGIN_RANGE[0], MARGIN_RANGE[1] + 1))
    blur = float(rng.uniform(*BLUR_RANGE))
    background = int(round(rng.uniform(*GREY_PAGE_RANGE))) if rng.random() < 0.5 else 255
    ink = tuple(int(v) for v in rng.integers(INK_RANGE[0], INK_RANGE[1] + 1, size=3))
    return RestyleParams(brush=brush, scale=scale, margin=margin, blur=blur, background=background, ink=ink)


def ink_mask(image: Image.Image | np.ndarray) -> np.ndarray:
    """Boolean ink of an image of either polarity: pixels beyond half way from the page level to the darkest (or
    brightest) ink."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    grey = image.convert("L")
    a = np.asarray(grey, dtype=np.int16)
    if not has_dark_background(grey):
        a = 255 - a
    page = int(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))
    peak = int(a.max())
    return 2 * (a - page) > peak - page if peak > page else np.zeros(a.shape, bool)


def _output_size(shape: tuple[int, int], params: RestyleParams) -> tuple[int, int]:
    """Height and width of the drawing of an image of `shape`."""
    height, width = shape
    grow = 2 * params.margin
    return max(1, round(height * params.scale)) + grow, max(1, round(width * params.scale)) + grow


def _supersample(shape: tuple[int, int], params: RestyleParams) -> int:
    """`params.supersample`, or the largest power of two below it whose drawing grid stays within the pixel cap."""
    height, width = _output_size(shape, params)
    factor = params.supersample
    while factor > 1 and height * width * factor * factor > _MAX_SUPERSAMPLED_PIXELS:
        factor //= 2
    return factor


def restyle_image(image: Image.Image | np.ndarray, params: RestyleParams) -> Image.Image:
    """Redraw an ink image (canonically white on black) as an RGB canvas drawing with `params`."""
    ink = ink_mask(image)
    if not ink.any():
        raise ValueError("restyle_image: the image has no ink")
    ys, xs = np.nonzero(skeletonize(ink))
    k, margin = params.scale, params.margin
    out_h, out_w = _output_size(ink.shape, params)
    ss = _supersample(ink.shape, params)
    canvas = Image.new("L", (out_w * ss, out_h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    radius = params.brush * k * ss / 2
    # the centre (x + 0.5) of an original pixel lands at (x + 0.5) * k output px; the grid is ss times finer, and its
    # pixel i (drawing coordinate i) covers [i, i + 1) of the grid
    centres_x = ((xs + 0.5) * k + margin) * ss - 0.5
    centres_y = ((ys + 0.5) * k + margin) * ss - 0.5
    for x, y in zip(centres_x.tolist(), centres_y.tolist()):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    coverage = canvas.resize((out_w, out_h), Image.Resampling.BOX) if ss > 1 else canvas
    if params.blur > 0:
        coverage = coverage.filter(ImageFilter.GaussianBlur(params.blur))
    alpha = np.asarray(coverage, dtype=np.float32)[..., None] / 255.0
    ink_colour = np.asarray(params.ink, dtype=np.float32)
    rgb = params.background * (1.0 - alpha) + ink_colour * alpha
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def _key_entropy(key: str | int) -> int:
    """A stable integer for a per-image key (Python's hash() of a str changes between processes)."""
    return key % 2**32 if isinstance(key, int) else zlib.crc32(str(key).encode("utf-8"))


def restyle(
    image: Image.Image | np.ndarray,
    seed: int,
    key: str | int,
    brush_range: tuple[float, float] = BRUSH_RANGE,
    scale_range: tuple[float, float] = SCALE_RANGE,
) -> tuple[Image.Image, RestyleParams]:
    """Restyle one image with parameters drawn from `(seed, key)` (e.g. the sample id): deterministic per image."""
    rng = np.random.default_rng([int(seed), _key_entropy(key)])
    params = sample_restyle_params(rng, brush_range, scale_range)
    size = image.size[::-1] if isinstance(image, Image.Image) else np.shape(image)[:2]
    params = replace(params, supersample=_supersample(size, params))  # record the grid actually used
    return restyle_image(image, params), params


class CanvasRestyle:
    """
    Training augmentation: with probability p, an image becomes a canvas drawing ([`restyle_image`] with parameters
    from [`sample_restyle_params`] on the augmentation's generator).

    Used with an image processor whose `normalize_ink` is "auto" (or "always"), it trains the model on exactly what
    the processor makes of canvas input at inference (docs/canvas.md); the same processor leaves the other, CROHME-like
    images unchanged. An image without ink is passed through.
    """

    def __init__(self, p: float = 0.25, brush_range: tuple[float, float] = BRUSH_RANGE,
                 scale_range: tuple[float, float] = SCALE_RANGE):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"CanvasRestyle: p must be in [0, 1], got {p}")
        self.p, self.brush_range, self.scale_range = p, tuple(brush_range), tuple(scale_range)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Restyle with probability p."""
        if rng.random() >= self.p:
            return image
        params = sample_restyle_params(rng, self.brush_range, self.scale_range)
        params = replace(params, supersample=_supersample(image.size[::-1], params))
        try:
            return restyle_image(image, params)
        except ValueError:  # no ink: nothing to restyle
            return image

    def __repr__(self) -> str:
        return f"CanvasRestyle(p={self.p}, brush_range={self.brush_range}, scale_range={self.scale_range})"


def restyle_dataset(dataset, seed: int, num_proc: int | None = None):
    """A `datasets.Dataset` with every `image` restyled by `restyle(image, seed, key=id)`; `height`/`width` follow
    the new images and a `restyle` column holds each image's parameters (a dict)."""

    def one(row: dict[str, Any]) -> dict[str, Any]:
        drawn, params = restyle(row["image"], seed, row["id"])
        out = {"image": drawn, "restyle": params.to_dict()}
        if "height" in row:
            out["height"] = drawn.height
        if "width" in row:
            out["width"] = drawn.width
        return out

    return dataset.map(one, num_proc=num_proc, desc="restyling")


def aligned_ink_iou(a: np.ndarray, b: np.ndarray, tolerance: int = 0) -> float:
    """Agreement of two boolean ink images after resizing `a`'s ink bounding box onto `b`'s (bilinear, threshold 0.5).

    Alignment removes position and size (which the crop and the rescale decide), so what is left compares the ink's
    shape and thickness. `tolerance=0`: pixel IoU. `tolerance=t`: the share of the ink pixels of both images that
    have ink of the other image within `t` px (as scripts/fit_renderer.py measures the renderer), which forgives
    sub-pixel placement but not extra or missing strokes, nor strokes of a different width.
    """

    def box(ink: np.ndarray) -> np.ndarray:
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]

    target = box(np.asarray(b, dtype=bool))
    source = Image.fromarray(box(np.asarray(a, dtype=bool)).astype(np.uint8) * 255)
    moved = np.asarray(source.resize((target.shape[1], target.shape[0]), Image.Resampling.BILINEAR)) >= 128
    if tolerance == 0:
        return float((moved & target).sum() / max((moved | target).sum(), 1))

    def grown(ink: np.ndarray) -> np.ndarray:
        image = Image.fromarray(ink.astype(np.uint8) * 255)
        return np.asarray(image.filter(ImageFilter.MaxFilter(2 * tolerance + 1))) > 0

    hits = (moved & grown(target)).sum() + (target & grown(moved)).sum()
    return float(hits / max(moved.sum() + target.sum(), 1))
