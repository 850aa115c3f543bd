"""HMERImageProcessor: input kinds and PIL modes, polarity, crop, scale limits, batch padding, errors, save/load."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from hmer_hf.image_processing_hmer import HMERImageProcessor


def make_ink(height: int = 60, width: int = 120) -> np.ndarray:
    """A uint8 white-on-black 'expression' (a few 3 px strokes) with a margin of at least 15 px."""
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    draw.line([(15, 15), (40, height - 16)], fill=255, width=3)
    draw.line([(15, height - 16), (40, 15)], fill=255, width=3)
    draw.line([(55, height // 2), (width - 16, height // 2)], fill=255, width=3)
    return np.asarray(image).copy()


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (grey, 8 bit) with a tiny, unrelated IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def processor() -> HMERImageProcessor:
    """The default processor."""
    return HMERImageProcessor()


@pytest.fixture(scope="module")
def ink() -> np.ndarray:
    """The reference white-on-black test image."""
    return make_ink()


@pytest.fixture(scope="module")
def reference(processor, ink) -> np.ndarray:
    """What the reference image becomes: every equivalent input must give exactly this."""
    return processor(Image.fromarray(ink), return_tensors="np")["pixel_values"][0, 0]


def test_output_format(processor, ink):
    out = processor(Image.fromarray(ink))
    assert set(out) == {"pixel_values", "pixel_mask"}
    assert isinstance(out["pixel_values"], torch.Tensor) and out["pixel_values"].dtype == torch.float32
    assert out["pixel_mask"].dtype == torch.int64
    assert out["pixel_values"].ndim == 4 and out["pixel_values"].shape[:2] == (1, 1)
    assert out["pixel_values"].shape[2:] == out["pixel_mask"].shape[1:]
    assert out["pixel_values"].min() == 0 and out["pixel_values"].max() == 1


def test_white_on_black_with_crohme_margin_is_unchanged(processor):
    # Ink with the 12 px margin of the CROHME images: nothing to crop, invert or rescale.
    ink = make_ink()
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    image = np.pad(ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 12)
    out = processor(image, return_tensors="np")
    np.testing.assert_array_equal(out["pixel_values"][0, 0], image / np.float32(255))
    assert out["pixel_mask"].all()


def test_crohme_images_pass_through_unchanged(processor, crohme_dir):
    for name in ["18_em_0", "18_em_10", "RIT_2014_100"]:
        path = crohme_dir / "2014" / "img" / f"{name}.bmp"
        original = np.asarray(Image.open(path))
        out = processor(str(path), return_tensors="np")
        np.testing.assert_array_equal(out["pixel_values"][0, 0], original / np.float32(255))
        assert out["pixel_mask"].all()


@pytest.mark.parametrize("kind", ["pil", "numpy", "rgb", "path"])
def test_black_on_white_equals_its_white_on_black_inverse(processor, ink, reference, kind, tmp_path):
    inverse = 255 - ink
    if kind == "pil":
        image = Image.fromarray(inverse)
    elif kind == "numpy":
        image = inverse
    elif kind == "rgb":
        image = Image.fromarray(inverse).convert("RGB")
    else:
        image = tmp_path / "inverse.png"
        Image.fromarray(inverse).save(image)
    out = processor(image, return_tensors="np")["pixel_values"][0, 0]
    np.testing.assert_array_equal(out, reference)


def test_inverse_equality_on_grey_antialiased_input(processor):
    # A faint grey scan with antialiased strokes: the image and its exact inverse agree to the last bit.
    rng = np.random.default_rng(0)
    ink = make_ink(80, 160).astype(np.float64)
    grey = np.clip(200 - ink * 0.5 + rng.normal(0, 4, ink.shape), 0, 255).astype(np.uint8)
    a = processor(grey, return_tensors="np")["pixel_values"]
    b = processor(255 - grey, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(a, b)
    assert a.max() == 1.0 and (a == 0).mean() > 0.4  # ink stretched to white, background to black


def test_polarity_can_be_forced(ink):
    dark = HMERImageProcessor(polarity="dark_ink")(255 - ink, return_tensors="np")["pixel_values"]
    light = HMERImageProcessor(polarity="light_ink")(ink, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(dark, light)
    with pytest.raises(ValueError, match="blank"):
        HMERImageProcessor(polarity="light_ink")(255 - ink)  # read the wrong way round: no light ink
    with pytest.raises(ValueError, match="polarity"):
        HMERImageProcessor(polarity="sideways")


def _pil_variants(ink: np.ndarray) -> dict[str, Image.Image]:
    """The reference image in every PIL mode the processor accepts (same content, exact conversions)."""
    dark = 255 - ink  # black ink on white paper
    alpha = Image.merge("RGBA", [Image.new("L", (ink.shape[1], ink.shape[0]), 0)] * 3 + [Image.fromarray(ink)])
    return {
        "L": Image.fromarray(ink),
        "RGB": Image.fromarray(np.stack([ink] * 3, axis=-1)),
        "RGBA transparent page": alpha,  # black ink, transparency elsewhere -> over white
        "1": Image.fromarray(ink > 127).convert("1"),
        "I;16": Image.fromarray(ink.astype(np.uint16) * 257),
        "I": Image.fromarray(ink.astype(np.int32)),
        "F": Image.fromarray(ink.astype(np.float32) / 255),
        "P": Image.fromarray(dark).convert("P"),
        "LA": Image.merge("LA", [Image.fromarray(dark), Image.new("L", (ink.shape[1], ink.shape[0]), 255)]),
    }


@pytest.mark.parametrize("mode", list(_pil_variants(make_ink()).keys()))
def test_pil_modes(processor, ink, reference, mode):
    image = _pil_variants(ink)[mode]
    out = processor(image, return_tensors="np")["pixel_values"][0, 0]
    if mode == "1":
        # Binary ink: the antialiased rim is lost, the geometry is not.
        binary = processor(Image.fromarray(np.where(ink > 127, 255, 0).astype(np.uint8)), return_tensors="np")
        np.testing.assert_array_equal(out, binary["pixel_values"][0, 0])
    else:
        np.testing.assert_array_equal(out, reference)


def test_colour_ink_on_white(processor, ink, reference):
    page = np.full((*ink.shape, 3), 255, np.uint8)
    page[ink > 0] = (20, 40, 200)  # blue ballpoint
    out = processor(page, return_tensors="np")["pixel_values"][0, 0]
    assert out.shape == reference.shape
    np.testing.assert_array_equal(out > 0.5, reference > 0.5)


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a[..., None],  # HxWx1
        lambda a: np.stack([a] * 3, axis=-1),  # HxWx3
        lambda a: np.dstack([np.stack([a] * 3, axis=-1), np.full_like(a, 255)]),  # HxWx4, opaque
        lambda a: a.astype(np.float32) / 255,  # float in [0, 1]
        lambda a: a[None],  # 1xHxW (channels first)
        lambda a: torch.from_numpy(a.copy()),  # HxW tensor
        lambda a: torch.from_numpy(a.copy()).float().div(255)[None],  # 1xHxW float tensor
        lambda a: torch.from_numpy(np.stack([a] * 3)).float().div(255),  # 3xHxW float tensor
    ],
    ids=["hw1", "hw3", "hw4", "float01", "1hw", "torch_hw", "torch_1hw", "torch_3hw"],
)
def test_array_and_tensor_inputs(processor, ink, reference, convert):
    out = processor(convert(ink), return_tensors="np")["pixel_values"][0, 0]
    np.testing.assert_array_equal(out, reference)


def test_bool_array_and_file_inputs(processor, ink, reference, tmp_path):
    binary = ink > 127
    expected = processor(binary.astype(np.uint8) * 255, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(processor(binary, return_tensors="np")["pixel_values"], expected)

    path = tmp_path / "ink.png"
    Image.fromarray(ink).save(path)
    for source in (path, str(path), path.read_bytes()):
        np.testing.assert_array_equal(processor(source, return_tensors="np")["pixel_values"][0, 0], reference)


def test_crop_to_ink_with_margin():
    image = np.zeros((300, 400), np.uint8)
    image[100:120, 200:250] = 255  # ink box: rows 100-119, columns 200-249
    out = HMERImageProcessor(crop_margin=5)(image, return_tensors="np")["pixel_values"][0, 0]
    assert out.shape == (20 + 2 * 5, 50 + 2 * 5)
    assert out[5:25, 5:55].min() == 1 and out[:5].max() == 0 and out[:, :5].max() == 0 and out[25:].max() == 0
    assert HMERImageProcessor(crop_margin=0)(image, return_tensors="np")["pixel_values"].shape[2:] == (20, 50)
    # The margin never reaches beyond the image: rows 0-269, columns 50-399 -> 270 x 350, then scaled to the
    # maximum height: 256 x 332.
    assert HMERImageProcessor(crop_margin=150)(image, return_tensors="np")["pixel_values"].shape[2:] == (256, 332)
    assert HMERImageProcessor(do_crop=False)(image, return_tensors="np")["pixel_values"].shape[2:] == (256, 341)


def _block(height: int, width: int) -> np.ndarray:
    """White ink everywhere but a 1 px black frame (which keeps the background detectable)."""
    image = np.zeros((height, width), np.uint8)
    image[1:-1, 1:-1] = 255
    return image


@pytest.mark.parametrize(
    ("size", "expected", "kwargs"),
    [
        ((100, 300), (100, 300), {}),  # inside the limits: scale kept
        ((400, 100), (256, 64), {}),  # too tall
        ((50, 3000), (17, 1024), {}),  # too wide
        ((200, 200), (100, 100), {"max_pixels": 10_000}),  # too many pixels
        ((8, 100), (16, 200), {}),  # too short: enlarged to the minimum
        ((10, 5000), (2, 1024), {}),  # extreme aspect: max width wins, the height is padded later
    ],
)
def test_output_size(processor, size, expected, kwargs):
    assert processor.get_output_size(*size, **kwargs) == expected


def test_scaling_limits_on_images():
    processor = HMERImageProcessor(do_crop=False)
    out = processor([_block(400, 100), _block(10, 5000), _block(5, 5)], return_tensors="np")
    values, mask = out["pixel_values"], out["pixel_mask"]
    assert values.shape == (3, 1, 256, 1024)
    tall, wide, tiny = values[:, 0]
    assert mask[0].sum() == 256 * 64 and tall[:256, :64].mean() > 0.9 and tall[:, 64:].max() == 0
    # Extreme aspect: 2 rows (10 * 1024 / 5000), padded to the 16-row minimum; that padding counts as image.
    assert wide[:2].mean() > 0.7 and wide[2:].max() == 0 and mask[1].sum() == 16 * 1024
    # Too small: enlarged to 16 x 16.
    assert mask[2].sum() == 16 * 16 and tiny[4:12, 4:12].min() > 0.75 and tiny[16:].max() == 0


def test_batch_padding_and_mask(processor, ink):
    small = make_ink(40, 60)
    out = processor([ink, small], return_tensors="pt")
    sizes = [processor.process_image(image).shape for image in (ink, small)]
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    assert out["pixel_values"].shape == (2, 1, height, width) and out["pixel_mask"].shape == (2, height, width)
    for i, (h, w) in enumerate(sizes):
        assert out["pixel_mask"][i].sum() == h * w
        assert out["pixel_mask"][i, :h, :w].all()  # top-left aligned
        assert out["pixel_values"][i, 0, h:].abs().sum() == 0 and out["pixel_values"][i, 0, :, w:].abs().sum() == 0
        alone = torch.from_numpy(processor.process_image([ink, small][i]))
        torch.testing.assert_close(out["pixel_values"][i, 0, :h, :w], alone)

    padded = processor([ink, small], pad_to_multiple_of=32, return_tensors="np")
    assert padded["pixel_values"].shape[2] % 32 == 0 and padded["pixel_values"].shape[3] % 32 == 0
    assert padded["pixel_mask"].sum() == out["pixel_mask"].sum().item()
    assert isinstance(processor(ink, return_tensors=None)["pixel_values"], np.ndarray)


def test_per_call_overrides(processor, ink):
    assert processor(ink, max_height=16, return_tensors="np")["pixel_values"].shape[2] == 16
    assert processor.max_height == 256  # the instance is unchanged
    with pytest.raises(TypeError, match="unknown_option"):
        processor(ink, unknown_option=1)


@pytest.mark.parametrize("value", [0, 255, 128])
def test_blank_image_is_rejected(processor, value):
    with pytest.raises(ValueError, match="blank"):
        processor(np.full((40, 40), value, np.uint8))


def test_blank_image_error_names_the_file(processor, tmp_path):
    path = tmp_path / "empty.png"
    Image.new("L", (30, 30), 255).save(path)
    with pytest.raises(ValueError, match="empty.png.*blank"):
        processor([make_ink(), str(path)])


def test_unreadable_files(processor, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not an image at all")
    with pytest.raises(ValueError, match="corrupt.png"):
        processor(str(corrupt))

    buffer = io.BytesIO()
    Image.fromarray(make_ink(200, 400)).save(buffer, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match="truncated.png"):
        processor(truncated)

    with pytest.raises(ValueError, match="missing.png"):
        processor(str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="Unsupported"):
        processor(12345)


def test_decompression_bombs_are_refused_before_decoding(processor, tmp_path):
    # 8000 x 8000 = 64 M pixels: above max_input_pixels (50 M), below Pillow's own guard -> our check on the header.
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(8000, 8000))
    with pytest.raises(ValueError, match="big.png.*max_input_pixels"):
        processor(str(big))
    # 100000 x 100000: Pillow itself refuses it inside Image.open.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(100_000, 100_000))
    with pytest.raises(ValueError, match="bomb.png.*decompression bomb"):
        processor(str(bomb))
    with pytest.raises(ValueError, match="decompression bomb"):
        processor(png_bytes(100_000, 100_000))
    # A low limit applies to already-open images and arrays alike.
    strict = HMERImageProcessor(max_input_pixels=1000)
    with pytest.raises(ValueError, match="max_input_pixels=1000"):
        strict(Image.fromarray(make_ink()))
    with pytest.raises(ValueError, match="max_input_pixels=1000"):
        strict(make_ink())


def test_strokes_and_images_together_are_refused(processor, ink):
    with pytest.raises(ValueError, match="either"):
        processor(images=[ink], strokes=[[[(0, 0), (10, 10)]]])


def test_save_and_load_round_trip(tmp_path, ink):
    settings = dict(
        min_height=8, max_height=128, min_width=32, max_width=512, max_pixels=50_000, do_crop=False, crop_margin=3,
        polarity="light_ink", ink_threshold=30, normalize_contrast=False, resample=Image.Resampling.LANCZOS,
        pad_to_multiple_of=16, max_input_pixels=1_000_000,
    )  # fmt: skip
    processor = HMERImageProcessor(**settings)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = HMERImageProcessor.from_pretrained(tmp_path)
    for key, value in settings.items():
        assert getattr(loaded, key) == value, key
    np.testing.assert_array_equal(
        loaded(ink, return_tensors="np")["pixel_values"], processor(ink, return_tensors="np")["pixel_values"]
    )
    assert HMERImageProcessor.from_pretrained(tmp_path, max_width=256).max_width == 256


def test_invalid_limits():
    with pytest.raises(ValueError, match="min_height"):
        HMERImageProcessor(min_height=300, max_height=256)
    with pytest.raises(ValueError, match="max_pixels"):
        HMERImageProcessor(max_pixels=100)


# ---- online ink (strokes) ----

PLUS_ONE = [[(0, 20), (30, 20)], [(15, 5), (15, 35)], [(50, 5), (50, 40)]]


def test_strokes_render_exactly_like_training_ink():
    from hmer_hf.data import render_strokes

    processor = HMERImageProcessor()
    from_strokes = processor(strokes=[PLUS_ONE])
    from_image = processor(images=[render_strokes(PLUS_ONE)])
    assert torch.equal(from_strokes["pixel_values"], from_image["pixel_values"])
    assert torch.equal(from_strokes["pixel_mask"], from_image["pixel_mask"])


def test_stroke_formats_agree():
    import json

    processor = HMERImageProcessor()
    reference = processor(strokes=[PLUS_ONE])["pixel_values"]
    as_dicts = [[{"x": x, "y": y} for x, y in stroke] for stroke in PLUS_ONE]
    as_columns = [{"x": [p[0] for p in s], "y": [p[1] for p in s]} for s in PLUS_ONE]
    as_arrays = [np.asarray(s, dtype=float) for s in PLUS_ONE]
    canvas_json = json.dumps({"strokes": as_dicts})
    for form in (as_dicts, as_columns, as_arrays, canvas_json, {"traces": PLUS_ONE}):
        assert torch.equal(processor(strokes=[form])["pixel_values"], reference)
    # A batch of expressions is padded like images.
    batch = processor(strokes=[PLUS_ONE, PLUS_ONE[:2]])
    assert batch["pixel_values"].shape[0] == 2 and batch["pixel_mask"][1].sum() < batch["pixel_mask"][0].sum()


@pytest.mark.parametrize("bad", [[], [[(1, 1)]], {"points": []}, "not json"])
def test_bad_strokes_are_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"strokes #0"):
        HMERImageProcessor()(strokes=[bad])


def test_scale_resizes_after_the_crop(processor, ink):
    full = processor(Image.fromarray(ink), return_tensors="np")["pixel_values"][0, 0]
    half = HMERImageProcessor(scale=0.5)(Image.fromarray(ink), return_tensors="np")["pixel_values"][0, 0]
    assert abs(half.shape[0] - full.shape[0] / 2) <= 1 and abs(half.shape[1] - full.shape[1] / 2) <= 1
    # the ink survives the (anti-aliased) downscale: same mean brightness within a few percent
    assert abs(half.mean() - full.mean()) < 0.1 * full.mean()
    assert HMERImageProcessor.from_dict(HMERImageProcessor(scale=0.5).to_dict()).scale == 0.5
    with pytest.raises(ValueError, match="scale"):
        HMERImageProcessor(scale=0)
