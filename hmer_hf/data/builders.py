"""Dataset builders: every supported on-disk layout -> a `datasets.Dataset` (or `DatasetDict`) plus a SkipReport.

Every builder returns a [`BuildResult`] `(dataset, report)`: a named tuple, so `ds, report = build_...(...)` works.
The dataset has the columns of [`HMER_FEATURES`]:

- `image` (`datasets.Image()`): the stored image, as it is on disk (or rendered from ink). No model preprocessing
  here: polarity, cropping, scaling and padding belong to the image processor.
- `latex` (`string`): canonical space-separated tokens.
- `id` (`string`): the sample name (caption key / file stem).
- `height`, `width` (`int32`): image size, so samplers can batch by size without decoding images.

The report holds one `(item, "category: detail")` entry per thing skipped; `report.counts()` groups by category.
Categories: `caption without image`, `image without caption`, `empty line`, `empty caption`, `duplicate name`,
`duplicate image`, `empty image file`, `corrupt image`, `bad latex`, `no label`, plus the InkML reader's own
(`empty file`, `broken XML`, ...). Everything not reported is kept.

Layouts ([`load_hmer_dataset`] detects them):

- CROHME root (`train_inkml/` + `train_caption.txt` + `<year>/caption.txt`): [`build_crohme`], cached on disk by
  [`prepare_crohme`].
- InkML folder (+ optional caption file): [`build_inkml_dataset`], ink rendered with `render_strokes`.
- Caption file + images: CoMER (`<split>/caption.txt`, `<split>/img/NAME.bmp`), BTTR (`caption.txt` beside
  `NAME.bmp`), WAP (`NAME_0.bmp`): [`build_caption_dataset`]; a folder of such split folders gives a DatasetDict.
- HME100K (`train/train_labels.txt` + `train/train_images/*.jpg`, same for `test`): [`build_hme100k_dataset`].
- ImageFolder with `metadata.jsonl` / `metadata.csv` (`file_name`, `latex`): [`build_imagefolder_dataset`].
- A dataset written by `save_to_disk` (e.g. by [`prepare_crohme`]): loaded as is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import datasets
from PIL import Image

from .inkml import InkMLError, list_inkml_files, read_inkml
from .latex import LatexParseError, normalize_latex
from .render import render_strokes
from .report import SkipReport

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".bmp", ".png", ".jpg", ".jpeg")  # preference order when one name has several files

HMER_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "latex": datasets.Value("string"),
        "id": datasets.Value("string"),
        "height": datasets.Value("int32"),
        "width": datasets.Value("int32"),
    }
)

SKIP_REPORT_FILE = "skipped.tsv"  # written next to a prepared dataset
PREPARE_INFO_FILE = "prepare_info.json"


class BuildResult(NamedTuple):
    """What every builder returns: the dataset (Dataset or DatasetDict) and the SkipReport of what was left out."""

    dataset: datasets.Dataset | datasets.DatasetDict
    report: SkipReport


class ImageFileError(ValueError):
    """An image file that cannot be used (empty, corrupt, zero-sized); `reason` is the report entry."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# ---------------------------------------------------------------------------------------------------------------
# Reading captions and indexing images
# ---------------------------------------------------------------------------------------------------------------


def _strip_image_extension(name: str) -> str:
    # HME100K writes "NAME.jpg" as the key; CoMER/BTTR write "NAME". Both must meet the image stem.
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def read_caption_file(path: str | Path, report: SkipReport | None = None) -> dict[str, str]:
    """Parse `NAME<TAB or spaces>tokens` lines into {name: tokens}; blank/empty/duplicate lines go to `report`."""
    path = Path(path)
    report = report if report is not None else SkipReport()
    captions: dict[str, str] = {}
    first_line: dict[str, int] = {}
    with path.open(encoding="utf-8-sig") as f:  # -sig: tolerate a BOM written by Windows editors
        for lineno, line in enumerate(f, 1):
            where = f"{path}:{lineno}"
            if not line.strip():
                report.add(where, "empty line")
                continue
            parts = line.strip().split(None, 1)
            name = _strip_image_extension(parts[0])
            tokens = " ".join(parts[1].split()) if len(parts) > 1 else ""
            if not tokens:
                report.add(where, f"empty caption: {name}")
            elif name in captions:
                report.add(where, f"duplicate name: {name} (first on line {first_line[name]}, kept)")
            else:
                captions[name] = tokens
                first_line[name] = lineno
    return captions


def index_images(folder: str | Path, report: SkipReport | None = None, recursive: bool = False) -> dict[str, Path]:
    """Map image stem -> file for the image files in a folder; a stem with several files keeps the preferred one."""
    folder = Path(folder)
    report = report if report is not None else SkipReport()
    files = folder.rglob("*") if recursive else folder.iterdir()
    by_stem: dict[str, list[Path]] = {}
    for p in files:
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            by_stem.setdefault(p.stem, []).append(p)
    index = {}
    for stem, paths in sorted(by_stem.items()):
        paths.sort(key=lambda p: (IMAGE_EXTENSIONS.index(p.suffix.lower()), str(p)))
        index[stem] = paths[0]
        for extra in paths[1:]:
            report.add(extra, f"duplicate image: {stem} also as {paths[0].name} (kept)")
    return index


def probe_image(path: str | Path, verify: bool = True) -> tuple[int, int]:
    """(height, width) of an image file; raises ImageFileError for empty, corrupt or zero-sized files."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageFileError(path, "empty image file")
        with Image.open(path) as im:
            width, height = im.size
            if verify:
                im.load()  # the header alone does not catch truncated data
    except ImageFileError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageFileError(path, f"corrupt image: {e}") from e
    if width == 0 or height == 0:
        raise ImageFileError(path, "empty image file: zero size")
    return height, width


def _progress(iterable: Iterable, enabled: bool, **kwargs) -> Iterable:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


def _empty_rows() -> dict[str, list]:
    return {name: [] for name in HMER_FEATURES}


def _to_dataset(rows: dict[str, list]) -> datasets.Dataset:
    return datasets.Dataset.from_dict(rows, features=HMER_FEATURES)


def _normalize_or_report(raw: str, item: Any, report: SkipReport, empty_detail: str) -> str | None:
    """`normalize_latex(raw)`, or None after recording why `item` is skipped (unparsable, or empty once normalised)."""
    try:
        latex = normalize_latex(raw)
    except LatexParseError as e:
        report.add(item, f"bad latex: {e}")
        return None
    if not latex:
        report.add(item, f"empty caption: {empty_detail}")
        return None
    return latex


def _assemble(
    labels: dict[str, str],
    find_image: Callable[[str], Path | None],
    images: Iterable[Path],
    report: SkipReport,
    *,
    normalize: bool,
    verify_images: bool,
    num_threads: int,
    progress: bool,
    desc: str,
    make_id: Callable[[str], str] = str,
) -> datasets.Dataset:
    """Pair labels with image files; unmatched/unreadable pairs go to the report, everything else becomes a row."""
    pairs: list[tuple[str, str, Path]] = []
    used: set[Path] = set()
    for name, latex in labels.items():
        path = find_image(name)
        if path is None:
            report.add(name, "caption without image")
            continue
        used.add(path)
        if normalize:
            latex = _normalize_or_report(latex, name, report, "nothing left after normalisation")
            if latex is None:
                continue
        pairs.append((name, latex, path))
    for path in sorted(set(images) - used):
        report.add(path, "image without caption")

    def probe(pair):
        try:
            return probe_image(pair[2], verify=verify_images)
        except ImageFileError as e:
            return e

    # Decoding is mostly C code that releases the GIL, so threads help without pickling anything.
    with ThreadPoolExecutor(max(1, num_threads)) as pool:
        sizes = _progress(pool.map(probe, pairs), progress, total=len(pairs), desc=desc, unit="img")
        rows = _empty_rows()
        for (name, latex, path), size in zip(pairs, sizes):
            if isinstance(size, ImageFileError):
                report.add(path, size.reason)
                continue
            rows["image"].append(str(path))  # a path: save_to_disk embeds the bytes, a plain build stays light
            rows["latex"].append(latex)
            rows["id"].append(make_id(name))
            rows["height"].append(size[0])
            rows["width"].append(size[1])
    return _to_dataset(rows)


# ---------------------------------------------------------------------------------------------------------------
# Caption-file layouts (CoMER / BTTR / WAP) and HME100K
# ---------------------------------------------------------------------------------------------------------------


def build_caption_dataset(
    caption_file: str | Path,
    image_dir: str | Path | None = None,
    *,
    normalize: bool = False,
    verify_images: bool = True,
    num_threads: int = 2,
    progress: bool = True,
) -> BuildResult:
    """
    A caption file plus its images -> Dataset. Images live in `image_dir`, by default `img/` beside the caption
    file when it exists (CoMER) or the caption file's own folder (BTTR). A caption `NAME` matches `NAME.<ext>` or,
    failing that, WAP's `NAME_0.<ext>`. Labels are kept as written (whitespace normalised) unless `normalize=True`
    runs them through `normalize_latex` (for raw LaTeX; it would rewrite e.g. HME100K's non-CROHME commands).
    """
    caption_file = Path(caption_file)
    if image_dir is None:
        image_dir = caption_file.parent / "img" if (caption_file.parent / "img").is_dir() else caption_file.parent
    report = SkipReport(name=f"skipped from {caption_file}")
    labels = read_caption_file(caption_file, report)
    images = index_images(image_dir, report)

    def find_image(name: str) -> Path | None:
        return images.get(name) or images.get(f"{name}_0")

    dataset = _assemble(
        labels, find_image, images.values(), report, normalize=normalize, verify_images=verify_images,
        num_threads=num_threads, progress=progress, desc=f"checking {caption_file.parent.name or 'images'}",
    )
    return BuildResult(dataset, report)


def _build_splits(builds: dict[str, Callable[[], BuildResult]], name: str) -> BuildResult:
    report = SkipReport(name=name)
    splits = {}
    for split, build in builds.items():
        ds, rep = build()
        splits[split] = ds
        report.extend(rep)
    return BuildResult(datasets.DatasetDict(splits), report)


def build_caption_splits(root: str | Path, **kwargs) -> BuildResult:
    """A folder of split folders each holding a caption.txt (CoMER's `data/2014`, `data/2016`, ...) -> DatasetDict."""
    root = Path(root)
    split_dirs = sorted(d for d in root.iterdir() if (d / "caption.txt").is_file())
    if not split_dirs:
        raise FileNotFoundError(f"no <split>/caption.txt under {root}")
    return _build_splits(
        {d.name: (lambda d=d: build_caption_dataset(d / "caption.txt", **kwargs)) for d in split_dirs},
        name=f"skipped from {root}",
    )


HME100K_SPLITS = ("train", "test")


def build_hme100k_dataset(root: str | Path, splits: Iterable[str] = HME100K_SPLITS, **kwargs) -> BuildResult:
    """HME100K (`<split>/<split>_labels.txt` + `<split>/<split>_images/*.jpg`) -> DatasetDict of the splits present."""
    root = Path(root)
    present = [s for s in splits if (root / s / f"{s}_labels.txt").is_file()]
    if not present:
        raise FileNotFoundError(f"no HME100K label files (<split>/<split>_labels.txt) under {root}")
    return _build_splits(
        {
            s: (lambda s=s: build_caption_dataset(root / s / f"{s}_labels.txt", root / s / f"{s}_images", **kwargs))
            for s in present
        },
        name=f"skipped from {root}",
    )


# ---------------------------------------------------------------------------------------------------------------
# ImageFolder with metadata (the format users bring)
# ---------------------------------------------------------------------------------------------------------------

METADATA_FILES = ("metadata.jsonl", "metadata.csv")


def read_metadata_file(path: str | Path, report: SkipReport | None = None) -> dict[str, str]:
    """Read `file_name`/`latex` records from metadata.jsonl or .csv into {file_name: latex}; bad records reported."""
    path = Path(path)
    report = report if report is not None else SkipReport()
    labels: dict[str, str] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        if path.suffix == ".csv":
            records = ((i + 2, row) for i, row in enumerate(csv.DictReader(f)))  # line 1 is the header
        else:
            records = ((i + 1, line) for i, line in enumerate(f))
        for lineno, record in records:
            where = f"{path}:{lineno}"
            if isinstance(record, str):
                if not record.strip():
                    report.add(where, "empty line")
                    continue
                try:
                    record = json.loads(record)
                except json.JSONDecodeError as e:
                    report.add(where, f"bad metadata line: {e}")
                    continue
            name, latex = record.get("file_name"), record.get("latex")
            if not name:
                report.add(where, "bad metadata line: no file_name")
            elif latex is None or not str(latex).strip():
                report.add(where, f"empty caption: {name}")
            elif name in labels:
                report.add(where, f"duplicate name: {name} (first kept)")
            else:
                labels[str(name)] = str(latex)
    return labels


def build_imagefolder_dataset(
    data_dir: str | Path, *, normalize: bool = True, verify_images: bool = True, num_threads: int = 2,
    progress: bool = True,
) -> BuildResult:
    """
    An image folder with `metadata.jsonl` (or .csv) rows `{"file_name": ..., "latex": ...}` -> Dataset, or a
    DatasetDict when the metadata sits in split subfolders (`train/metadata.jsonl`, ...), as in datasets' ImageFolder.

    `latex` is raw LaTeX and is normalised to canonical tokens by default. datasets' own `imagefolder` loader is
    not used because it silently drops images without metadata and keeps rows whose file is missing (they fail only
    at decode time); here both are counted in the report. `id` is the file name without extension.
    """
    data_dir = Path(data_dir)
    meta = next((data_dir / m for m in METADATA_FILES if (data_dir / m).is_file()), None)
    if meta is None:
        split_dirs = sorted(
            d for d in data_dir.iterdir() if d.is_dir() and any((d / m).is_file() for m in METADATA_FILES)
        )
        if not split_dirs:
            raise FileNotFoundError(f"no metadata.jsonl / metadata.csv in {data_dir} or its subfolders")
        kwargs = dict(normalize=normalize, verify_images=verify_images, num_threads=num_threads, progress=progress)
        return _build_splits(
            {d.name: (lambda d=d: build_imagefolder_dataset(d, **kwargs)) for d in split_dirs},
            name=f"skipped from {data_dir}",
        )

    report = SkipReport(name=f"skipped from {data_dir}")
    labels = read_metadata_file(meta, report)
    # file_name is a path relative to the metadata file; images may sit in subfolders.
    images = {p.relative_to(data_dir).as_posix(): p for p in data_dir.rglob("*")
              if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()}
    ds = _assemble(
        labels, lambda name: images.get(Path(name).as_posix()), images.values(), report, normalize=normalize,
        verify_images=verify_images, num_threads=num_threads, progress=progress, desc=f"checking {data_dir.name}",
        make_id=lambda name: Path(name).with_suffix("").as_posix(),  # the key keeps its extension to find the file
    )
    return BuildResult(ds, report)


# ---------------------------------------------------------------------------------------------------------------
# InkML folders (rendered) and the CROHME root
# ---------------------------------------------------------------------------------------------------------------


def _render_file(job: tuple[str, dict[str, Any]]) -> tuple[str, Any]:
    """Worker: read + render one InkML file -> (path, (png bytes, h, w, truth)) or (path, reason)."""
    path, render_kwargs = job
    try:
        ink = read_inkml(path, require_truth=False)  # a canonical caption can stand in for a missing truth
    except InkMLError as e:
        return path, e.reason
    try:
        image = render_strokes(ink.traces, **render_kwargs)
    except ValueError as e:  # degenerate ink (all points coincide, ...)
        return path, f"unrenderable ink: {e}"
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # fast; PNG size matters little next to render time
    return path, (buf.getvalue(), image.height, image.width, ink.truth)


def build_inkml_dataset(
    folder: str | Path,
    caption_file: str | Path | None = None,
    *,
    recursive: bool = True,
    num_proc: int = 1,
    progress: bool = True,
    render_kwargs: dict[str, Any] | None = None,
) -> BuildResult:
    """
    Render every InkML file under `folder` with `render_strokes` -> Dataset. The label is the caption file's entry
    for the file stem when there is one (canonical captions win), else `normalize_latex(truth)`. Unreadable files,
    files without any label, captions without a file and repeated file stems are counted in the report.
    `num_proc` > 1 renders in a process pool.
    """
    folder = Path(folder)
    report = SkipReport(name=f"skipped from {folder}")
    labels = read_caption_file(caption_file, report) if caption_file else {}
    files: list[Path] = []
    seen: dict[str, Path] = {}
    for f in list_inkml_files(folder, recursive=recursive):
        if f.stem in seen:
            report.add(f, f"duplicate name: {f.stem} (first: {seen[f.stem]}, kept)")
        else:
            seen[f.stem] = f
            files.append(f)
    for name in labels.keys() - seen.keys():
        report.add(name, "caption without image")

    jobs = [(str(f), dict(render_kwargs or {})) for f in files]
    rows = _empty_rows()
    pool = multiprocessing.get_context("fork").Pool(num_proc) if num_proc > 1 else None
    try:
        results = pool.imap(_render_file, jobs, chunksize=16) if pool else map(_render_file, jobs)
        for path, result in _progress(results, progress, total=len(jobs), desc=f"rendering {folder.name}",
                                      unit="file"):
            name = Path(path).stem
            if isinstance(result, str):
                report.add(path, result)
                continue
            png, height, width, truth = result
            latex = labels.get(name)
            if latex is None:
                if not truth:
                    report.add(path, "no label: no caption and no truth annotation")
                    continue
                latex = _normalize_or_report(truth, path, report, "nothing left of the truth after normalisation")
                if latex is None:
                    continue
            rows["image"].append({"bytes": png, "path": f"{name}.png"})
            rows["latex"].append(latex)
            rows["id"].append(name)
            rows["height"].append(height)
            rows["width"].append(width)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return BuildResult(_to_dataset(rows), report)


def _crohme_test_dirs(crohme_dir: Path) -> list[Path]:
    return sorted(d for d in crohme_dir.iterdir() if (d / "caption.txt").is_file())


def build_crohme(
    crohme_dir: str | Path, *, num_proc: int = 1, progress: bool = True, render_kwargs: dict[str, Any] | None = None
) -> BuildResult:
    """CROHME root -> DatasetDict: "train" rendered from train_inkml/ with train_caption.txt, "test_<year>" from
    each `<year>/caption.txt` + `<year>/img/` (the canonical offline images)."""
    crohme_dir = Path(crohme_dir)
    builds: dict[str, Callable[[], BuildResult]] = {
        "train": lambda: build_inkml_dataset(
            crohme_dir / "train_inkml", crohme_dir / "train_caption.txt", num_proc=num_proc, progress=progress,
            render_kwargs=render_kwargs,
        )
    }
    for d in _crohme_test_dirs(crohme_dir):
        builds[f"test_{d.name}"] = lambda d=d: build_caption_dataset(d / "caption.txt", progress=progress)
    return _build_splits(builds, name=f"skipped from {crohme_dir}")


def read_skip_report(path: str | Path, name: str = "skipped") -> SkipReport:
    """Read a SkipReport written as TSV by `SkipReport.write` (an absent file is an empty report)."""
    report = SkipReport(name=name)
    path = Path(path)
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            item, _, reason = line.partition("\t")
            report.add(item, reason)
    return report


# Builder arguments that change how fast a build runs, not what it builds: they do not invalidate a prepared copy.
_SPEED_ONLY_KWARGS = {"num_proc", "num_threads", "progress"}


def prepare_dataset(
    source: str | Path, out_dir: str | Path, *, layout: str | None = None, force: bool = False, **build_kwargs
) -> BuildResult:
    """
    Build any layout (see [`load_hmer_dataset`]) once and cache it with `save_to_disk` in `out_dir`, with the skip
    report (`skipped.tsv`) and `prepare_info.json` beside it; later calls load it from disk (memory-mapped, seconds).
    `force=True` rebuilds, and so does a cache made from another source, layout or build settings. The saved copy
    embeds the image bytes, so it no longer needs the source folder.
    """
    source, out_dir = Path(source).resolve(), Path(out_dir)
    layout = layout or detect_layout(source)
    if layout == "saved":
        raise ValueError(f"{source} is already a saved dataset; load it with load_hmer_dataset")
    info_path = out_dir / PREPARE_INFO_FILE
    settings = {
        "source": str(source),
        "layout": layout,
        # None means "the builder's default", same as leaving the argument out
        "build_kwargs": {
            k: v for k, v in sorted(build_kwargs.items()) if k not in _SPEED_ONLY_KWARGS and v is not None
        },
    }
    settings = json.loads(json.dumps(settings, default=str))  # the form it has after a round trip through the file
    if info_path.is_file() and not force:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if {k: info.get(k) for k in settings} == settings:
            logger.info("loading prepared %s data from %s", layout, out_dir)
            return load_hmer_dataset(out_dir, layout="saved")
        logger.warning("prepared data in %s was made with other settings (%s); rebuilding", out_dir, info_path)
    if out_dir.exists() and any(out_dir.iterdir()) and not info_path.is_file():
        # never delete a folder we did not write
        raise FileExistsError(f"{out_dir} exists, is not empty and holds no {PREPARE_INFO_FILE}; choose another --out")

    start = time.perf_counter()
    dataset, report = load_hmer_dataset(source, layout=layout, **build_kwargs)
    # Write beside the target, then swap, so an interrupted run never leaves a half dataset that a later run loads.
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    dataset.save_to_disk(str(tmp))
    report.write(tmp / SKIP_REPORT_FILE)
    splits = {k: v.num_rows for k, v in dataset.items()} if isinstance(dataset, datasets.DatasetDict) else {
        "all": dataset.num_rows}
    info = {**settings, "splits": splits, "skipped": dict(report.counts()),
            "build_seconds": round(time.perf_counter() - start, 1)}
    (tmp / PREPARE_INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False), encoding="utf-8")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    logger.info("prepared %s in %s: %s; %s", layout, out_dir, splits, report.summary())
    # Reload: the returned dataset is then the memory-mapped copy with embedded images, same as a cached run.
    return BuildResult(datasets.load_from_disk(str(out_dir)), report)


def prepare_crohme(
    crohme_dir: str | Path,
    out_dir: str | Path,
    *,
    force: bool = False,
    num_proc: int = 1,
    progress: bool = True,
    render_kwargs: dict[str, Any] | None = None,
) -> BuildResult:
    """CROHME root -> cached DatasetDict {"train": rendered InkML + canonical captions, "test_<year>": canonical
    images + captions} in `out_dir` (see [`build_crohme`], [`prepare_dataset`])."""
    return prepare_dataset(crohme_dir, out_dir, layout="crohme", force=force, num_proc=num_proc, progress=progress,
                           render_kwargs=render_kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Single entry point
# ---------------------------------------------------------------------------------------------------------------

LAYOUTS = ("saved", "crohme", "hme100k", "imagefolder", "caption", "caption_splits", "inkml")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def detect_layout(path: str | Path) -> str:
    """Name the layout of a dataset folder (one of LAYOUTS); raises ValueError when none fits."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".txt":
            return "caption"
        if path.name in METADATA_FILES:
            return "imagefolder"
        raise ValueError(f"{path} is a file but not a caption file (.txt) or metadata file")
    if not path.is_dir():
        raise FileNotFoundError(f"no such folder: {path}")
    if _is_saved_dataset(path):
        return "saved"
    if (path / "train_inkml").is_dir() and (path / "train_caption.txt").is_file():
        return "crohme"
    if any((path / s / f"{s}_labels.txt").is_file() for s in HME100K_SPLITS):
        return "hme100k"
    subdirs = [d for d in path.iterdir() if d.is_dir()]
    if any((path / m).is_file() for m in METADATA_FILES) or any(
        (d / m).is_file() for d in subdirs for m in METADATA_FILES
    ):
        return "imagefolder"
    if (path / "caption.txt").is_file() and (_has_images(path / "img") or _has_images(path)):
        return "caption"
    if any((d / "caption.txt").is_file() for d in subdirs):
        return "caption_splits"
    if next(path.rglob("*.inkml"), None) is not None:
        return "inkml"
    raise ValueError(
        f"cannot tell the layout of {path}: expected a save_to_disk folder, a CROHME root, an HME100K root, an "
        "image folder with metadata.jsonl, a caption.txt with images (CoMER/BTTR/WAP), split folders with "
        "caption.txt, or InkML files"
    )


def load_hmer_dataset(path: str | Path, layout: str | None = None, **kwargs) -> BuildResult:
    """Load any supported layout (auto-detected unless `layout` is given) -> BuildResult(dataset, report).

    Extra keyword arguments go to the layout's builder (e.g. `num_proc`, `progress`, `normalize`)."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout == "saved":
        info_path = path / PREPARE_INFO_FILE
        source = json.loads(info_path.read_text(encoding="utf-8"))["source"] if info_path.is_file() else path
        report_name = f"skipped from {source}"
        return BuildResult(datasets.load_from_disk(str(path)), read_skip_report(path / SKIP_REPORT_FILE, report_name))
    if layout == "crohme":
        return build_crohme(path, **kwargs)
    if layout == "hme100k":
        return build_hme100k_dataset(path, **kwargs)
    if layout == "imagefolder":
        return build_imagefolder_dataset(path.parent if path.is_file() else path, **kwargs)
    if layout == "caption":
        return build_caption_dataset(path if path.is_file() else path / "caption.txt", **kwargs)
    if layout == "caption_splits":
        return build_caption_splits(path, **kwargs)
    if layout == "inkml":
        caption = path / "caption.txt"
        return build_inkml_dataset(path, caption if caption.is_file() else None, **kwargs)
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


# ---------------------------------------------------------------------------------------------------------------
# Vocabulary helpers
# ---------------------------------------------------------------------------------------------------------------


def iter_captions(data: Any, splits: Iterable[str] | None = None) -> Iterator[str]:
    """Yield the `latex` strings of a Dataset, of (some) splits of a DatasetDict, or of an iterable of strings,
    without decoding images; feed it to `HMERTokenizer.from_captions`."""
    if isinstance(data, datasets.DatasetDict):
        for split in splits if splits is not None else data.keys():
            yield from iter_captions(data[split])
    elif isinstance(data, datasets.Dataset):
        yield from data.select_columns(["latex"])["latex"]
    else:
        yield from data


def caption_symbol_counts(data: Any, splits: Iterable[str] | None = None) -> Counter:
    """Counter of space-separated symbols over the captions (see [`iter_captions`]); its keys are the vocabulary."""
    counts: Counter = Counter()
    for caption in iter_captions(data, splits):
        counts.update(caption.split())
    return counts
