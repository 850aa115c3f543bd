"""The trained default model shipped inside the package (`hmer_hf.DEFAULT_MODEL`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hmer_hf
from hmer_hf.hub import read_eval_results

MODEL = Path(hmer_hf.DEFAULT_MODEL)


def test_shipped_folder_is_complete_and_small():
    assert hmer_hf.default_model_available(), f"the default model is missing at {MODEL}"
    for name in ("config.json", "model.safetensors", "generation_config.json", "processor_config.json",
                 "tokenizer_config.json", "vocab.json", "README.md", "eval_results.json"):
        assert (MODEL / name).is_file(), name
    assert (MODEL / "model.safetensors").stat().st_size < 16 * 2**20
    assert not list(MODEL.glob("*.py")), "the package's classes load it: no stale remote-code copies"
    results = read_eval_results(MODEL / "eval_results.json")
    decodings = {r["decoding"] for r in results}
    assert any(d.startswith("greedy") for d in decodings) and any(d.startswith("beam") for d in decodings), decodings
    assert all(r["num_samples"] == 986 for r in results)
    card = (MODEL / "README.md").read_text(encoding="utf-8")
    for r in results:  # the card reports exactly the measured numbers
        assert f"{100 * r['exprate']:.2f}" in card


def test_loads_in_float32_from_half_precision_weights():
    import torch

    model = hmer_hf.HMERForConditionalGeneration.from_pretrained(hmer_hf.DEFAULT_MODEL)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def greedy_exprate_on(crohme_dir: Path, count: int) -> tuple[float, list[str]]:
    from transformers import pipeline

    lines = (crohme_dir / "2014" / "caption.txt").read_text(encoding="utf-8").splitlines()[:count]
    pairs = [line.split("\t", 1) for line in lines]
    pipe = pipeline("image-to-latex")  # no model: the shipped default
    outputs = pipe([str(crohme_dir / "2014" / "img" / f"{name}.bmp") for name, _ in pairs], batch_size=16)
    hits = [out["generated_text"] == caption.strip() for out, (_, caption) in zip(outputs, pairs)]
    return sum(hits) / len(hits), [out["generated_text"] for out in outputs]


def test_default_pipeline_recognises_crohme_2014(crohme_dir, one_thread):
    # The first 100 canonical test images, greedy with the model's default decoding (syntax constraints on): the same
    # protocol as eval_results.json on all 986.
    rate, outputs = greedy_exprate_on(crohme_dir, 100)
    results = read_eval_results(MODEL / "eval_results.json")
    greedy = next(r for r in results if r["decoding"] == "greedy + syntax constraints")
    assert all(outputs), "every image gives some LaTeX"
    # A 100-image subset of a model measured at p on 986: allow ~3 standard errors below p.
    p = greedy["exprate"]
    assert rate >= p - 3 * (p * (1 - p) / 100) ** 0.5, (rate, p)


def test_cli_predict_uses_the_default_model(crohme_dir, tmp_path):
    name, caption = (crohme_dir / "2014" / "caption.txt").read_text(encoding="utf-8").splitlines()[0].split("\t", 1)
    image = crohme_dir / "2014" / "img" / f"{name}.bmp"
    done = subprocess.run([sys.executable, "-m", "hmer_hf.cli", "predict", str(image), "--json"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["file"] == str(image) and record["latex"], record


@pytest.mark.slow
def test_wheel_contains_the_default_model(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path),
                    str(repo)], check=True, capture_output=True, timeout=600)
    import zipfile

    wheel = next(tmp_path.glob("hmer_hf-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("config.json", "model.safetensors", "processor_config.json", "README.md"):
        assert f"hmer_hf/pretrained/hmer-comer-crohme/{name}" in names, name


def test_default_model_reads_our_own_drawn_examples(one_thread):
    # demo/examples: formulas rendered with the training renderer from strokes written in
    # scripts/make_demo_examples.py, saved as dark ink on white; not CROHME data.
    from transformers import pipeline

    expected = {
        "one_half.png": "\\frac { 1 } { 2 }",
        "pythagoras.png": "a ^ { 2 } + b ^ { 2 } = c ^ { 2 }",
        "x_squared_plus_1.png": "x ^ { 2 } + 1",
        "y_equals_3x_minus_1.png": "y = 3 x - 1",
    }
    folder = Path(__file__).resolve().parents[1] / "demo" / "examples"
    outputs = pipeline("image-to-latex")([str(folder / name) for name in expected], batch_size=4)
    assert [out["generated_text"] for out in outputs] == list(expected.values())
