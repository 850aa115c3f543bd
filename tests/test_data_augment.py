"""Augmentations: scale ranges, polarity, determinism, identity when disabled, with_transform use."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw

from hmer_hf.data.augment import (
    ElasticDistortion,
    HMERAugmentation,
    RandomAffine,
    RandomScale,
    RandomScalePad,
    StrokeWidthJitter,
    background_color,
    build_augmentation,
    has_dark_background,
)


def _expression(w=240, h=80, width=3, dark_bg=True, mode="L"):
    """A fake expression: a few strokes, white on black (CROHME) or dark on light paper (HME100K)."""
    bg, ink = ((0, 255) if dark_bg else (235, 20))
    im = Image.new("L", (w, h), bg)
    d = ImageDraw.Draw(im)
    d.line([(20, 60), (50, 15), (80, 60)], fill=ink, width=width)
    d.line([(100, 40), (140, 40)], fill=ink, width=width)
    d.ellipse([160, 20, 210, 65], outline=ink, width=width)
    return im.convert(mode)


def _batch(n=6, **kw):
    ims = [_expression(w=200 + 10 * i, h=60 + 5 * i, **kw) for i in range(n)]
    return {"image": ims, "latex": [f"x _ {i}" for i in range(n)], "height": [im.height for im in ims],
            "width": [im.width for im in ims]}


def test_comer_scale_sizes_follow_factor_range():
    aug = build_augmentation("comer", seed=0)
    batch = _batch(40)
    out = aug(batch)
    ratios_w = [o.width / i.width for o, i in zip(out["image"], batch["image"])]
    ratios_h = [o.height / i.height for o, i in zip(out["image"], batch["image"])]
    assert all(0.69 <= r <= 1.41 for r in ratios_w + ratios_h)
    assert max(ratios_w) > 1.15 and min(ratios_w) < 0.95  # the factor really varies over the range
    # both sides scaled by the same k (aspect ratio kept up to rounding)
    assert all(abs(rw - rh) < 0.03 for rw, rh in zip(ratios_w, ratios_h))
    assert out["height"] == [o.height for o in out["image"]] and out["width"] == [o.width for o in out["image"]]
    assert out["latex"] == batch["latex"]


def test_scale_pad_keeps_canvas_when_shrinking():
    rng = np.random.default_rng(0)
    im = _expression()
    t = RandomScalePad(0.5, 0.9)
    for _ in range(10):
        out = t(im, rng)
        assert out.size == im.size  # shrunk content padded back to the original canvas
        assert np.asarray(out).max() == 255 and background_color(out) == 0
    big = RandomScalePad(1.1, 1.3)(im, rng)
    assert big.width > im.width and big.height > im.height


@pytest.mark.parametrize("dark_bg", [True, False])
@pytest.mark.parametrize("preset", ["comer", "san", "handwriting", "elastic"])
def test_polarity_kept(preset, dark_bg):
    aug = build_augmentation(preset, seed=1)
    batch = _batch(8, dark_bg=dark_bg, mode="L" if dark_bg else "RGB")
    for o, i in zip(aug(batch)["image"], batch["image"]):
        assert o.mode == i.mode
        assert has_dark_background(o) == dark_bg
        a = np.asarray(o.convert("L")).astype(float)
        # ink stays the minority: a flipped image would be mostly bright (or mostly dark) instead
        ink = (a > 127) if dark_bg else (a < 128)
        assert 0.005 < ink.mean() < 0.3


def test_deterministic_with_seed_and_varies_without():
    batch = _batch(6)
    a = build_augmentation("handwriting", seed=123)(batch)["image"]
    b = build_augmentation("handwriting", seed=123)(batch)["image"]
    c = build_augmentation("handwriting", seed=124)(batch)["image"]
    assert [np.asarray(x).tobytes() for x in a] == [np.asarray(x).tobytes() for x in b]
    assert [x.size for x in a] != [x.size for x in c]
    aug = build_augmentation("handwriting", seed=5)
    first, second = aug(batch)["image"], aug(batch)["image"]  # the stream moves on between calls
    assert [x.size for x in first] != [x.size for x in second]


def test_identity_when_disabled():
    batch = _batch(3)
    aug = build_augmentation("handwriting", seed=0).eval()
    assert aug(batch) is batch
    assert build_augmentation("none")(batch) is batch
    assert aug.train()(batch)["image"][0] is not batch["image"][0]


def test_stroke_width_jitter_thickens_and_guards_thinning():
    rng = np.random.default_rng(0)
    thin = _expression(width=3)
    ink = (np.asarray(thin) > 127).sum()
    thick = StrokeWidthJitter(p_thicken=1.0, p_thin=0.0)(thin, rng)
    assert (np.asarray(thick) > 127).sum() > 1.5 * ink
    # eroding 3 px strokes would erase most of them: left unchanged
    assert StrokeWidthJitter(p_thicken=0.0, p_thin=1.0)(thin, rng) is thin
    fat = _expression(width=9)
    slimmer = StrokeWidthJitter(p_thicken=0.0, p_thin=1.0)(fat, rng)
    assert 0.5 * (np.asarray(fat) > 127).sum() <= (np.asarray(slimmer) > 127).sum() < (np.asarray(fat) > 127).sum()
    # dark ink on light paper: thickening means more dark pixels
    paper = _expression(dark_bg=False)
    darker = StrokeWidthJitter(p_thicken=1.0, p_thin=0.0)(paper, rng)
    assert (np.asarray(darker) < 128).sum() > (np.asarray(paper) < 128).sum()


def test_affine_grows_canvas_and_fills_background():
    rng = np.random.default_rng(3)
    im = _expression()
    out = RandomAffine(max_rotation=10, max_shear=0.3, p=1.0)(im, rng)
    assert out.width >= im.width - 1 and out.height > im.height
    a = np.asarray(out)
    assert a[0, 0] == 0 and a[-1, -1] == 0  # corners are new pixels, filled with the black background
    # nothing cropped: the ink amount stays about the same
    assert abs((a > 127).sum() / (np.asarray(im) > 127).sum() - 1) < 0.35


def _ink_centres(mask):
    ys, xs = np.nonzero(mask)
    return np.stack([xs, ys], axis=1).astype(float)


@pytest.mark.parametrize("dark_bg", [True, False])
def test_elastic_distortion_bends_strokes_locally_and_keeps_them(dark_bg):
    rng = np.random.default_rng(7)
    im = _expression(width=4, dark_bg=dark_bg, mode="L" if dark_bg else "RGB")
    out = ElasticDistortion(sigma_px=2.0, spacing=24, p=1.0)(im, rng)
    assert out.size == im.size and out.mode == im.mode
    a, b = np.asarray(im.convert("L")).astype(float), np.asarray(out.convert("L")).astype(float)
    ink_a, ink_b = ((a > 127), (b > 127)) if dark_bg else ((a < 128), (b < 128))
    assert not np.array_equal(ink_a, ink_b)  # the strokes moved
    assert abs(ink_b.sum() / ink_a.sum() - 1) < 0.15  # ... and kept their width and length
    # every warped ink pixel lies near some original ink pixel: a smooth field of a few px, not a scramble
    pa, pb = _ink_centres(ink_a), _ink_centres(ink_b)
    nearest = np.sqrt(((pb[:, None, :] - pa[None, :, :]) ** 2).sum(-1)).min(axis=1)
    assert np.percentile(nearest, 99) <= 8
    # the border is background (new pixels read the background colour)
    assert background_color(out) == background_color(im)
    # no field, no change (bilinear sampling at integer positions is exact)
    assert np.array_equal(np.asarray(ElasticDistortion(sigma_px=0.0, p=1.0)(im, rng)), np.asarray(im))
    assert ElasticDistortion(p=0.0)(im, rng) is im


def test_elastic_distortion_field_is_smooth_and_seeded():
    e = ElasticDistortion(sigma_px=2.0, spacing=24)
    dx, dy = e.displacement(300, 90, np.random.default_rng(1))
    assert dx.shape == dy.shape == (90, 300)
    assert 1.0 < dx.std() < 3.0 and 1.0 < dy.std() < 3.0
    assert np.abs(np.diff(dx, axis=1)).max() < 1.0  # neighbours move together: strokes are bent, not torn
    dx2, _ = e.displacement(300, 90, np.random.default_rng(1))
    assert np.array_equal(dx, dx2)


def test_with_transform_on_dataset():
    ims = [_expression(w=200 + i, h=70) for i in range(4)]
    ds = datasets.Dataset.from_dict(
        {"image": ims, "latex": ["a"] * 4, "height": [70] * 4, "width": [im.width for im in ims]},
        features=datasets.Features(
            {"image": datasets.Image(), "latex": datasets.Value("string"), "height": datasets.Value("int32"),
             "width": datasets.Value("int32")}
        ),
    )
    aug = HMERAugmentation([RandomScale(1.2, 1.2)], seed=0)
    item = ds.with_transform(aug)[0]
    assert item["image"].size == (240, 84) and item["width"] == 240 and item["height"] == 84
    assert ds.with_transform(aug.eval())[0]["image"].size == (200, 70)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        RandomScale(1.5, 1.0)
    with pytest.raises(ValueError):
        build_augmentation("nope")
    with pytest.raises(ValueError):
        ElasticDistortion(spacing=0)
