"""Dataset builders: every layout, mismatch reporting, layout detection, cached CROHME preparation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image, ImageDraw

from hmer_hf.data.builders import (
    HMER_FEATURES,
    build_caption_dataset,
    build_caption_splits,
    build_crohme,
    build_inkml_dataset,
    caption_symbol_counts,
    detect_layout,
    iter_captions,
    load_hmer_dataset,
    prepare_crohme,
    read_caption_file,
)
from hmer_hf.data.report import SkipReport

# ---------------------------------------------------------------------------------------------------------------
# helpers that write small layouts into tmp_path
# ---------------------------------------------------------------------------------------------------------------


def _strokes_image(seed: int, size=(120, 50), dark_bg=True, mode="L") -> Image.Image:
    rng = np.random.default_rng(seed)
    bg, ink = ((0, 255) if dark_bg else ((238, 232, 220), (30, 30, 40)))
    im = Image.new(mode, size, bg if mode == "L" or not dark_bg else (0, 0, 0))
    d = ImageDraw.Draw(im)
    for _ in range(3):
        pts = [tuple(int(v) for v in rng.integers(5, min(size) - 5, 2)) for _ in range(3)]
        d.line(pts, fill=ink if mode == "L" or not dark_bg else (255, 255, 255), width=3)
    return im


def _write_captions(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _make_images(folder: Path, names: list[str], ext=".bmp", size=(120, 50)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        _strokes_image(i, size=(size[0] + i, size[1])).save(folder / f"{name}{ext}")


def _make_bad_images(folder: Path) -> None:
    (folder / "empty.bmp").write_bytes(b"")
    (folder / "garbage.bmp").write_bytes(b"this is not an image at all")
    good = folder / "truncated.png"
    _strokes_image(9, size=(300, 200)).save(good)
    good.write_bytes(good.read_bytes()[:200])


def _comer_split(folder: Path) -> Path:
    """5 good pairs + every kind of mismatch."""
    _make_images(folder / "img", ["a", "b", "c", "d", "e", "orphan"])
    _make_bad_images(folder / "img")
    return _write_captions(
        folder / "caption.txt",
        [
            "a\tx ^ { 2 }",
            "b\t\\frac { 1 } { 2 }",
            "c  y   =  1",  # spaces instead of a tab, extra spaces
            "",  # empty line
            "d\t\\sqrt { x }",
            "a\tx ^ { 3 }",  # duplicate name: first kept
            "e\tz",
            "nofile\tq",  # caption without image
            "blank",  # name without tokens
            "empty\t1",
            "garbage\t2",
            "truncated\t3",
        ],
    )


def _ids(ds):
    return sorted(ds["id"])


# ---------------------------------------------------------------------------------------------------------------
# caption-file layouts
# ---------------------------------------------------------------------------------------------------------------


def test_read_caption_file_reports_bad_lines(tmp_path):
    path = _write_captions(tmp_path / "caption.txt", ["\ufeffa\tx", "b  y  z", "", "a\tq", "c", "d.jpg\t1 + 1", "  "])
    report = SkipReport()
    caps = read_caption_file(path, report)
    assert caps == {"a": "x", "b": "y z", "d": "1 + 1"}
    assert report.counts() == {"empty line": 2, "duplicate name": 1, "empty caption": 1}


def test_comer_layout_counts_every_mismatch_and_keeps_the_rest(tmp_path):
    ds, report = build_caption_dataset(_comer_split(tmp_path / "2014"), progress=False)
    assert ds.features == HMER_FEATURES
    assert _ids(ds) == ["a", "b", "c", "d", "e"]
    assert report.counts() == {
        "empty line": 1,
        "duplicate name": 1,
        "caption without image": 1,
        "empty caption": 1,
        "image without caption": 1,
        "empty image file": 1,
        "corrupt image": 2,
    }
    by_id = {r["id"]: r for r in ds}
    assert by_id["a"]["latex"] == "x ^ { 2 }"  # the first of the duplicates
    assert by_id["c"]["latex"] == "y = 1"
    assert by_id["b"]["image"].size == (121, 50) and (by_id["b"]["height"], by_id["b"]["width"]) == (50, 121)
    assert {item for item, reason in report.items if reason.startswith("corrupt")} == {
        str(tmp_path / "2014/img/garbage.bmp"),
        str(tmp_path / "2014/img/truncated.png"),
    }


def test_bttr_flat_layout_and_wap_suffix(tmp_path):
    _make_images(tmp_path / "bttr", ["p", "q"], ext=".png")
    ds, report = build_caption_dataset(_write_captions(tmp_path / "bttr/caption.txt", ["p\ta", "q\tb"]),
                                       progress=False)
    assert _ids(ds) == ["p", "q"] and not report

    _make_images(tmp_path / "wap", ["p_0", "q_0", "r"], ext=".jpg")
    ds, report = build_caption_dataset(_write_captions(tmp_path / "wap/caption.txt", ["p\ta", "q\tb", "r\tc"]),
                                       progress=False)
    assert _ids(ds) == ["p", "q", "r"] and not report
    assert ds.filter(lambda r: r["id"] == "p")[0]["latex"] == "a"


def test_duplicate_image_names_are_reported(tmp_path):
    _make_images(tmp_path, ["a"], ext=".bmp")
    _make_images(tmp_path, ["a"], ext=".png")
    ds, report = build_caption_dataset(_write_captions(tmp_path / "caption.txt", ["a\tx"]), progress=False)
    assert _ids(ds) == ["a"] and report.counts() == {"duplicate image": 1}
    assert ds.cast_column("image", datasets.Image(decode=False))[0]["image"]["path"].endswith("a.bmp")


def test_caption_splits_give_a_dataset_dict(tmp_path):
    _comer_split(tmp_path / "2014")
    _make_images(tmp_path / "2016/img", ["k"])
    _write_captions(tmp_path / "2016/caption.txt", ["k\t1"])
    dd, report = build_caption_splits(tmp_path, progress=False)
    assert set(dd) == {"2014", "2016"} and dd["2016"]["id"] == ["k"]
    assert len(report) == 8  # the 2014 mismatches, merged


def test_crohme_2014_canonical_images(crohme_dir):
    ds, report = build_caption_dataset(crohme_dir / "2014" / "caption.txt", progress=False)
    assert len(ds) == 986 and not report
    row = ds[0]
    assert row["image"].mode == "L" and row["image"].size == (row["width"], row["height"])


# ---------------------------------------------------------------------------------------------------------------
# HME100K
# ---------------------------------------------------------------------------------------------------------------

HME_CAPTIONS = [
    "x ^ { 2 } + 1 = 5",
    "\\because a = b",
    "解 : x = 3",
    "面 积 = 2 \\times 3",
    "\\frac { 1 } { 2 } 元",
    "y = k x + b",
    "甲 乙 丙",
    "\\angle A = 9 0 ^ { \\circ }",
    "a \\parallel b",
    "c m ^ { 2 }",
]


def _hme100k(root: Path) -> Path:
    for split, rng in (("train", range(0, 8)), ("test", range(8, 10))):
        img_dir = root / split / f"{split}_images"
        img_dir.mkdir(parents=True)
        lines = []
        for i in rng:
            # RGB photo-like: dark ink on light, slightly uneven paper, saved as JPEG
            im = _strokes_image(i, size=(160 + 4 * i, 60), dark_bg=False, mode="RGB")
            im.save(img_dir / f"{split}_{i}.jpg", quality=85)
            lines.append(f"{split}_{i}.jpg\t{HME_CAPTIONS[i]}")
        _write_captions(root / split / f"{split}_labels.txt", lines)
    (root / "train/train_images/unlabelled.jpg").write_bytes((root / "train/train_images/train_0.jpg").read_bytes())
    return root


def test_hme100k_layout_and_vocabulary(tmp_path):
    root = _hme100k(tmp_path / "HME100K")
    assert detect_layout(root) == "hme100k"
    dd, report = load_hmer_dataset(root, progress=False)
    assert set(dd) == {"train", "test"} and len(dd["train"]) == 8 and len(dd["test"]) == 2
    assert report.counts() == {"image without caption": 1}
    row = dd["train"][2]
    assert row["id"] == "train_2" and row["latex"] == "解 : x = 3"
    assert row["image"].mode == "RGB" and np.asarray(row["image"]).mean() > 150  # stored as is: light paper

    counts = caption_symbol_counts(dd)
    assert counts["="] == 6 and counts["解"] == 1 and "\\because" in counts and "甲" in counts
    assert list(iter_captions(dd, splits=["test"])) == HME_CAPTIONS[8:]
    try:
        from hmer_hf.tokenization_hmer import HMERTokenizer
    except ImportError:
        pytest.skip("HMERTokenizer not available")
    tok = HMERTokenizer.from_captions(iter_captions(dd))
    vocab = tok.get_vocab()
    assert all(sym in vocab for sym in counts)
    ids = tok("解 : x = 3")["input_ids"]
    assert tok.unk_token_id not in ids
    assert "解" in tok.decode(ids, skip_special_tokens=True)


# ---------------------------------------------------------------------------------------------------------------
# ImageFolder with metadata
# ---------------------------------------------------------------------------------------------------------------


def _imagefolder(folder: Path, fmt="jsonl") -> Path:
    _make_images(folder, ["f1", "f2", "f3", "nometa"], ext=".png")
    _make_images(folder / "sub", ["f4"], ext=".jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    records = [
        {"file_name": "f1.png", "latex": "\\frac{a}{b}"},
        {"file_name": "f2.png", "latex": "x^2+y^2=z^2"},
        {"file_name": "sub/f4.jpg", "latex": "\\sqrt{2}"},
        {"file_name": "f3.png", "latex": "\\frac{1}{"},  # bad latex
        {"file_name": "f1.png", "latex": "a"},  # duplicate
        {"file_name": "missing.png", "latex": "b"},  # no such file
        {"file_name": "broken.png", "latex": "c"},  # corrupt
        {"file_name": "f2.png", "latex": ""},  # empty latex
    ]
    if fmt == "jsonl":
        (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    else:
        lines = ["file_name,latex"] + [f'{r["file_name"]},"{r["latex"]}"' for r in records]
        (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_imagefolder_metadata_normalised_and_validated(tmp_path, fmt):
    folder = _imagefolder(tmp_path / "user", fmt)
    assert detect_layout(folder) == "imagefolder"
    ds, report = load_hmer_dataset(folder, progress=False)
    assert isinstance(ds, datasets.Dataset)
    latex = dict(zip(ds["id"], ds["latex"]))
    assert latex == {"f1": "\\frac { a } { b }", "f2": "x ^ { 2 } + y ^ { 2 } = z ^ { 2 }", "sub/f4": "\\sqrt { 2 }"}
    expected = {"bad latex": 1, "duplicate name": 1, "caption without image": 1, "corrupt image": 1,
                "empty caption": 1, "image without caption": 1}  # nometa; f3 counts once, as bad latex
    if fmt == "jsonl":
        expected["empty line"] = 1
    assert report.counts() == expected


def test_imagefolder_split_subfolders(tmp_path):
    for split in ("train", "validation"):
        _make_images(tmp_path / split, ["a", "b"], ext=".png")
        (tmp_path / split / "metadata.jsonl").write_text(
            '{"file_name": "a.png", "latex": "1"}\n{"file_name": "b.png", "latex": "x_1"}\n')
    dd, report = load_hmer_dataset(tmp_path, progress=False)
    assert set(dd) == {"train", "validation"} and dd["train"]["latex"] == ["1", "x _ { 1 }"] and not report


# ---------------------------------------------------------------------------------------------------------------
# InkML folders, CROHME root, cached preparation
# ---------------------------------------------------------------------------------------------------------------

INK = """<ink xmlns="http://www.w3.org/2003/InkML">
<annotation type="truth">{truth}</annotation>
<annotation type="UI">{name}</annotation>
<trace id="0">{pts0}</trace>
<trace id="1">{pts1}</trace>
</ink>
"""


def _write_ink(path: Path, truth: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = [", ".join(f"{x:.1f} {y:.1f}" for x, y in rng.uniform(0, 100, (6, 2))) for _ in range(2)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(INK.format(truth=truth, name=path.stem, pts0=pts[0], pts1=pts[1]), encoding="utf-8")


def _crohme_root(root: Path) -> Path:
    """A miniature CROHME root: train_inkml (2 subsets) + train_caption.txt + 2014/ canonical images."""
    _write_ink(root / "train_inkml/A/e1.inkml", "$x^2$", 1)
    _write_ink(root / "train_inkml/A/e2.inkml", "$\\frac{1}{2}$", 2)  # no caption: truth normalised
    _write_ink(root / "train_inkml/B/e3.inkml", "$a+b$", 3)
    _write_ink(root / "train_inkml/B/e1.inkml", "$y$", 4)  # same stem as A/e1: duplicate name
    _write_ink(root / "train_inkml/B/bad_latex.inkml", "$\\frac{1}{$", 5)
    (root / "train_inkml/B/empty.inkml").write_text("")
    (root / "train_inkml/B/broken.inkml").write_text("<ink><trace>1 2, 3")
    _write_captions(root / "train_caption.txt",
                    ["e1\tx ^ { 2 }", "e3\ta + b", "broken\t1", "gone\tz"])
    _make_images(root / "2014/img", ["t1", "t2"])
    _write_captions(root / "2014/caption.txt", ["t1\t1", "t2\t2"])
    return root


def test_inkml_folder_rendered_with_caption_precedence(tmp_path):
    root = _crohme_root(tmp_path / "crohme")
    _write_captions(root / "override.txt", ["e3\tb + a"])
    ds, report = build_inkml_dataset(root / "train_inkml", root / "override.txt", progress=False)
    latex = dict(zip(ds["id"], ds["latex"]))
    assert latex == {"e1": "x ^ { 2 }", "e2": "\\frac { 1 } { 2 }", "e3": "b + a"}  # caption wins for e3
    assert report.counts() == {"duplicate name": 1, "bad latex": 1, "empty file": 1, "broken XML": 1}
    im = ds[0]["image"]
    assert im.mode == "L" and im.size == (ds[0]["width"], ds[0]["height"])
    a = np.asarray(im)
    assert a.max() > 128 and np.median(a) < 64  # white ink on black


def test_inkml_num_proc_gives_same_rows(tmp_path):
    root = _crohme_root(tmp_path / "crohme")
    one, _ = build_inkml_dataset(root / "train_inkml", progress=False)
    two, _ = build_inkml_dataset(root / "train_inkml", progress=False, num_proc=2)
    assert one["id"] == two["id"] and one["latex"] == two["latex"] and one["height"] == two["height"]


def test_build_crohme_and_cached_prepare(tmp_path):
    root = _crohme_root(tmp_path / "crohme")
    assert detect_layout(root) == "crohme"
    dd, report = build_crohme(root, progress=False)
    assert set(dd) == {"train", "test_2014"} and len(dd["train"]) == 3 and len(dd["test_2014"]) == 2
    assert report.counts()["caption without image"] == 1  # "gone"

    out = tmp_path / "prepared"
    first, rep1 = prepare_crohme(root, out, progress=False)
    assert (out / "skipped.tsv").is_file() and json.loads((out / "prepare_info.json").read_text())["splits"] == {
        "train": 3, "test_2014": 2}
    # a second run loads from disk and never touches the source (remove it to prove it)
    for f in (root / "train_inkml").rglob("*.inkml"):
        f.unlink()
    start = time.perf_counter()
    again, rep2 = prepare_crohme(root, out, progress=False)
    assert time.perf_counter() - start < 10
    assert again["train"]["id"] == first["train"]["id"] and again["train"]["latex"] == first["train"]["latex"]
    assert rep2.items == rep1.items and rep2.counts() == report.counts()
    # images are embedded in the saved copy
    assert again["test_2014"][0]["image"].size == (again["test_2014"][0]["width"], again["test_2014"][0]["height"])
    assert detect_layout(out) == "saved" and load_hmer_dataset(out).dataset["train"].num_rows == 3
    with pytest.raises(FileExistsError):
        prepare_crohme(root, tmp_path / "crohme", progress=False)  # refuses a non-empty foreign folder


def test_detect_layout_caption_inkml_and_unknown(tmp_path):
    _comer_split(tmp_path / "comer/2014")
    assert detect_layout(tmp_path / "comer/2014") == "caption"
    assert detect_layout(tmp_path / "comer/2014/caption.txt") == "caption"
    assert detect_layout(tmp_path / "comer") == "caption_splits"
    _write_ink(tmp_path / "ink/x.inkml", "$x$", 0)
    assert detect_layout(tmp_path / "ink") == "inkml"
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="cannot tell the layout"):
        detect_layout(tmp_path / "nothing")


@pytest.mark.slow
def test_prepare_real_crohme(crohme_dir, tmp_path):
    """Full CROHME: 8,834 rendered train expressions (2 malformed files skipped), 986 canonical test images."""
    out = tmp_path / "crohme_prepared"
    start = time.perf_counter()
    dd, report = prepare_crohme(crohme_dir, out, num_proc=2, progress=False)
    first = time.perf_counter() - start
    assert len(dd["train"]) == 8834 and len(dd["test_2014"]) == 986
    assert report.counts() == {"empty file": 1, "broken XML": 1}
    start = time.perf_counter()
    dd2, _ = prepare_crohme(crohme_dir, out, progress=False)
    assert time.perf_counter() - start < 0.1 * first
    assert dd2["train"]["id"] == dd["train"]["id"]
