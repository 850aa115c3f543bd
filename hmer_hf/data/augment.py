"""Training-time image augmentations for handwritten expressions, usable as `Dataset.with_transform(...)` callables.

Every augmentation takes a PIL image and a `numpy.random.Generator` and returns a PIL image of the same mode and
the same polarity: the background colour is measured on the image border (black for CROHME's white-on-black
images, light for HME100K photos) and used for every new pixel, and stroke thickening picks the max or min filter
accordingly. [`HMERAugmentation`] composes them, applies them to the `"image"` list of a batch dict, and is switched
off for evaluation with `.eval()` (or simply not attached to the evaluation split).

Presets ([`build_augmentation`]):

- `"comer"`: CoMER's scale augmentation, k ~ U(0.7, 1.4), image resized by k (bilinear), nothing else.
- `"san"`: [`RandomScalePad`], the "random rescale then pad" rule documented on that class.
- `"handwriting"`: stroke-width jitter, small rotation/shear, then CoMER's scale augmentation.
- `"elastic"`: a smooth random warp ([`ElasticDistortion`]), small rotation/shear, then CoMER's scale augmentation.

Any preset can end with [`hmer_hf.data.restyle.CanvasRestyle`] (`canvas_prob` > 0): that share of the images become
canvas drawings (dark, thick, anti-aliased ink on a light page at another scale) for a processor that normalises ink.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter


def background_color(image: Image.Image) -> int | tuple[int, ...]:
    """The image's background colour: the per-band median of its one-pixel border."""
    a = np.asarray(image)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]], axis=0)
    med = np.median(border, axis=0)
    return int(med) if np.ndim(med) == 0 else tuple(int(v) for v in med)


def has_dark_background(image: Image.Image) -> bool:
    """True for white-ink-on-black images (CROHME), False for dark ink on light paper (photos, HME100K)."""
    bg = background_color(image)
    return float(np.mean(bg)) < 128


def _as_editable(image: Image.Image) -> Image.Image:
    # Bilinear resampling and fill colours need a grey or RGB image; palette/bilevel inputs are widened once here.
    if image.mode in ("L", "RGB"):
        return image
    return image.convert("RGB" if image.mode in ("P", "RGBA", "CMYK", "YCbCr", "LA", "PA") else "L")


class RandomScale:
    """CoMER scale augmentation: k ~ U(min_scale, max_scale), image resized by k (bilinear), applied with prob. p."""

    def __init__(self, min_scale: float = 0.7, max_scale: float = 1.4, p: float = 1.0):
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.min_scale, self.max_scale, self.p = min_scale, max_scale, p

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Resize by a random factor."""
        if rng.random() >= self.p:
            return image
        return self.rescale(image, rng)

    def rescale(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Resize by k ~ U(min_scale, max_scale) (bilinear)."""
        k = rng.uniform(self.min_scale, self.max_scale)
        w, h = image.size
        return image.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BILINEAR)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.min_scale}, {self.max_scale}, p={self.p})"


class RandomScalePad(RandomScale):
    """
    "Random rescale then pad" (the SAN-DA style scale augmentation), exact rule used here:

    1. k ~ U(min_scale, max_scale); the image is resized by k (bilinear).
    2. Each dimension that came out smaller than the original is padded back to the original size with the
       background colour, the content placed at a uniformly random offset; larger dimensions are kept.

    So shrinking makes the writing smaller inside an unchanged canvas (small writing with wide margins, as when a
    user writes small on a big pad) rather than making the whole image smaller, while enlarging behaves like
    [`RandomScale`]. SAN's public code ships no augmentation, so this is our documented reading of the rule, not a
    verified copy.
    """

    def __init__(self, min_scale: float = 0.5, max_scale: float = 1.2, p: float = 1.0):
        super().__init__(min_scale, max_scale, p)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Resize by a random factor, then pad shrunk dimensions back to the original size at a random offset."""
        if rng.random() >= self.p:
            return image
        w, h = image.size
        scaled = self.rescale(image, rng)
        sw, sh = scaled.size
        cw, ch = max(w, sw), max(h, sh)
        if (cw, ch) == (sw, sh):
            return scaled
        canvas = Image.new(scaled.mode, (cw, ch), background_color(image))
        canvas.paste(scaled, (int(rng.integers(0, cw - sw + 1)), int(rng.integers(0, ch - sh + 1))))
        return canvas


class RandomAffine:
    """Small rotation (degrees ~ U(-max_rotation, max_rotation)) and horizontal shear (slant); canvas grows to fit."""

    def __init__(self, max_rotation: float = 3.0, max_shear: float = 0.15, p: float = 0.5):
        self.max_rotation, self.max_shear, self.p = max_rotation, max_shear, p

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Rotate and slant around the centre, filling new pixels with the background colour."""
        if rng.random() >= self.p:
            return image
        theta = math.radians(rng.uniform(-self.max_rotation, self.max_rotation))
        shear = rng.uniform(-self.max_shear, self.max_shear)
        # forward map = rotation @ x-shear (x' = x + shear * y), about the image centre
        fwd = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) @ np.array(
            [[1.0, shear], [0.0, 1.0]]
        )
        w, h = image.size
        centre = np.array([w / 2, h / 2])
        corners = (np.array([[0, 0], [w, 0], [0, h], [w, h]]) - centre) @ fwd.T
        out_w = max(1, math.ceil(corners[:, 0].max() - corners[:, 0].min()))
        out_h = max(1, math.ceil(corners[:, 1].max() - corners[:, 1].min()))
        # PIL wants the inverse map: input = inv @ (output - out_centre) + centre
        inv = np.linalg.inv(fwd)
        offset = centre - inv @ np.array([out_w / 2, out_h / 2])
        coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
        return image.transform(
            (out_w, out_h), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=background_color(image)
        )

    def __repr__(self) -> str:
        return f"RandomAffine(max_rotation={self.max_rotation}, max_shear={self.max_shear}, p={self.p})"


class StrokeWidthJitter:
    """
    Thicken (3x3 dilation of the ink) with prob. p_thicken or thin (3x3 erosion) with prob. p_thin.

    Dilation of white ink is a max filter, of dark ink a min filter; the polarity is read from the border. Thinning
    is skipped when it would remove more than `min_keep` of the ink: CROHME's ~3 px strokes lose ~70% under a 3x3
    erosion and break apart, so it only acts on thicker (e.g. upscaled) writing.
    """

    def __init__(self, p_thicken: float = 0.3, p_thin: float = 0.2, min_keep: float = 0.5):
        if p_thicken + p_thin > 1:
            raise ValueError("p_thicken + p_thin must be <= 1")
        self.p_thicken, self.p_thin, self.min_keep = p_thicken, p_thin, min_keep

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Dilate or erode the strokes (or leave them)."""
        u = rng.random()
        if u >= self.p_thicken + self.p_thin:
            return image
        dark_bg = has_dark_background(image)
        thicken = u < self.p_thicken
        grow, shrink = (ImageFilter.MaxFilter(3), ImageFilter.MinFilter(3))
        if not dark_bg:
            grow, shrink = shrink, grow
        if thicken:
            return image.filter(grow)
        thinned = image.filter(shrink)
        ink_before, ink_after = _ink_amount(image, dark_bg), _ink_amount(thinned, dark_bg)
        return thinned if ink_before and ink_after >= self.min_keep * ink_before else image

    def __repr__(self) -> str:
        return f"StrokeWidthJitter(p_thicken={self.p_thicken}, p_thin={self.p_thin}, min_keep={self.min_keep})"


class ElasticDistortion:
    """
    Smooth random warp of the writing (elastic distortion): a different hand drawing the same expression.

    Exact rule: control points on a grid every `spacing` px (plus one beyond each edge) get independent displacements
    ~ N(0, sigma_px^2) in x and y; the field is interpolated bicubically to every pixel, and output pixel p takes the
    input at p + d(p) (bilinear; outside the image reads the background colour). The image keeps its size. With the
    defaults (spacing 24 px, about one CROHME symbol; sigma 2 px, about half a stroke width) symbols bend and shift
    against each other by a few pixels while strokes keep their width and stay connected.
    """

    def __init__(self, sigma_px: float = 2.0, spacing: float = 24.0, p: float = 0.5):
        if sigma_px < 0 or spacing <= 0:
            raise ValueError(f"need sigma_px >= 0 and spacing > 0, got {sigma_px}, {spacing}")
        self.sigma_px, self.spacing, self.p = sigma_px, spacing, p

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Warp by a fresh random field."""
        if rng.random() >= self.p:
            return image
        return self.warp(image, rng)

    def displacement(self, width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random smooth field (dx, dy), each float32 of shape (height, width)."""
        gw = max(2, math.ceil(width / self.spacing) + 2)
        gh = max(2, math.ceil(height / self.spacing) + 2)
        fields = []
        for _ in range(2):
            coarse = (rng.standard_normal((gh, gw)) * self.sigma_px).astype(np.float32)
            fields.append(np.asarray(Image.fromarray(coarse, mode="F").resize((width, height), Image.BICUBIC)))
        return fields[0], fields[1]

    def warp(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Apply one random field to the image (grey or RGB)."""
        w, h = image.size
        dx, dy = self.displacement(w, h, rng)
        a = np.asarray(image).astype(np.float32)
        # A one-pixel background frame: every sample outside the image is clipped onto it and reads the background.
        framed = np.empty((h + 2, w + 2, *a.shape[2:]), dtype=np.float32)
        framed[...] = np.asarray(background_color(image), dtype=np.float32)
        framed[1:-1, 1:-1] = a
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        sx, sy = xs + dx, ys + dy
        x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
        fx, fy = sx - x0, sy - y0
        if a.ndim == 3:
            fx, fy = fx[..., None], fy[..., None]
        out = np.zeros_like(a)
        for oy, ox, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
            out += wgt * framed[np.clip(y0 + oy + 1, 0, h + 1), np.clip(x0 + ox + 1, 0, w + 1)]
        return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode=image.mode)

    def __repr__(self) -> str:
        return f"ElasticDistortion(sigma_px={self.sigma_px}, spacing={self.spacing}, p={self.p})"


def _ink_amount(image: Image.Image, dark_bg: bool) -> int:
    a = np.asarray(image.convert("L"))
    return int((a > 127).sum() if dark_bg else (a < 128).sum())


class HMERAugmentation:
    """
    A composed, seeded augmentation for batch dicts: `dataset.with_transform(HMERAugmentation([...], seed=0))`.

    Augments every image in `batch["image"]` (a list of PIL images, or a single image for non-batched `map`) and
    updates `height`/`width` columns when the batch has them. Other keys pass through unchanged.

    Randomness: with a seed, the stream is deterministic. In a DataLoader worker the generator is re-seeded from
    `(seed, torch worker seed)`, so workers do not repeat each other and each epoch differs (torch draws a new
    worker base seed per epoch), yet runs with the same torch seed are reproducible. Without a seed, entropy is used.

    `.eval()` / `enabled=False` makes it the identity (the same batch object is returned); `.train()` turns it back on.
    """

    def __init__(self, transforms: Sequence[Any], seed: int | None = None, enabled: bool = True):
        self.transforms = list(transforms)
        self.seed = seed
        self.enabled = enabled
        self._rng: np.random.Generator | None = None
        self._rng_owner: int | None = None

    def train(self, mode: bool = True) -> "HMERAugmentation":
        """Switch augmentation on (or off with mode=False); returns self."""
        self.enabled = mode
        return self

    def eval(self) -> "HMERAugmentation":
        """Switch augmentation off (identity); returns self."""
        return self.train(False)

    def reseed(self, seed: int | None) -> None:
        """Restart the random stream from a new seed."""
        self.seed, self._rng, self._rng_owner = seed, None, None

    @property
    def rng(self) -> np.random.Generator:
        """The generator for the current process / DataLoader worker (created lazily)."""
        import torch.utils.data

        info = torch.utils.data.get_worker_info()
        owner = -1 if info is None else int(info.seed)
        if self._rng is None or self._rng_owner != owner:
            if info is None:
                self._rng = np.random.default_rng(self.seed)
            else:
                entropy = [info.seed] if self.seed is None else [self.seed, info.seed]
                self._rng = np.random.default_rng(entropy)
            self._rng_owner = owner
        return self._rng

    def augment_image(self, image: Image.Image) -> Image.Image:
        """Apply every transform in order to one image."""
        rng = self.rng
        image = _as_editable(image)
        for t in self.transforms:
            image = t(image, rng)
        return image

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Augment `batch["image"]` in place of the originals; identity when disabled."""
        if not self.enabled or "image" not in batch:
            return batch
        images = batch["image"]
        single = isinstance(images, Image.Image)
        out = [self.augment_image(im) for im in ([images] if single else images)]
        batch = dict(batch)
        batch["image"] = out[0] if single else out
        # Keep size columns truthful: the collator or a sampler reading them must see the augmented sizes.
        if "height" in batch:
            batch["height"] = out[0].height if single else [im.height for im in out]
        if "width" in batch:
            batch["width"] = out[0].width if single else [im.width for im in out]
        return batch

    def __repr__(self) -> str:
        state = "on" if self.enabled else "off"
        return f"HMERAugmentation({self.transforms}, seed={self.seed}, {state})"


AUGMENTATION_PRESETS = ("comer", "san", "handwriting", "elastic", "none")


def build_augmentation(preset: str = "handwriting", seed: int | None = None, canvas_prob: float = 0.0) -> HMERAugmentation:
    """A ready [`HMERAugmentation`] for a named preset: "comer", "san", "handwriting", "elastic" or "none" (identity),
    followed by canvas restyling of a `canvas_prob` share of the images when that is above 0."""
    if canvas_prob > 0:
        from .restyle import CanvasRestyle  # restyle imports this module

        base = build_augmentation(preset, seed)
        return HMERAugmentation([*base.transforms, CanvasRestyle(canvas_prob)], seed=seed)
    if preset == "comer":
        transforms = [RandomScale(0.7, 1.4)]
    elif preset == "san":
        transforms = [RandomScalePad()]
    elif preset == "handwriting":
        # Filter first, at the original stroke width; rotate/slant next; rescale last so its k range is exact.
        transforms = [StrokeWidthJitter(), RandomAffine(), RandomScale(0.7, 1.4)]
    elif preset == "elastic":
        # Warp first, at the original geometry (the field's spacing is in CROHME pixels); then slant; rescale last.
        transforms = [ElasticDistortion(), RandomAffine(), RandomScale(0.7, 1.4)]
    elif preset == "none":
        return HMERAugmentation([], seed=seed, enabled=False)
    else:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {AUGMENTATION_PRESETS}")
    return HMERAugmentation(transforms, seed=seed)
