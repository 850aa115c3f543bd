"""InkML reading: good files parse, each failure mode gives a clear error naming the file, batches skip and report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hmer_hf.data.inkml import InkMLError, iter_inkml_dir, read_inkml, read_inkml_dir
from hmer_hf.data.report import SkipReport

GOOD = """<ink xmlns="http://www.w3.org/2003/InkML">
<traceFormat><channel name="X" type="decimal"/><channel name="Y" type="decimal"/><channel name="T" type="integer"/>
</traceFormat>
<annotation type="UI">UI_1</annotation>
<annotation type="writer">w1</annotation>
<annotation type="truth">$x^2$</annotation>
<trace id="0">
1 2 100, 3 4 110, 5.5 -6 120
</trace>
<trace id="1">10 20 130</trace>
<traceGroup xml:id="5">
  <annotation type="truth">Segmentation</annotation>
  <traceGroup xml:id="6"><annotation type="truth">x</annotation><traceView traceDataRef="0"/></traceGroup>
  <traceGroup xml:id="7"><annotation type="truth">2</annotation><traceView traceDataRef="1"/></traceGroup>
</traceGroup>
</ink>
"""

# no namespace, no traceFormat, two columns: the other common CROHME layout
GOOD_PLAIN = """<ink><annotation type="truth">a</annotation><trace>0 0, 1 1</trace></ink>"""

NO_TRACES = """<ink xmlns="http://www.w3.org/2003/InkML"><annotation type="truth">$a$</annotation></ink>"""
NO_TRUTH = """<ink xmlns="http://www.w3.org/2003/InkML"><trace id="0">0 0, 1 1</trace></ink>"""
# MfrDB0104's failure: a raw non-UTF-8 byte inside the MathML (here 0xB7, a Latin-1 middle dot)
BROKEN = GOOD.replace("<annotation type=\"writer\">w1</annotation>", "<mo>\xb7</mo>").encode("latin-1")


def _write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_read_good_file(tmp_path):
    ink = read_inkml(_write(tmp_path, "good.inkml", GOOD))
    assert ink.truth == "$x^2$"
    assert ink.ui == "UI_1" and ink.writer == "w1" and ink.name == "good"
    assert ink.channels == ("X", "Y", "T")
    assert len(ink.traces) == 2
    np.testing.assert_allclose(ink.traces[0], [[1, 2], [3, 4], [5.5, -6]])
    assert ink.traces[0].shape == (3, 2) and ink.extra[0].shape == (3, 1)
    np.testing.assert_allclose(ink.extra[1], [[130]])
    assert ink.symbols == [("x", [0]), ("2", [1])]
    assert ink.bbox() == (1.0, -6.0, 10.0, 20.0)
    assert ink.num_points == 4


def test_read_plain_file(tmp_path):
    ink = read_inkml(_write(tmp_path, "plain.inkml", GOOD_PLAIN))
    assert ink.truth == "a" and ink.channels == ("X", "Y") and ink.extra == []
    np.testing.assert_allclose(ink.traces[0], [[0, 0], [1, 1]])


def test_difference_notation(tmp_path):
    # InkML's ' (first difference) and " (second difference) prefixes, which the fast path cannot read
    text = """<ink><annotation type="truth">a</annotation><trace>10 0, '1 '2, "1 "0, 1 0</trace></ink>"""
    ink = read_inkml(_write(tmp_path, "vel.inkml", text))
    # x: 10, +1 -> 11, vel 1+1 -> 13, vel 2+1 -> 16;  y: 0, +2 -> 2, vel 2+0 -> 4, vel 2+0 -> 6
    np.testing.assert_allclose(ink.traces[0], [[10, 0], [11, 2], [13, 4], [16, 6]])


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"  \n", "empty file"),
        (BROKEN, "broken XML"),
        (NO_TRACES, "no traces"),
        (NO_TRUTH, "no truth annotation"),
        ("""<ink><annotation type="truth">a</annotation><trace>1 2, 3</trace></ink>""", "bad trace"),
    ],
)
def test_bad_file_error_names_file_and_reason(tmp_path, content, reason):
    path = _write(tmp_path, "bad_one.inkml", content)
    with pytest.raises(InkMLError) as err:
        read_inkml(path)
    assert str(path) in str(err.value)
    assert err.value.reason.startswith(reason)
    assert isinstance(err.value, ValueError)


def test_missing_truth_allowed_when_not_required(tmp_path):
    ink = read_inkml(_write(tmp_path, "nt.inkml", NO_TRUTH), require_truth=False)
    assert ink.truth is None and len(ink.traces) == 1


def test_batch_keeps_good_and_reports_each_bad(tmp_path):
    _write(tmp_path, "a/good1.inkml", GOOD)
    _write(tmp_path, "b/good2.inkml", GOOD_PLAIN)
    _write(tmp_path, "a/empty.inkml", b"")
    _write(tmp_path, "a/broken.inkml", BROKEN)
    _write(tmp_path, "b/notraces.inkml", NO_TRACES)
    _write(tmp_path, "b/notruth.inkml", NO_TRUTH)
    _write(tmp_path, "b/readme.txt", "not an inkml file")
    items, report = read_inkml_dir(tmp_path, progress=False)
    assert sorted(i.name for i in items) == ["good1", "good2"]
    assert isinstance(report, SkipReport)
    skipped = {Path(item).name: reason.split(":")[0] for item, reason in report.items}
    assert skipped == {
        "empty.inkml": "empty file",
        "broken.inkml": "broken XML",
        "notraces.inkml": "no traces",
        "notruth.inkml": "no truth annotation",
    }
    assert "4" in report.summary()

    # non-recursive sees nothing at the top level; the lazy variant without a report raises on the first bad file
    assert read_inkml_dir(tmp_path, recursive=False, progress=False)[0] == []
    with pytest.raises(InkMLError):
        list(iter_inkml_dir(tmp_path))


@pytest.mark.shared_data
def test_real_train_set_reports_exactly_the_two_broken_files(crohme_dir):
    items, report = read_inkml_dir(crohme_dir / "train_inkml", progress=False)
    assert sorted(Path(item).stem for item, _ in report.items) == ["MfrDB0104", "MfrDB3088"]
    assert dict(report.counts()) == {"broken XML": 1, "empty file": 1}
    assert len(items) == 8834
    assert all(ink.truth and ink.traces and ink.traces[0].shape[1] == 2 for ink in items)
