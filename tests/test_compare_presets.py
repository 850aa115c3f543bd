"""scripts/compare_presets.py: the budget's bookkeeping (samples/s from the trainer log) and the table, failures
included (the training runs themselves are the training tests' business)."""

from __future__ import annotations

import argparse
import json

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def compare():
    return load_script("compare_presets")


def test_samples_per_second_weights_each_log_window(compare, tmp_path):
    lines = [
        {"step": 25, "samples_seen": 200, "samples_per_second": 10.0},  # 20 s
        {"step": 25, "epoch": 1, "val_exprate": 0.1},  # validation lines carry no throughput
        {"step": 50, "samples_seen": 400, "samples_per_second": 2.5},  # 80 s
    ]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert compare.train_samples_per_second(tmp_path) == pytest.approx(400 / 100)
    assert compare.train_samples_per_second(tmp_path / "missing") is None


def test_table_rows_and_failures(compare):
    args = argparse.Namespace(max_steps=400, threads=1, num_beams=10, beam_limit=50, continue_from=None)
    rows = [
        {"preset": "comer", "status": "ok", "parameters": 6_400_000, "train_samples_per_second": 4.0, "steps": 400,
         "greedy": 0.0123, "greedy_le1": 0.1, "greedy_le2": 0.2, "greedy_le3": 0.3, "greedy_num_samples": 986,
         "greedy_1_5": 0.05, "greedy_6_10": 0.01, "greedy_ms_per_expression": 50.0, "beam": 0.02,
         "beam_num_samples": 50, "beam_ms_per_expression": 1500.0, "syntax_constraints": True},
        {"preset": "abm", "status": "training failed"},
    ]
    text = compare.table(rows, args)
    assert "400 optimizer steps" in text and "greedy on 986 images, beam 10 on the first 50" in text
    assert "syntax constraints on." in text
    rows.append({**rows[0], "preset": "bttr", "syntax_constraints": False})
    assert "syntax constraints mixed" in compare.table(rows, args)
    comer = next(line for line in text.splitlines() if line.startswith("| comer"))
    assert "| 6.40 M | 1.23 | 10.00 | 20.00 | 30.00 | 5.00 | 1.00 | 2.00 | 4.00 | 50 | 1500 |" in comer
    assert "| abm | training failed |" in text
    header = next(line for line in text.splitlines() if line.startswith("| preset"))
    assert comer.count("|") == header.count("|")
    args.continue_from = "runs/compare_1ep"
    assert "400 optimizer steps each (the same batches), continued from the final weights of runs/compare_1ep" in (
        compare.table(rows, args)
    )


def test_continue_from_needs_the_earlier_model(compare, tmp_path, monkeypatch):
    """A preset without final weights in the --continue-from folder is reported, not trained from scratch."""
    calls = []
    monkeypatch.setattr(compare, "run", lambda cmd, log, env: calls.append(cmd) or False)
    (tmp_path / "prev" / "abm" / "last").mkdir(parents=True)
    (tmp_path / "prev" / "abm" / "last" / "config.json").write_text("{}")
    args = argparse.Namespace(presets=["comer", "abm"], out=str(tmp_path / "out"), threads=1, max_steps=10,
                              config="configs/compare_presets.yaml", set=["train.seed=8"], num_beams=10,
                              beam_limit=5, data="unused", continue_from=str(tmp_path / "prev"))
    results = compare.compare(args)
    assert results[0] == {"preset": "comer", "status": f"no earlier model in {tmp_path / 'prev' / 'comer' / 'last'}"}
    assert results[1]["status"] == "training failed"  # the stubbed run fails: abm was started, from the earlier one
    (cmd,) = calls
    assert f"model.init_from={tmp_path / 'prev' / 'abm' / 'last'}" in cmd and "train.seed=8" in cmd
    assert not any(arg.startswith("model.overrides.") for arg in cmd)  # the earlier model's own encoder settings
