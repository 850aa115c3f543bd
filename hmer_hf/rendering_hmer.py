"""Rendering online strokes (InkML traces, canvas drawings) to images in the style of the CROHME offline images.

The canonical CROHME 2014 test images (`2014/img/*.bmp`, the images on which published ExpRates are computed) are
binary (0/255), white ink on black, with strokes 3-4 px wide and an exact margin of 12 px before the ink and 11 px
after it. Their scale is not a fixed factor of the ink coordinates nor a fixed image height: it normalises the writing
size. scripts/fit_renderer.py recovers the rule from the 986 InkML/image pairs: the scale maps the *mean height of
the strokes taller than 10% of the tallest stroke* to ~28 px (984 of the 986 test images within 5% in size;
docs/data_quality.md, section "Renderer", has the measurements). Dots, minus signs and other flat strokes are left
out of that mean, so the rule measures the height of the written characters.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["render_strokes", "ink_scale", "as_traces", "REFERENCE_HEIGHT", "STROKE_WIDTH", "MARGIN"]

REFERENCE_HEIGHT = 28.2  # px: what the reference stroke height becomes (fitted, scripts/fit_renderer.py)
STROKE_WIDTH = 3.25  # px pen width whose half-covered pixels match the canonical ink (fitted)
MARGIN = (12, 11)  # px of background before / after the ink on each axis, as in the canonical images
_TALL_FRACTION = 0.1  # strokes at most this fraction of the tallest one do not count towards the reference height
_SUPERSAMPLE = 4
_BINARISE = [0] * 128 + [255] * 128  # a pixel is ink when the pen covers at least half of it


def as_traces(traces: Sequence) -> list[np.ndarray]:
    """Validate strokes given as (N, 2+) arrays or nested lists; returns float (N, 2) arrays, empty strokes dropped."""
    if isinstance(traces, np.ndarray) and traces.ndim == 2:
        raise ValueError("expected a list of strokes, got a single (N, 2) array; wrap it in a list")
    out = []
    for i, t in enumerate(traces):
        a = np.asarray(t, dtype=np.float64)
        if a.size == 0:
            continue
        if a.ndim != 2 or a.shape[1] < 2:
            raise ValueError(f"stroke {i} must have shape (N, 2) (x, y per point), got {a.shape}")
        if not np.isfinite(a[:, :2]).all():
            raise ValueError(f"stroke {i} has non-finite coordinates")
        out.append(a[:, :2])
    if not out:
        raise ValueError("no strokes to render (empty input)")
    return out


def ink_scale(traces: Sequence, reference_height: float = REFERENCE_HEIGHT) -> float:
    """Pixels per ink unit that bring the writing to canonical CROHME size (reference stroke height -> 28 px)."""
    traces = as_traces(traces)
    heights = np.array([np.ptp(t[:, 1]) for t in traces])
    tallest = heights.max()
    if tallest > 0:
        reference = heights[heights > _TALL_FRACTION * tallest].mean()
    else:
        # only flat strokes (a minus sign, a lone horizontal bar): the canonical rule is undefined; size the
        # longest stroke like a character instead of dividing by zero
        reference = max(np.ptp(t[:, 0]) for t in traces)
    if reference <= 0:
        raise ValueError("degenerate strokes: all points coincide, nothing to scale")
    return reference_height / reference


def render_strokes(
    traces: Sequence,
    *,
    scale: float | None = None,
    reference_height: float = REFERENCE_HEIGHT,
    stroke_width: float = STROKE_WIDTH,
    margin: tuple[int, int] = MARGIN,
    antialias: bool = False,
    max_size: int | None = None,
) -> Image.Image:
    """Draw strokes as a mode "L" image, white ink (255) on black (0), sized and styled like the CROHME images.

    Args:
        traces: strokes, each an (N, 2) array or list of x, y points (extra columns such as time are ignored).
            y grows downwards, as in InkML and on screen canvases.
        scale: pixels per ink unit; default `ink_scale(traces, reference_height)`, the canonical size rule.
        reference_height: pixel height that the reference stroke height is scaled to (ignored with `scale`).
        stroke_width: pen width in pixels (a round pen; fractional widths are honoured).
        margin: background pixels (before, after) the ink on both axes.
        antialias: keep the grey levels of the pen's pixel coverage instead of the canonical binary ink.
        max_size: if set, shrink the scale so that neither side of the image exceeds this many pixels.
    """
    traces = as_traces(traces)
    if scale is None:
        scale = ink_scale(traces, reference_height)
    elif not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if not stroke_width > 0:
        raise ValueError(f"stroke_width must be positive, got {stroke_width}")
    points = np.concatenate(traces)
    origin = points.min(axis=0)
    extent = points.max(axis=0) - origin
    before, after = margin
    overhang = max(round(stroke_width), 1)  # pixels the pen adds beyond the points, both sides together
    if max_size is not None:
        room = max_size - before - after - overhang
        if room <= 0:
            raise ValueError(f"max_size {max_size} leaves no room for the ink")
        if extent.max() * scale > room:
            scale = room / extent.max()
    span = np.round(extent * scale)
    # per-axis scale snapped so that the last point lands on a pixel centre like the first: the ink then has the
    # exact margin on the far side too (the aspect ratio changes by less than half a pixel)
    scales = np.where(extent > 0, span / np.where(extent > 0, extent, 1), scale)
    size = (span.astype(int) + overhang + before + after).tolist()

    # Drawn at 4x and reduced to pixel coverage: PIL's integer-width lines would give only 3 or 4 px strokes, and
    # the canonical ink is what a 3.25 px round pen covers by at least half (scripts/fit_renderer.py).
    ss = _SUPERSAMPLE
    image = Image.new("L", (size[0] * ss, size[1] * ss), 0)
    draw = ImageDraw.Draw(image)
    width = max(round(stroke_width * ss), 1)
    radius = width / 2
    # the first ink pixel sits exactly `before` px from the top/left edge: the pen reaches (overhang - 1) / 2 px
    # beyond the leftmost point's pixel centre
    offset = before + (overhang - 1) / 2
    for t in traces:
        xy = ((t - origin) * scales + offset + 0.5) * ss - 0.5  # pixel i of the result spans [ss*i, ss*(i+1))
        # points closer than half a pixel add nothing but drawing calls (CROHME ink is densely sampled)
        cell = np.floor(xy / (ss / 2))
        xy = xy[np.r_[True, (cell[1:] != cell[:-1]).any(axis=1)]]
        pts = [tuple(p) for p in xy.tolist()]
        if len(pts) > 1:
            draw.line(pts, fill=255, width=width)
        # a disc at every point gives round caps and joins; PIL's own joint="curve" is several times slower
        for x, y in pts:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    image = image.resize(tuple(size), Image.Resampling.BOX)
    if not antialias:
        image = image.point(_BINARISE)
    return image
