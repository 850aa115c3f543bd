"""Stroke renderer: canonical size rule, polarity, margins, degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hmer_hf.data.render import MARGIN, REFERENCE_HEIGHT, ink_scale, render_strokes

# two vertical bars 10 units tall and 5 apart, plus a dot: the dot is flat and does not count for the scale
BARS = [[(0, 0), (0, 10)], [(5, 0), (5, 10)], [(2.5, 5)]]


def _ink_box(a: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(a >= 128)
    return ys.min(), a.shape[0] - 1 - ys.max(), xs.min(), a.shape[1] - 1 - xs.max()


def test_known_strokes_size_and_polarity():
    image = render_strokes(BARS)
    assert isinstance(image, Image.Image) and image.mode == "L"
    scale = REFERENCE_HEIGHT / 10  # both bars are 10 tall
    assert ink_scale(BARS) == pytest.approx(scale)
    # extent * scale, + 3 px of pen, + the 12 / 11 px margins
    assert image.size == (round(5 * scale) + 3 + 23, round(10 * scale) + 3 + 23) == (40, 54)
    a = np.asarray(image)
    assert set(np.unique(a)) == {0, 255}  # binary like the canonical images
    assert a[0, 0] == 0 and (a == 0).mean() > 0.7  # black background, white ink
    assert _ink_box(a) == (MARGIN[0], MARGIN[1], MARGIN[0], MARGIN[1])
    # the left bar is about 3 px wide, centred on column 13
    row = a[a.shape[0] // 2]
    assert 3 <= (row[:20] == 255).sum() <= 4 and row[13] == 255
    # the dot in the middle is drawn
    assert a[27, 20] == 255 or a[27, 19] == 255


def test_scale_is_translation_and_unit_invariant():
    shifted = [np.asarray(t, dtype=float) * 7.3 + [100, -40] for t in BARS]
    np.testing.assert_array_equal(np.asarray(render_strokes(shifted)), np.asarray(render_strokes(BARS)))


def test_flat_strokes_do_not_set_the_scale():
    # a long minus sign next to the bars does not shrink the characters
    assert ink_scale(BARS + [[(-20, 12), (30, 12.2)]]) == pytest.approx(ink_scale(BARS))
    # a single horizontal stroke still renders (sized by its length)
    image = render_strokes([[(0, 0), (10, 0)]])
    assert image.height == 3 + 23 and image.width == round(REFERENCE_HEIGHT) + 3 + 23


def test_options():
    a = np.asarray(render_strokes(BARS, antialias=True))
    assert len(np.unique(a)) > 2 and a.max() == 255
    assert render_strokes(BARS, scale=1.0).size == (5 + 3 + 23, 10 + 3 + 23)
    assert max(render_strokes(BARS, scale=100.0, max_size=100).size) <= 100
    thick = (np.asarray(render_strokes(BARS, stroke_width=6)) == 255).sum()
    assert thick > 1.5 * (np.asarray(render_strokes(BARS)) == 255).sum()
    assert render_strokes(BARS, margin=(0, 0)).size == (40 - 23, 54 - 23)


def test_accepts_arrays_with_time_column_and_lists():
    with_time = [np.c_[np.asarray(t, float), np.arange(len(t))] for t in BARS]
    np.testing.assert_array_equal(np.asarray(render_strokes(with_time)), np.asarray(render_strokes(BARS)))


@pytest.mark.parametrize(
    "traces, message",
    [
        ([], "empty"),
        ([[]], "empty"),
        ([[(3, 4)]], "coincide"),
        ([[(3, 4), (3, 4)], [(3, 4)]], "coincide"),
        ([(1, 2, 3)], "shape"),
        ([[(0, 0), (np.nan, 1)]], "non-finite"),
        (np.zeros((5, 2)), "list of strokes"),
    ],
)
def test_degenerate_input_raises(traces, message):
    with pytest.raises(ValueError, match=message):
        render_strokes(traces)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="scale"):
        render_strokes(BARS, scale=0)
    with pytest.raises(ValueError, match="max_size"):
        render_strokes(BARS, max_size=20)


@pytest.mark.shared_data
def test_matches_canonical_image_size(crohme_dir):
    from hmer_hf.data.inkml import read_inkml

    for name in ["18_em_1", "RIT_2014_147", "504_em_35"]:
        canonical = Image.open(crohme_dir / "2014" / "img" / f"{name}.bmp")
        image = render_strokes(read_inkml(crohme_dir / "2014_inkml" / f"{name}.inkml").traces)
        assert abs(image.height / canonical.height - 1) < 0.05
        assert abs(image.width / canonical.width - 1) < 0.05
