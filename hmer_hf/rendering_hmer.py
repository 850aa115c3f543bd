"""Rendering online strokes (InkML traces, canvas drawings) to images in the style of the CROHME offline images.

The canonical CROHME 2014 test images (`2014/img/*.bmp`, the images on which published ExpRates are computed) are
binary (0/255), white ink on black, with strokes 3-4 px wide and an exact margin of 12 px before the ink and 11 px
after it. Their scale is not a fixed factor of the ink coordinates nor a fixed image height: it normalises the writing
size. scripts/fit_renderer.py recovers the rule from the 986 InkML/image pairs: the scale maps the *mean height of
the strokes taller than 10% of the tallest stroke* to ~28 px (984 of the 986 test images within 5% in size;
docs/data_quality.md, section "Renderer", has the measurements). Dots, minus signs and other flat strokes are left
out of that mean, so the rule measures the height of the written characters.

The second half of the file goes the other way, for ink that only exists as an image (a canvas drawing, a scan):
`measure_ink` estimates its stroke width and writing size from the pixels, so that the image processor can rescale it
to the CROHME size, and `thin_ink` brings its strokes to the CROHME width (eroding thick ink; thin ink is redrawn
by `redraw_ink` with the CROHME pen along its skeleton). docs/canvas.md has the rules and their measured effect.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "render_strokes", "ink_scale", "as_traces", "REFERENCE_HEIGHT", "STROKE_WIDTH", "MARGIN",
    "InkGeometry", "measure_ink", "thin_ink", "redraw_ink", "skeletonize", "connected_components", "stroke_width",
    "CANONICAL_SYMBOL_HEIGHT", "CANONICAL_STROKE_WIDTH",
]  # fmt: skip

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


# ---- offline ink: measuring written images and redrawing them with the CROHME pen ----
#
# All functions take a boolean ink mask (True = ink), e.g. a white-on-black image thresholded at half its contrast.

# What `measure_ink` reads on the 986 canonical 2014 images, which all have the CROHME size and pen
# (docs/canvas.md): the median symbol height (5th-95th percentile 27.2-35.6 px) and stroke width (3.45-3.82 px).
CANONICAL_SYMBOL_HEIGHT = 29.0
CANONICAL_STROKE_WIDTH = 3.6
# Before connected components are measured, ink thicker than 5 px is eroded by this fraction of its stroke width per
# side: strokes survive (a core of 40% of their width), while the bridges a thick pen draws between neighbouring
# symbols (a subscript touching its base, a fraction bar touching the digits) mostly break.
_CORE_EROSION = 0.3
_THICK_INK = 5.0
# Ink thicker than this is measured on a copy shrunk (box filter) until its strokes are this wide: a few erosion
# passes instead of dozens, and fewer pixels to label.
_WORKING_WIDTH = 10.0
# A component is "flat" (a minus, a fraction bar, a dot) when its height is at most this fraction of the tallest one;
# the rule of `ink_scale` (strokes taller than 10% of the tallest), applied to connected components.
_FLAT_FRACTION = _TALL_FRACTION
# Zhang-Suen neighbours P2..P9: (dy, dx), clockwise from north.
_NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 256 neighbourhoods (bit i = neighbour P(i+2)), whether each Zhang-Suen sub-iteration deletes
    the centre pixel."""
    bits = (np.arange(256)[:, None] >> np.arange(8)) & 1
    count = bits.sum(axis=1)
    cyclic = np.concatenate([bits, bits[:, :1]], axis=1)
    transitions = ((cyclic[:, :-1] == 0) & (cyclic[:, 1:] == 1)).sum(axis=1)
    p2, p4, p6, p8 = bits[:, 0], bits[:, 2], bits[:, 4], bits[:, 6]
    deletable = (count >= 2) & (count <= 6) & (transitions == 1)
    first = deletable & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
    second = deletable & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
    return first, second


_ZHANG_SUEN = _zhang_suen_tables()


def skeletonize(ink: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to 8-connected lines one pixel wide (topology kept).

    Vectorised with a lookup table of the 256 neighbourhoods; the number of passes grows with half the stroke width.
    """
    image = np.pad(np.asarray(ink, dtype=bool), 1).astype(np.uint8)
    inner = image[1:-1, 1:-1]  # a view: deleting through it edits `image`
    height, width = inner.shape
    while True:
        changed = False
        for table in _ZHANG_SUEN:
            code = np.zeros((height, width), np.uint8)
            for bit, (dy, dx) in enumerate(_NEIGHBOURS):
                code |= image[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] << bit
            delete = table[code] & (inner == 1)
            if delete.any():
                inner[delete] = 0
                changed = True
        if not changed:
            return inner.astype(bool)


def connected_components(ink: np.ndarray) -> np.ndarray:
    """8-connected components of a boolean image as an int array `[n, 5]`: top, bottom, left, right (inclusive) and
    area in pixels, one row per component (ordered by their first pixel in row-major order).

    Works on horizontal runs: runs in adjacent rows that touch (diagonals included) are joined by label propagation.
    """
    ink = np.asarray(ink, dtype=bool)
    height, width = ink.shape
    padded = np.zeros((height, width + 2), np.int8)
    padded[:, 1:-1] = ink
    step = np.diff(padded, axis=1)
    row, start = np.nonzero(step == 1)  # a run is row, [start, end) in image columns
    end = np.nonzero(step == -1)[1]
    n = len(row)
    if n == 0:
        return np.zeros((0, 5), dtype=np.int64)
    # Runs are in row-major order, so (row, column) keys are sorted: the runs of row r + 1 touching run a are the
    # contiguous range from the first whose end reaches a's start to the last whose start is at most a's end.
    stride = width + 2
    lo = np.searchsorted(row * stride + end, (row + 1) * stride + start, "left")
    hi = np.searchsorted(row * stride + start, (row + 1) * stride + end, "right")
    count = np.maximum(hi - lo, 0)
    a = np.repeat(np.arange(n), count)
    b = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(lo, count)
    labels = np.arange(n)
    while True:  # hook both ends of every edge to the smaller label, then compress paths
        smaller = np.minimum(labels[a], labels[b])
        hooked = labels.copy()
        np.minimum.at(hooked, a, smaller)
        np.minimum.at(hooked, b, smaller)
        while True:
            jumped = hooked[hooked]
            if np.array_equal(jumped, hooked):
                break
            hooked = jumped
        if np.array_equal(hooked, labels):
            break
        labels = hooked
    _, label = np.unique(labels, return_inverse=True)
    k = int(label.max()) + 1
    top = np.full(k, height)
    bottom = np.full(k, -1)
    left = np.full(k, width)
    right = np.full(k, -1)
    area = np.zeros(k, dtype=np.int64)
    np.minimum.at(top, label, row)
    np.maximum.at(bottom, label, row)
    np.minimum.at(left, label, start)
    np.maximum.at(right, label, end - 1)
    np.add.at(area, label, end - start)
    return np.stack([top, bottom, left, right, area], axis=1).astype(np.int64)


def stroke_width(ink: np.ndarray) -> float:
    """Mean stroke width in pixels: twice the ink area over its outline length (0.0 without ink).

    The outline length is the number of ink/background pixel edges times pi / 4, the mean of |cos| + |sin| over
    directions, so that slanted edges count at their true length.
    """
    ink = np.asarray(ink, dtype=bool)
    area = int(ink.sum())
    if area == 0:
        return 0.0
    edges = np.count_nonzero(ink[:, 1:] != ink[:, :-1]) + np.count_nonzero(ink[1:] != ink[:-1])
    edges += np.count_nonzero(ink[0]) + np.count_nonzero(ink[-1]) + np.count_nonzero(ink[:, 0]) + np.count_nonzero(
        ink[:, -1]
    )  # ink touching the image border has an outline there too
    return 2.0 * area / (edges * np.pi / 4)


def _erode(ink: np.ndarray, passes: int) -> np.ndarray:
    """Binary erosion by `passes` pixels, alternating a 4- and an 8-neighbour step (an octagon, close to a disc)."""
    for i in range(passes):
        p = np.pad(ink, 1)
        ink = ink & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        if i % 2:
            ink &= p[:-2, :-2] & p[:-2, 2:] & p[2:, :-2] & p[2:, 2:]
    return ink


@dataclass(frozen=True)
class InkGeometry:
    """What `measure_ink` reads from an image: stroke width and symbol height in pixels of that image."""

    stroke_width: float
    symbol_height: float

    @property
    def scale(self) -> float:
        """Writing size relative to the CROHME images (1.0: CROHME size; 2.0: twice as large)."""
        return self.symbol_height / CANONICAL_SYMBOL_HEIGHT


def measure_ink(ink: np.ndarray) -> InkGeometry:
    """Estimate the stroke width and the writing size of a boolean ink image.

    - stroke width: [`stroke_width`] (twice the area over the outline length);
    - symbol height: the image counterpart of `ink_scale`'s rule: the mean height of the connected components
      taller than 10% of the tallest one, each minus the stroke width (a pen adds its width to every stroke's
      height). Ink thicker than 5 px is first eroded by 30% of its width on each side, which breaks most bridges
      that a thick pen draws between neighbouring symbols (ink thicker than 10 px is measured on a copy shrunk to
      10 px strokes). When every component is flat (e.g. only a minus sign), the widest component's width stands
      in, as in `ink_scale`.

    On the canonical CROHME images the symbol height is 29.0 px (median; `InkGeometry.scale` divides by it).
    """
    ink = np.asarray(ink, dtype=bool)
    width = stroke_width(ink)
    if width == 0.0:
        raise ValueError("no ink to measure")
    work, work_width = ink, width
    if width > _WORKING_WIDTH:
        shrink = width / _WORKING_WIDTH
        size = (max(1, round(ink.shape[1] / shrink)), max(1, round(ink.shape[0] / shrink)))
        shrunk = np.asarray(Image.fromarray(ink.astype(np.uint8) * 255).resize(size, Image.Resampling.BOX)) >= 128
        if shrunk.any():
            work, work_width = shrunk, stroke_width(shrunk)
    passes = int(_CORE_EROSION * work_width) if work_width > _THICK_INK else 0
    core = _erode(work, passes) if passes else work
    if core.any():
        core_width = stroke_width(core)
    else:  # nothing survives the erosion (a blot): measure the ink as it is
        core, core_width = work, work_width
    boxes = connected_components(core)
    heights = np.maximum(boxes[:, 1] - boxes[:, 0] + 1 - core_width, 0.0) * (ink.shape[0] / work.shape[0])
    widths = np.maximum(boxes[:, 3] - boxes[:, 2] + 1 - core_width, 0.0) * (ink.shape[1] / work.shape[1])
    tallest = heights.max()
    if tallest > 0:
        symbol = float(heights[heights > _FLAT_FRACTION * tallest].mean())
    else:
        symbol = float(widths.max())
    # A single dot has neither height nor width beyond the pen: size it as the pen itself.
    return InkGeometry(stroke_width=float(width), symbol_height=symbol if symbol > 0 else float(width))


def _pen_offsets(diameter: float) -> list[tuple[int, int]]:
    """Pixel offsets whose centres lie within `diameter / 2` of the origin (a round pen's footprint)."""
    reach = int(diameter // 2) + 1
    r2 = (diameter / 2) ** 2
    return [(dy, dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1) if dy * dy + dx * dx <= r2]


def thin_ink(ink: np.ndarray, width: float = CANONICAL_STROKE_WIDTH) -> np.ndarray:
    """Boolean ink brought to a stroke width of about `width` pixels (the canonical CROHME ink's by default).

    Ink thicker than `width` (measured by [`stroke_width`]) is eroded by a disc of radius (w - width) / 2: a pixel
    stays ink when every pixel centre within that radius is ink. A brush of constant width thins to the target width
    and keeps every shape it drew, including the ones a thick brush spoils (a loop it filled stays a blot, two
    strokes it merged stay one thick stroke) that thinning to a skeleton would turn into lines with spurs. Ink at or
    below `width` is redrawn with the CROHME pen along its skeleton ([`redraw_ink`]).
    """
    ink = np.asarray(ink, dtype=bool)
    measured = stroke_width(ink)
    if measured <= width:
        return redraw_ink(ink)
    reach = (measured - width) / 2
    offsets = _pen_offsets(2 * reach)
    pad = int(reach) + 1
    padded = np.pad(ink, pad)  # outside the image is background
    height, img_width = ink.shape
    out = ink.copy()
    for dy, dx in offsets:
        out &= padded[pad + dy : pad + dy + height, pad + dx : pad + dx + img_width]
    return out


def redraw_ink(ink: np.ndarray, pen_width: float = STROKE_WIDTH) -> np.ndarray:
    """Redraw a boolean ink image with a round pen of `pen_width` pixels along its skeleton.

    Every pixel whose centre lies within `pen_width / 2` of a skeleton pixel's centre becomes ink: for the CROHME pen
    (3.25 px) that is the 3 x 3 neighbourhood of the skeleton. The skeleton is `skeletonize` (Zhang-Suen).
    """
    skeleton = skeletonize(ink)
    reach = int(pen_width // 2) + 1
    padded = np.pad(skeleton, reach)
    height, width = skeleton.shape
    out = np.zeros_like(skeleton)
    for dy, dx in _pen_offsets(pen_width):
        out |= padded[reach + dy : reach + dy + height, reach + dx : reach + dx + width]
    return out
