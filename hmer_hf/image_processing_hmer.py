"""Image processor for handwritten math expressions: any image -> white ink on black, cropped, scale-limited, padded.

This file is shipped as Hugging Face remote code (copied flat next to the weights), so it only imports transformers,
numpy, Pillow and the standard library (torch only when it is installed, to accept tensors).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs
from transformers.utils import TensorType, logging

from .rendering_hmer import STROKE_WIDTH, InkGeometry, measure_ink, thin_ink
from .rendering_hmer import render_strokes as render_ink

logger = logging.get_logger(__name__)

__all__ = ["HMERImageProcessor", "HMERImagesKwargs", "looks_like_crohme"]

POLARITIES = ("auto", "dark_ink", "light_ink")
NORMALIZE_INK = ("off", "auto", "always")
# `normalize_ink="auto"` leaves ink alone when `measure_ink` reads both inside these ranges: on the 986 canonical
# CROHME 2014 images it reads stroke widths of 3.4-4.3 px and writing sizes of 0.81-1.59 (docs/canvas.md), so all of
# them pass unchanged. Anything else (thin or thick pens, writing far from the CROHME size) is normalised.
CROHME_STROKE_WIDTHS = (3.0, 4.8)
CROHME_SCALES = (0.75, 1.65)
# The ink normalisation never produces an image larger than this (before the limits): a guard against a tiny
# scribble measured as very small writing and enlarged without bound.
_MAX_NORMALIZED_PIXELS = 4_000_000
# PIL modes holding more than 8 bits per pixel: scaled down to 8 bits by their value range.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Border medians this far from mid-grey decide the polarity alone (symmetric around 127.5: 255 - 160 = 95).
_LIGHT_BACKGROUND, _DARK_BACKGROUND = 160, 95


class HMERImagesKwargs(ImagesKwargs, total=False):
    """Settings of [`HMERImageProcessor`], declared so that `from_pretrained(..., max_height=128)` accepts them."""

    min_height: int
    max_height: int
    min_width: int
    max_width: int
    max_pixels: int
    do_crop: bool
    crop_margin: int
    polarity: str
    ink_threshold: int
    normalize_contrast: bool
    normalize_ink: str
    pad_to_multiple_of: int | None
    max_input_pixels: int


class HMERImageProcessor(BaseImageProcessor):
    r"""
    Turns images of handwritten math into the tensors an HMER model reads: `pixel_values` float32 `[B, 1, H, W]` in
    [0, 1], white ink (1) on black (0) like the CROHME offline images, and `pixel_mask` int64 `[B, H, W]` (1 = image,
    0 = batch padding).

    For every image: (1) decode it (paths, bytes, PIL images of any mode, numpy arrays, torch tensors) to 8-bit grey,
    compositing transparency over white; (2) detect the polarity from the border and invert black-on-white input;
    (3) subtract the background level and stretch the ink to full contrast; (4) crop to the ink bounding box plus
    `crop_margin` (never beyond the image); (5) rescale by `scale` (1.0: keep CROHME's scale), and further, aspect
    kept, only when the image breaks a limit (scale matters: the models are trained on ~3 px strokes at CROHME's
    fixed scale); (6) pad up to the minimum size. With `normalize_ink` on, ink that does not look like the CROHME
    images (a canvas drawing, a scan: other pen widths, other writing sizes) is first brought to their geometry
    between steps (3) and (4): rescaled so that the symbols have the CROHME size, then brought to the CROHME stroke
    width (binary; thick ink eroded by a disc, thin ink redrawn along its skeleton with the 3.25 px CROHME pen), so
    that `scale` and the limits then act on CROHME-style ink.
    The batch is then zero-padded bottom/right to its largest height and width.

    Args:
        min_height, min_width (`int`, defaults to 16): smaller images are zero-padded (bottom/right) up to these; the
            padding counts as image in `pixel_mask` so that no feature row or column is fully masked.
        max_height, max_width (`int`, defaults to 256 and 1024), max_pixels (`int`, defaults to 320000): larger
            images are scaled down (aspect kept). Images within all limits keep their scale; when the maxima and the
            minima cannot both hold (extreme aspect), the maxima win and the short side is padded.
        scale (`float`, defaults to 1.0): resize factor applied to every image after cropping (before the limits),
            e.g. 0.5 for a model trained at half CROHME's resolution; it is part of the model's input contract.
        do_crop (`bool`, defaults to `True`): crop to the ink bounding box.
        crop_margin (`int`, defaults to 12): margin kept around the ink when cropping; 12 px is the margin of the
            CROHME offline images, which therefore pass through the crop unchanged.
        polarity (`str`, defaults to `"auto"`): `"auto"` detects it; `"dark_ink"` (always invert) or `"light_ink"`
            (never invert) force it.
        ink_threshold (`int`, defaults to 48): a pixel is ink when it is brighter than the background level by more
            than this (0-255 scale, after inversion); an image without any is rejected as blank.
        normalize_contrast (`bool`, defaults to `True`): map the background level to 0 and the brightest ink to 255.
        normalize_ink (`str`, defaults to `"off"`): bring ink to the geometry of the CROHME images the models are
            trained on. `"auto"` measures the stroke width and writing size (`rendering_hmer.measure_ink`) and
            normalises only when one is outside the CROHME ranges (`CROHME_STROKE_WIDTHS`, `CROHME_SCALES`), so
            CROHME-style images pass unchanged; `"always"` normalises every image; `"off"` never does (the default,
            which keeps every earlier output). Recommended: `"auto"` for drawings and scans.
        resample (`int`, defaults to `PIL.Image.BILINEAR`): PIL filter used when rescaling.
        pad_to_multiple_of (`int`, *optional*): round the padded batch height and width up to a multiple of this.
        max_input_pixels (`int`, defaults to 50_000_000): inputs with more pixels are refused before decoding
            (decompression-bomb guard).
    """

    model_input_names = ["pixel_values", "pixel_mask"]
    valid_kwargs = HMERImagesKwargs

    def __init__(
        self,
        min_height: int = 16,
        max_height: int = 256,
        min_width: int = 16,
        max_width: int = 1024,
        max_pixels: int = 320_000,
        do_crop: bool = True,
        crop_margin: int = 12,
        polarity: str = "auto",
        ink_threshold: int = 48,
        normalize_contrast: bool = True,
        normalize_ink: str = "off",
        resample: int = Image.Resampling.BILINEAR,
        pad_to_multiple_of: int | None = None,
        max_input_pixels: int = 50_000_000,
        scale: float = 1.0,
        **kwargs,
    ):
        # Saved configs carry the class name; it is not a setting.
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        self.min_height = int(min_height)
        self.max_height = int(max_height)
        self.min_width = int(min_width)
        self.max_width = int(max_width)
        self.max_pixels = int(max_pixels)
        self.do_crop = bool(do_crop)
        self.crop_margin = int(crop_margin)
        self.polarity = polarity
        self.ink_threshold = int(ink_threshold)
        self.normalize_contrast = bool(normalize_contrast)
        self.normalize_ink = normalize_ink
        self.resample = int(resample)
        self.pad_to_multiple_of = None if pad_to_multiple_of is None else int(pad_to_multiple_of)
        self.max_input_pixels = int(max_input_pixels)
        self.scale = float(scale)
        self._validate_settings(vars(self))

    # ---- settings ----

    _SETTINGS = (
        "min_height", "max_height", "min_width", "max_width", "max_pixels", "do_crop", "crop_margin", "polarity",
        "ink_threshold", "normalize_contrast", "normalize_ink", "resample", "pad_to_multiple_of", "max_input_pixels",
        "scale",
    )  # fmt: skip

    @staticmethod
    def _validate_settings(s: dict) -> None:
        """Raise a ValueError for inconsistent size limits or an unknown polarity or ink normalisation."""
        if s["polarity"] not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES}, got {s['polarity']!r}")
        if s["normalize_ink"] not in NORMALIZE_INK:
            raise ValueError(f"normalize_ink must be one of {NORMALIZE_INK}, got {s['normalize_ink']!r}")
        if not 1 <= s["min_height"] <= s["max_height"] or not 1 <= s["min_width"] <= s["max_width"]:
            raise ValueError(
                "Need 1 <= min_height <= max_height and 1 <= min_width <= max_width, got "
                f"height [{s['min_height']}, {s['max_height']}], width [{s['min_width']}, {s['max_width']}]"
            )
        if s["max_pixels"] < s["min_height"] * s["min_width"]:
            raise ValueError(f"max_pixels={s['max_pixels']} is below min_height * min_width")
        if s["crop_margin"] < 0 or s["max_input_pixels"] < 1 or not 0 <= s["ink_threshold"] < 255:
            raise ValueError("crop_margin must be >= 0, max_input_pixels >= 1 and ink_threshold in [0, 255)")
        if not 0 < s["scale"] <= 8:
            raise ValueError(f"scale must be in (0, 8], got {s['scale']}")
        if s["pad_to_multiple_of"] is not None and s["pad_to_multiple_of"] < 1:
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {s['pad_to_multiple_of']}")

    def _resolve(self, overrides: dict) -> dict:
        """Settings of this call: the instance's, updated by per-call keyword arguments."""
        unknown = set(overrides) - set(self._SETTINGS)
        if unknown:
            raise TypeError(f"Unexpected keyword argument(s) for {type(self).__name__}: {sorted(unknown)}")
        settings = {key: getattr(self, key) for key in self._SETTINGS}
        settings.update({k: v for k, v in overrides.items() if v is not None})
        self._validate_settings(settings)
        return settings

    # ---- public API ----

    def __call__(
        self, images=None, strokes=None, return_tensors: str | TensorType | None = "pt", **kwargs
    ) -> BatchFeature:
        """Preprocess an image or a list of images (see [`~HMERImageProcessor.preprocess`])."""
        return self.preprocess(images, strokes=strokes, return_tensors=return_tensors, **kwargs)

    def preprocess(
        self, images=None, strokes=None, return_tensors: str | TensorType | None = "pt", **kwargs
    ) -> BatchFeature:
        """
        Preprocess an image or a list of images into `pixel_values` `[B, 1, H, W]` and `pixel_mask` `[B, H, W]`.

        Args:
            images: a file path (`str`/`Path`), encoded bytes, a PIL image, a numpy array (`HxW` or `HxWxC`, uint8
                or float in [0, 1]) or a torch tensor (`HxW` or `CxHxW`), or a list of these.
            strokes: online ink instead of images: a list with one entry per expression, each that expression's
                strokes (see [`~HMERImageProcessor.render_strokes`]), rendered exactly as the training ink was.
            return_tensors: `"pt"` (default) for torch tensors, `"np"` or `None` for numpy arrays.
            kwargs: any setting of the constructor, overriding it for this call.
        """
        settings = self._resolve(kwargs)
        if strokes is not None:
            # Online ink is rendered to white-on-black images, then goes through the same steps as any image.
            if images is not None:
                raise ValueError("Pass either `images` or `strokes`, not both.")
            arrays = []
            for i, expression in enumerate(strokes):
                try:
                    rendered = self.render_strokes(expression)
                except (TypeError, ValueError, KeyError) as err:
                    raise ValueError(f"strokes #{i}: cannot render: {err}") from err
                arrays.append(self._normalize(rendered, f"strokes #{i}", settings))
        else:
            if images is None:
                raise ValueError("No images given.")
            batch = _as_list(images)
            if not batch:
                raise ValueError("Empty list of images.")
            names = [_describe(image, i) for i, image in enumerate(batch)]
            arrays = [
                self._normalize(self.load_image(image, settings, name=name), name, settings)
                for image, name in zip(batch, names)
            ]
        pixel_values, pixel_mask = self.pad(arrays, pad_to_multiple_of=settings["pad_to_multiple_of"])
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_mask": pixel_mask}, tensor_type=return_tensors)

    def render_strokes(self, strokes: Any) -> np.ndarray:
        """Render one expression's online ink to a uint8 white-on-black image with the training renderer.

        `strokes` is a list of strokes, each a sequence of points `(x, y[, ...])` (arrays, lists, or `{"x", "y"}`
        dicts) or one `{"x": [...], "y": [...]}` dict; or a canvas's JSON (a string or dict holding such a list under
        `"strokes"` or `"traces"`). y grows downwards, as on a screen and in InkML.
        """
        return np.asarray(render_ink(_strokes_to_traces(strokes)), dtype=np.uint8)

    def process_image(self, image: Any, **kwargs) -> np.ndarray:
        """Turn one image into its float32 `[h, w]` array in [0, 1] (white ink on black), before batch padding."""
        settings = self._resolve(kwargs)
        name = _describe(image, 0)
        return self._normalize(self.load_image(image, settings, name=name), name, settings)

    def measure_ink(self, image: Any, **kwargs) -> InkGeometry:
        """Stroke width and writing size of one image's ink as `normalize_ink` reads them (`InkGeometry`: px of the
        input image; `.scale` is the writing size relative to the CROHME images)."""
        settings = self._resolve(kwargs)
        name = _describe(image, 0)
        gray = _orient_polarity(self.load_image(image, settings, name=name), settings["polarity"])
        return _measure(*_ink_strength(gray, name, settings["ink_threshold"]))[0]

    def get_output_size(self, height: int, width: int, **kwargs) -> tuple[int, int]:
        """Size an image of `height` x `width` is rescaled to (before padding up to the minimum size)."""
        s = self._resolve(kwargs)
        return _output_size(height, width, s)

    def pad(
        self, images: Sequence[np.ndarray], pad_to_multiple_of: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Zero-pad `[h, w]` arrays bottom/right to a common size; returns `pixel_values` and `pixel_mask`."""
        height = max(image.shape[0] for image in images)
        width = max(image.shape[1] for image in images)
        if pad_to_multiple_of:
            height = math.ceil(height / pad_to_multiple_of) * pad_to_multiple_of
            width = math.ceil(width / pad_to_multiple_of) * pad_to_multiple_of
        pixel_values = np.zeros((len(images), 1, height, width), dtype=np.float32)
        pixel_mask = np.zeros((len(images), height, width), dtype=np.int64)
        for i, image in enumerate(images):
            h, w = image.shape
            pixel_values[i, 0, :h, :w] = image
            pixel_mask[i, :h, :w] = 1
        return pixel_values, pixel_mask

    # ---- decoding ----

    def load_image(self, image: Any, settings: dict | None = None, name: str = "image") -> np.ndarray:
        """Decode any supported input to a uint8 `[h, w]` grey array (not yet inverted, cropped or scaled)."""
        settings = settings or self._resolve({})
        limit = settings["max_input_pixels"]
        if isinstance(image, (str, os.PathLike)):
            path = Path(image)
            if not path.is_file():
                raise ValueError(f"Image file not found: {name}")
            with open(path, "rb") as handle:
                return _decode_file(handle, name, limit)
        if isinstance(image, (bytes, bytearray, memoryview)):
            return _decode_file(io.BytesIO(bytes(image)), name, limit)
        if isinstance(image, Image.Image):
            # Check before touching pixels: an image from Image.open is still undecoded here.
            _check_pixels(image.size[1], image.size[0], name, limit)
            try:
                return _pil_to_gray(image)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                raise ValueError(f"Cannot decode {name}: {error}") from error
        if _is_torch_tensor(image):
            tensor = image.detach().cpu()
            if tensor.is_floating_point():
                tensor = tensor.float()  # numpy has no bfloat16
            array = tensor.numpy()
            if array.ndim == 3 and array.shape[0] in (1, 2, 3, 4):
                array = array.transpose(1, 2, 0)  # CxHxW (the torch convention) -> HxWxC
            elif array.ndim not in (2, 3):
                raise ValueError(f"{name}: expected a HxW or CxHxW tensor, got shape {tuple(array.shape)}")
            return _array_to_gray(array, name, limit)
        if isinstance(image, np.ndarray):
            array = image
            if array.ndim == 3 and array.shape[-1] not in (1, 2, 3, 4) and array.shape[0] in (1, 2, 3, 4):
                array = array.transpose(1, 2, 0)  # a channels-first array
            return _array_to_gray(array, name, limit)
        raise ValueError(
            f"Unsupported input {name}: expected a path, bytes, PIL image, numpy array or torch tensor, "
            f"got {type(image).__name__}"
        )

    # ---- the per-image steps ----

    def _normalize(self, gray: np.ndarray, name: str, s: dict) -> np.ndarray:
        """Polarity, contrast, ink normalisation, crop, rescale and minimum padding of one uint8 grey image; float32
        in [0, 1]."""
        gray = _orient_polarity(gray, s["polarity"])
        strength, ink = _ink_strength(gray, name, s["ink_threshold"])
        peak = int(strength.max())
        if s["normalize_contrast"]:
            gray = np.clip(np.rint(strength * (255.0 / peak)), 0, 255).astype(np.uint8)
        if s["normalize_ink"] != "off":
            redrawn = _normalize_ink(strength, ink, s)
            if redrawn is not None:
                gray, ink = redrawn, redrawn > 0
        if s["do_crop"]:
            rows = np.flatnonzero(ink.any(axis=1))
            cols = np.flatnonzero(ink.any(axis=0))
            m = s["crop_margin"]
            top, bottom = max(rows[0] - m, 0), min(rows[-1] + m + 1, gray.shape[0])
            left, right = max(cols[0] - m, 0), min(cols[-1] + m + 1, gray.shape[1])
            gray = gray[top:bottom, left:right]
        height, width = gray.shape
        new_height, new_width = _output_size(height, width, s)
        if (new_height, new_width) != (height, width):
            gray = np.asarray(Image.fromarray(gray).resize((new_width, new_height), resample=s["resample"]))
        out = np.zeros((max(new_height, s["min_height"]), max(new_width, s["min_width"])), dtype=np.float32)
        out[:new_height, :new_width] = gray.astype(np.float32) / 255.0
        return out


# ---- helpers (module level so that the data pipeline can reuse them without an instance) ----


def _output_size(height: int, width: int, s: dict) -> tuple[int, int]:
    """Target size: `scale` times the size inside the limits; else the scale that meets the maxima, or the minima if
    it can."""
    cap = min(s["max_height"] / height, s["max_width"] / width, math.sqrt(s["max_pixels"] / (height * width)))
    need = max(s["min_height"] / height, s["min_width"] / width)
    scale = min(float(s.get("scale", 1.0)), cap)
    if need > scale:
        # Too small: enlarge as far as the maxima allow; what is still missing is padded later.
        scale = min(need, cap)
    if scale == 1.0:
        return height, width
    new_height = min(max(1, round(height * scale)), s["max_height"])
    new_width = min(max(1, round(width * scale)), s["max_width"])
    # Rounding up may overshoot max_pixels by a row or column: trim the longer side.
    while new_height * new_width > s["max_pixels"]:
        if new_width >= new_height:
            new_width -= 1
        else:
            new_height -= 1
    return new_height, new_width


def looks_like_crohme(geometry: InkGeometry) -> bool:
    """Whether measured ink has the CROHME images' stroke width and writing size (what `normalize_ink="auto"` keeps)."""
    low_width, high_width = CROHME_STROKE_WIDTHS
    low_scale, high_scale = CROHME_SCALES
    return low_width <= geometry.stroke_width <= high_width and low_scale <= geometry.scale <= high_scale


def _ink_strength(gray: np.ndarray, name: str, ink_threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """Light-ink grey image -> (strength: int16 difference from the border's background level, ink: strength above
    `ink_threshold`); a ValueError naming the input when there is no ink."""
    background = int(round(float(np.median(_border(gray)))))
    strength = gray.astype(np.int16) - background
    ink = strength > ink_threshold
    if not ink.any():
        raise ValueError(
            f"{name} looks blank: no pixel differs from the background ({background}) by more than "
            f"ink_threshold={ink_threshold}"
        )
    return strength, ink


def _measure(strength: np.ndarray, ink: np.ndarray) -> tuple[InkGeometry, np.ndarray, np.ndarray]:
    """`measure_ink` of the pixels above half the peak strength (within `ink`), and the rows and columns that hold
    them."""
    half = ink & (2 * strength.astype(np.int32) > int(strength.max()))
    rows = np.flatnonzero(half.any(axis=1))
    cols = np.flatnonzero(half.any(axis=0))
    return measure_ink(half[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]), rows, cols


def _normalize_ink(strength: np.ndarray, ink: np.ndarray, s: dict) -> np.ndarray | None:
    """Ink at the CROHME geometry: uint8 white-on-black image, binary (0/255), symbols at the CROHME size and strokes
    redrawn with the CROHME pen; None when `normalize_ink="auto"` finds the ink CROHME-like already.

    `strength` is the image minus its background level (ink positive), `ink` the pixels above `ink_threshold`. The ink
    is measured (`measure_ink`) on the pixels above half the peak strength, the image is resized by the inverse of
    the measured writing size (anti-aliased), thresholded at half contrast and brought to the CROHME stroke width
    (`thin_ink`: thick ink eroded, thin ink redrawn along its skeleton).
    """
    geometry, rows, cols = _measure(strength, ink)
    peak = int(strength.max())
    if s["normalize_ink"] == "auto" and looks_like_crohme(geometry):
        return None
    factor = 1.0 / geometry.scale
    if s["do_crop"]:
        # Keep what the crop margin will want, measured in output pixels, plus the pen's overhang.
        reach = math.ceil((s["crop_margin"] + STROKE_WIDTH) / factor)
        top, left = max(rows[0] - reach, 0), max(cols[0] - reach, 0)
        strength = strength[top : rows[-1] + reach + 1, left : cols[-1] + reach + 1]
    height, width = strength.shape
    factor = min(factor, math.sqrt(_MAX_NORMALIZED_PIXELS / (height * width)))
    level = np.clip(np.rint(strength * (255.0 / peak)), 0, 255).astype(np.uint8)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    resized = np.asarray(Image.fromarray(level).resize(size, resample=Image.Resampling.BILINEAR))
    redrawn = thin_ink(resized >= 128)
    if not redrawn.any():  # the ink vanished in the resize (a speck): keep the resized image as it is
        redrawn = resized >= resized.max() / 2
    return redrawn.astype(np.uint8) * 255


def _border(gray: np.ndarray) -> np.ndarray:
    """The outermost rows and columns of an image, flattened."""
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def _orient_polarity(gray: np.ndarray, polarity: str) -> np.ndarray:
    """Return the image as light ink on a dark background, inverting it when the ink is darker than the background."""
    if polarity == "light_ink":
        return gray
    if polarity == "dark_ink":
        return 255 - gray
    # The border is mostly background. A clearly light or dark border decides alone; a mid-grey one is resolved by
    # where the mean lies (sparse ink pulls it towards the ink side). Integer arithmetic keeps the rule exactly
    # antisymmetric, so an image and its inverse always come out identical.
    doubled_background = int(round(2 * float(np.median(_border(gray)))))
    if doubled_background > 2 * _LIGHT_BACKGROUND:
        dark_ink = True
    elif doubled_background < 2 * _DARK_BACKGROUND:
        dark_ink = False
    else:
        shift = 2 * int(gray.sum(dtype=np.int64)) - doubled_background * gray.size
        dark_ink = shift < 0 if shift != 0 else doubled_background > 255
    return 255 - gray if dark_ink else gray


def _check_pixels(height: int, width: int, name: str, limit: int) -> None:
    """Refuse an input larger than `limit` pixels before it is decoded."""
    if height * width > limit:
        raise ValueError(
            f"{name} is {width}x{height} = {height * width} pixels, more than max_input_pixels={limit}; refusing "
            "to decode it (possible decompression bomb). Raise max_input_pixels if the image is genuine."
        )


def _decode_file(handle, name: str, limit: int) -> np.ndarray:
    """Open an encoded image lazily, check its size from the header, then decode it to grey."""
    try:
        image = Image.open(handle)  # lazy: reads the header only
        _check_pixels(image.size[1], image.size[0], name, limit)
        image.load()
        image = ImageOps.exif_transpose(image)  # photos: honour the camera orientation
        return _pil_to_gray(image)
    except Image.DecompressionBombError as error:
        # Pillow's own guard fires inside Image.open for headers above 2 * Image.MAX_IMAGE_PIXELS.
        raise ValueError(f"{name} was refused by Pillow as a possible decompression bomb: {error}") from error
    except UnidentifiedImageError as error:
        raise ValueError(f"Cannot read {name}: not a recognised image file") from error
    except (OSError, SyntaxError, EOFError) as error:
        raise ValueError(f"Cannot read {name}: corrupt or truncated image ({error})") from error


def _composite_over_white(image: Image.Image) -> Image.Image:
    """Flatten transparency onto a white page."""
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _pil_to_gray(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 grey array (transparency over white, >8-bit modes scaled by their range)."""
    mode = image.mode
    if mode in _WIDE_MODES:
        return _scale_to_uint8(np.asarray(image), f"PIL image of mode {mode}")
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in ("LA", "La", "RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        image = _composite_over_white(image)
    elif mode != "RGB":
        image = image.convert("RGB")  # 1, P, CMYK, YCbCr, LAB, HSV, ...
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def _scale_to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Map an array to uint8 by its nominal range: bool, [0, 1] floats, 8-bit or 16-bit integer values."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * 255
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = values.min(), values.max()
    if low < 0:
        raise ValueError(f"{name} has negative values (min {low}); expected [0, 1] floats or unsigned integers")
    if np.issubdtype(array.dtype, np.floating) and high <= 1.0:
        top = 1.0
    elif high <= 255:
        top = 255.0
    elif high <= 65535:
        top = 65535.0
    else:
        top = high  # wider than 16 bits: scale by the actual maximum
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _array_to_gray(array: np.ndarray, name: str, limit: int) -> np.ndarray:
    """HxW or HxWxC (C: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) array -> uint8 grey."""
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (2, 3, 4)):
        raise ValueError(f"{name}: expected a HxW or HxWxC array (C in 1, 2, 3, 4), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {array.shape})")
    _check_pixels(array.shape[0], array.shape[1], name, limit)
    array = _scale_to_uint8(np.asarray(array), name)
    if array.ndim == 2:
        return np.ascontiguousarray(array)
    # Pillow infers LA / RGB / RGBA from the channel count of a uint8 array.
    return _pil_to_gray(Image.fromarray(np.ascontiguousarray(array)))


def _is_torch_tensor(value: Any) -> bool:
    """Whether `value` is a torch tensor, without importing torch when it is not installed."""
    return type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach")


def _as_list(images: Any) -> list:
    """A single image or a batch (list/tuple, or a 4-D array/tensor) as a list of single images."""
    if isinstance(images, (list, tuple)):
        return list(images)
    if (isinstance(images, np.ndarray) or _is_torch_tensor(images)) and images.ndim == 4:
        return list(images)
    return [images]


def _describe(image: Any, index: int) -> str:
    """A name for an input, used in error messages."""
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    if isinstance(image, Image.Image):
        return f"image #{index} (PIL {image.mode} {image.size[0]}x{image.size[1]})"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"image #{index} ({type(image).__name__} of shape {tuple(shape)})"
    return f"image #{index} ({type(image).__name__})"


def _point(point: Any) -> tuple[float, float]:
    """(x, y) of a point given as a sequence or an {"x", "y"} mapping."""
    if isinstance(point, dict):
        return float(point["x"]), float(point["y"])
    return float(point[0]), float(point[1])


def _strokes_to_traces(strokes: Any) -> list[np.ndarray]:
    """Online ink in the accepted forms (see `HMERImageProcessor.render_strokes`) -> a list of (N, 2) float arrays."""
    if isinstance(strokes, (str, bytes)):
        strokes = json.loads(strokes)
    if isinstance(strokes, dict):
        key = next((k for k in ("strokes", "traces") if k in strokes), None)
        if key is None:
            raise ValueError(f"stroke JSON needs a 'strokes' or 'traces' list, got keys {sorted(strokes)[:5]}")
        strokes = strokes[key]
    traces = []
    for stroke in strokes:
        if isinstance(stroke, dict):  # {"x": [...], "y": [...]}
            traces.append(np.stack([np.asarray(stroke["x"], float), np.asarray(stroke["y"], float)], axis=1))
        elif isinstance(stroke, np.ndarray) and stroke.ndim == 2:
            traces.append(stroke[:, :2].astype(float))
        else:
            traces.append(np.array([_point(p) for p in stroke], dtype=float).reshape(-1, 2))
    return traces
