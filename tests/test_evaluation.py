"""The ExpRate metric (an `evaluate` module in metrics/exprate) and `hmer-hf evaluate` on a tiny saved model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import evaluate
import pytest
from PIL import Image

from hmer_hf.evaluation import EXPRATE_METRIC_DIR, length_bucket, load_exprate, select_split
from hmer_hf.tokenization_hmer import split_latex

from .conftest import REPO_ROOT, draw_formula_image


@pytest.fixture(scope="module")
def exprate():
    return evaluate.load(str(REPO_ROOT / "metrics" / "exprate"))


def test_metric_loads_from_the_local_path_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = evaluate.load(str(EXPRATE_METRIC_DIR))
    assert metric.name == "exprate"
    assert load_exprate().compute(predictions=["x"], references=["x"])["exprate"] == 1.0


@pytest.mark.parametrize(
    "prediction, reference, distance",
    [
        ("x ^ { 2 }", "x ^ { 2 }", 0),  # exact
        ("x^{2}", "x ^ { 2 }", 0),  # compact and spaced are the same tokens
        ("\\frac{a}{b}", "\\frac { a } { b }", 0),
        ("x ^ { 3 }", "x ^ { 2 }", 1),  # substitution
        ("x ^ { 2 } +", "x ^ { 2 }", 1),  # insertion
        ("x ^ { 2", "x ^ { 2 }", 1),  # deletion
        ("x _ { 3 }", "x ^ { 2 }", 2),
        ("y _ { 3 ]", "x ^ { 2 }", 4),
        ("", "a + b", 3),  # empty prediction: every reference token is missing
    ],
)
def test_token_edit_distance(exprate, prediction, reference, distance):
    result = exprate.compute(predictions=[prediction], references=[reference], per_sample=True)
    assert result["edit_distances"] == [distance]
    assert result["exprate"] == (distance == 0)
    assert result["exprate_le1"] == (distance <= 1)
    assert result["exprate_le2"] == (distance <= 2)
    assert result["exprate_le3"] == (distance <= 3)


def test_control_word_is_not_split(exprate):
    # `\alphax` is the control word "alphax" (one token); `\alpha x` is two tokens.
    result = exprate.compute(predictions=["\\alpha x"], references=["\\alphax"], per_sample=True)
    assert result["edit_distances"] == [2] and result["reference_lengths"] == [1]


def test_rates_over_several_expressions(exprate):
    predictions = ["x", "a + c", "a - b - c", "", "1 2 3"]
    references = ["x", "a + b", "a + b", "a", "1 2 3 4 5 6 7"]
    # distances: 0, 1, 3, 1, 4
    result = exprate.compute(predictions=predictions, references=references, per_sample=True)
    assert result["edit_distances"] == [0, 1, 3, 1, 4]
    assert result["reference_lengths"] == [1, 3, 3, 1, 7]
    assert result["exprate"] == pytest.approx(1 / 5)
    assert result["exprate_le1"] == pytest.approx(3 / 5)
    assert result["exprate_le2"] == pytest.approx(3 / 5)
    assert result["exprate_le3"] == pytest.approx(4 / 5)
    assert result["num_samples"] == 5


def test_pretokenised_inputs(exprate):
    result = exprate.compute(predictions=[["x", "^", "{", "2", "}"], []], references=[["x", "^", "{", "2", "}"], ["a"]])
    assert result["exprate"] == 0.5 and result["exprate_le1"] == 1.0


def test_metric_tokenisation_matches_the_tokenizer(exprate):
    """The standalone metric carries its own copy of split_latex's rule; they must agree."""
    from importlib import util

    spec = util.spec_from_file_location("exprate_module", EXPRATE_METRIC_DIR / "exprate.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    samples = ["x^{2}", "\\frac{\\alpha}{\\beta}", "\\sqrt{x}+\\{a\\}", "a'", "\\lim\\limits_{x\\rightarrow0}",
               "\\sin\\theta", "x_{i}^{2}-\\cdots"]
    for text in samples:
        assert module.tokenize(text) == split_latex(text)
    spaced = "\\frac { 1 } { 2 } \\times \\{ x \\}"
    assert module.tokenize(spaced) == spaced.split()


def test_length_buckets_and_split_selection():
    assert [length_bucket(n) for n in (1, 5, 6, 10, 11, 20, 21, 40, 41, 300)] == [
        "1-5", "1-5", "6-10", "6-10", "11-20", "11-20", "21-40", "21-40", "41+", "41+"]
    import datasets

    dd = datasets.DatasetDict({"a": datasets.Dataset.from_dict({"x": [1]}), "b": datasets.Dataset.from_dict({"x": [2]})})
    assert select_split(dd, "b")["x"] == [2]
    with pytest.raises(ValueError, match="several splits"):
        select_split(dd)
    assert select_split(dd, prefer="a")["x"] == [1]  # training takes "train" when the data has several splits
    with pytest.raises(ValueError, match="no split"):
        select_split(dd, "c")


CAPTIONS = ["x ^ { 2 }", "a + b", "\\frac { 1 } { 2 }", "y", "\\sqrt { x } + 1", "a _ { 1 } + a _ { 2 } + a _ { 3 }"]


def make_comer_folder(root, count: int = len(CAPTIONS)):
    """A CoMER-layout folder: caption.txt + img/NAME.bmp (white ink on black, as in CROHME)."""
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(count):
        name = f"expr_{i}"
        Image.fromarray(draw_formula_image(200 + i, 50 + 5 * i, 120 + 20 * i)).save(root / "img" / f"{name}.bmp")
        lines.append(f"{name}\t{CAPTIONS[i % len(CAPTIONS)]}")
    (root / "caption.txt").write_text("\n".join(lines) + "\n")
    return root


def test_cli_evaluate_writes_predictions_and_metrics(tiny_model_dir, tmp_path):
    data = make_comer_folder(tmp_path / "data")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "hmer_hf.cli", "evaluate", "--model", str(tiny_model_dir), "--data", str(data),
           "--batch-size", "4", "--out", str(out), "--max-new-tokens", "6", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # faster than two contended threads on a busy shared CPU
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "ExpRate" in proc.stdout and "expressions/s" in proc.stdout and "1-5" in proc.stdout

    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == len(CAPTIONS)
    assert [r["id"] for r in records] == [f"expr_{i}" for i in range(len(CAPTIONS))]  # dataset order
    assert [r["reference"] for r in records] == CAPTIONS
    for r in records:
        assert set(r) >= {"id", "reference", "prediction", "score"}
        assert isinstance(r["prediction"], str) and isinstance(r["score"], float)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == len(CAPTIONS)
    assert sum(b["count"] for b in metrics["length_buckets"].values()) == len(CAPTIONS)
    assert metrics["length_buckets"]["1-5"]["count"] == 3 and metrics["length_buckets"]["11-20"]["count"] == 1
    # The file's numbers agree with the per-record edit distances.
    distances = [r["edit_distance"] for r in records]
    assert metrics["exprate"] == pytest.approx(sum(d == 0 for d in distances) / len(distances))
    assert metrics["exprate_le3"] == pytest.approx(sum(d <= 3 for d in distances) / len(distances))
    assert metrics["expressions_per_second"] > 0
    assert metrics["syntax_constraints"] is True and "syntax constraints on" in proc.stdout  # the model's default


def test_cli_evaluate_limit_and_beams(tiny_model_dir, tmp_path, one_thread):
    data = make_comer_folder(tmp_path / "data")
    out = tmp_path / "eval"
    from hmer_hf.cli import main

    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--limit", "4",
                 "--num-beams", "2", "--out", str(out), "--max-new-tokens", "4", "--no-progress",
                 "--no-syntax-constraints"]) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_beams"] == 2 and metrics["syntax_constraints"] is False


def test_cli_evaluate_bad_data_is_an_error(tiny_model_dir, tmp_path, capsys):
    from hmer_hf.cli import main

    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(tmp_path / "missing")]) == 2
    assert "error" in capsys.readouterr().err
