"""Reading online handwriting (InkML, as used by CROHME) into numpy stroke arrays plus the LaTeX truth."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .report import SkipReport

__all__ = ["InkML", "InkMLError", "read_inkml", "iter_inkml_dir", "read_inkml_dir", "list_inkml_files"]


class InkMLError(ValueError):
    """An InkML file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class InkML:
    """One handwritten expression: its strokes, its raw LaTeX truth and the metadata CROHME files carry."""

    path: str
    traces: list[np.ndarray]  # one (N, 2) float64 array of x, y per stroke, in file order
    truth: str | None
    ui: str | None = None
    writer: str | None = None
    channels: tuple[str, ...] = ("X", "Y")  # all channels of the file, X and Y first
    extra: list[np.ndarray] = field(default_factory=list)  # per stroke (N, C-2): the other channels (T, F, ...)
    trace_ids: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)  # every top-level <annotation type=..>
    # symbol segmentation from the traceGroups: (symbol truth, indices into `traces`)
    symbols: list[tuple[str, list[int]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The file stem, which is the key of the caption files."""
        return Path(self.path).stem

    @property
    def num_points(self) -> int:
        """Total number of points over all strokes."""
        return int(sum(len(t) for t in self.traces))

    def bbox(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of all points."""
        pts = np.concatenate(self.traces, axis=0)
        return (*pts.min(axis=0).tolist(), *pts.max(axis=0).tolist())


def _local(tag: str) -> str:
    # ElementTree spells namespaced tags "{uri}name"; CROHME files use the InkML namespace, others none.
    return tag.rsplit("}", 1)[-1]


_VALUE = re.compile(r"""([!'"]?)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)""")


def _parse_points_general(text: str) -> list[list[float]]:
    """Full InkML trace grammar: per-value `!` (explicit), `'` (first difference), `"` (second difference) prefixes.

    The prefix of a channel stays in force until another one appears (InkML 1.0, section 3.2.1), so the state is
    kept per channel across points.
    """
    rows: list[list[float]] = []
    mode: dict[int, str] = {}
    prev: dict[int, float] = {}
    vel: dict[int, float] = {}
    for point in text.split(","):
        values = _VALUE.findall(point)
        if not values:
            continue
        row = []
        for ch, (prefix, number) in enumerate(values):
            if prefix:
                mode[ch] = prefix
            m, v = mode.get(ch, "!"), float(number)
            if m == "'":
                vel[ch] = v
                v = prev.get(ch, 0.0) + v
            elif m == '"':
                vel[ch] = vel.get(ch, 0.0) + v
                v = prev.get(ch, 0.0) + vel[ch]
            else:
                vel[ch] = v - prev.get(ch, v)
            prev[ch] = v
            row.append(v)
        rows.append(row)
    return rows


def _parse_trace(text: str) -> np.ndarray:
    """Points of one <trace> as a (N, C) float array; raises ValueError on ragged or unparsable text."""
    text = text.strip()
    if not text:
        return np.zeros((0, 2))
    points = text.split(",")
    ncols = len(points[0].split())
    try:
        # fast path, which every CROHME file takes: plain "x y[ t]" numbers
        flat = np.array(text.replace(",", " ").split(), dtype=np.float64)
    except ValueError:
        flat = None
    if flat is not None and ncols >= 2 and flat.size == ncols * len(points):
        return flat.reshape(len(points), ncols)
    rows = _parse_points_general(text)
    widths = {len(r) for r in rows}
    if len(widths) != 1 or min(widths) < 2:
        raise ValueError(f"ragged or unparsable points (values per point: {sorted(widths)})")
    return np.asarray(rows, dtype=np.float64)


def read_inkml(path: str | Path, require_truth: bool = True) -> InkML:
    """Read one InkML file into strokes + truth; raises InkMLError naming the file and the reason."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InkMLError(path, f"unreadable: {e.strerror or e}") from e
    if not data.strip():
        raise InkMLError(path, "empty file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as e:
        raise InkMLError(path, f"broken XML: {e}") from e

    channels: list[str] = []
    annotations: dict[str, str] = {}
    traces: list[np.ndarray] = []
    trace_ids: list[str] = []
    for el in root:  # top level only: traceGroups carry per-symbol "truth" annotations too
        tag = _local(el.tag)
        if tag == "annotation" and el.get("type"):
            annotations.setdefault(el.get("type"), (el.text or "").strip())
        elif tag == "traceFormat" and not channels:
            channels = [c.get("name", f"C{i}") for i, c in enumerate(el.iter()) if _local(c.tag) == "channel"]
    for el in root.iter():
        if _local(el.tag) != "trace":
            continue
        tid = el.get("id") or el.get("{http://www.w3.org/XML/1998/namespace}id") or str(len(trace_ids))
        try:
            pts = _parse_trace(el.text or "")
        except ValueError as e:
            raise InkMLError(path, f"bad trace {tid}: {e}") from e
        if len(pts):  # an empty <trace/> is no stroke at all
            traces.append(pts)
            trace_ids.append(tid)
    if not traces:
        raise InkMLError(path, "no traces")

    truth = annotations.get("truth") or None
    if truth is None and require_truth:
        raise InkMLError(path, "no truth annotation")

    ncols = traces[0].shape[1]
    if len(channels) != ncols:
        # files without a <traceFormat> (most of CROHME) are "X Y" or "X Y T"
        channels = ["X", "Y", "T"][:ncols] + [f"C{i}" for i in range(3, ncols)]
    xy = [t[:, :2].copy() for t in traces]
    extra = [t[:, 2:].copy() for t in traces] if any(t.shape[1] > 2 for t in traces) else []

    index = {tid: i for i, tid in enumerate(trace_ids)}
    symbols = []
    for group in root.iter():
        if _local(group.tag) != "traceGroup":
            continue
        label = next((a.text for a in group if _local(a.tag) == "annotation" and a.get("type") == "truth"), None)
        refs = [index[v.get("traceDataRef")] for v in group if _local(v.tag) == "traceView"
                and v.get("traceDataRef") in index]
        if label is not None and refs:
            symbols.append((label.strip(), refs))

    return InkML(
        path=str(path), traces=xy, truth=truth, ui=annotations.get("UI"), writer=annotations.get("writer"),
        channels=tuple(channels), extra=extra, trace_ids=trace_ids, annotations=annotations, symbols=symbols,
    )


def list_inkml_files(folder: str | Path, *, recursive: bool = True) -> list[Path]:
    """All *.inkml files under a folder, sorted, so runs are reproducible."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"not a folder: {folder}")
    return sorted(folder.rglob("*.inkml") if recursive else folder.glob("*.inkml"))


def iter_inkml_dir(
    folder: str | Path,
    *,
    recursive: bool = True,
    require_truth: bool = True,
    report: SkipReport | None = None,
    progress: bool = False,
) -> Iterator[InkML]:
    """Lazily read every InkML file under a folder; bad files are recorded in `report` and skipped."""
    files = list_inkml_files(folder, recursive=recursive)
    if progress:
        from tqdm.auto import tqdm

        files = tqdm(files, desc=f"reading {Path(folder).name}", unit="file")
    for f in files:
        try:
            yield read_inkml(f, require_truth=require_truth)
        except InkMLError as e:
            if report is None:
                raise
            report.add(f, e.reason)


def read_inkml_dir(
    folder: str | Path, *, recursive: bool = True, require_truth: bool = True, progress: bool = True
) -> tuple[list[InkML], SkipReport]:
    """Read every InkML file under a folder; returns the good ones and a SkipReport of the bad ones."""
    report = SkipReport(name="skipped InkML files")
    items = list(iter_inkml_dir(folder, recursive=recursive, require_truth=require_truth, report=report,
                                progress=progress))
    return items, report
