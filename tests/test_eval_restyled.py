"""scripts/eval_restyled.py: the canvas gap bucketed by restyle brush and scale (the restyling and the normalisation
themselves are tested in test_restyle.py and test_image_processing*.py)."""

from __future__ import annotations

import math

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def script():
    return load_script("eval_restyled")


def _records(correct: list[bool]) -> list[dict]:
    return [{"id": f"e{i}", "edit_distance": 0 if ok else 2} for i, ok in enumerate(correct)]


def test_gap_buckets_compare_the_same_images(script):
    params = [
        {"brush": 6.0, "scale": 0.5},  # lowest edges belong to the first buckets
        {"brush": 7.4, "scale": 0.9},
        {"brush": 7.5, "scale": 1.0},  # an inner edge counts in the bucket above
        {"brush": 12.0, "scale": 3.0},  # the top edge is inclusive
    ]
    canonical = _records([True, True, False, True])
    restyled = _records([True, False, False, False])
    gaps = script.gap_by_restyle(canonical, restyled, params)

    brush = {(b["low"], b["high"]): b for b in gaps["brush"]}
    assert [b["images"] for b in gaps["brush"]] == [2, 1, 0, 1]
    assert brush[(6.0, 7.5)]["canonical"] == 1.0 and brush[(6.0, 7.5)]["restyled"] == 0.5
    assert brush[(6.0, 7.5)]["gap"] == pytest.approx(0.5)
    assert brush[(7.5, 9.0)]["canonical"] == 0.0 and brush[(7.5, 9.0)]["gap"] == 0.0
    assert math.isnan(brush[(9.0, 10.5)]["canonical"])  # empty bucket: no rate, not 0
    assert brush[(10.5, 12.0)]["gap"] == pytest.approx(1.0)

    assert [b["images"] for b in gaps["scale"]] == [1, 1, 1, 0, 1]
    assert sum(b["images"] for b in gaps["brush"]) == sum(b["images"] for b in gaps["scale"]) == len(params)

    table = script.format_gap(gaps, "auto", "auto")
    assert "| 6-7.5 px | 2 | 100.00 | 50.00 | 50.00 |" in table
    assert "| 2-3x | 1 | 100.00 | 0.00 | 100.00 |" in table


def test_gap_refuses_records_out_of_step(script):
    params = [{"brush": 8.0, "scale": 1.0}] * 2
    canonical = _records([True, False])
    restyled = list(reversed(_records([True, False])))
    with pytest.raises(ValueError, match="out of step"):
        script.gap_by_restyle(canonical, restyled, params)
    with pytest.raises(ValueError, match="one parameter set per image"):
        script.gap_by_restyle(canonical, canonical, params[:1])
