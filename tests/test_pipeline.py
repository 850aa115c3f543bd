"""The image-to-latex pipeline, Auto-class loading and the CLI, on a small saved model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer, pipeline

import hmer_hf
from hmer_hf import HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

from .conftest import draw_formula_image


def test_auto_classes_load_the_family(tiny_model_dir):
    assert isinstance(AutoModelForImageTextToText.from_pretrained(tiny_model_dir), HMERForConditionalGeneration)
    assert isinstance(AutoProcessor.from_pretrained(tiny_model_dir), HMERProcessor)
    assert isinstance(AutoTokenizer.from_pretrained(tiny_model_dir), HMERTokenizer)
    assert isinstance(AutoImageProcessor.from_pretrained(tiny_model_dir), HMERImageProcessor)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_hmer.HMERForConditionalGeneration"
    for name in ("modeling_hmer.py", "configuration_hmer.py", "tokenization_hmer.py", "image_processing_hmer.py"):
        assert (tiny_model_dir / name).is_file()


def test_processor_output_goes_straight_into_model_and_generate(tiny_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    batch = processor(images=[draw_formula_image(1), draw_formula_image(2)], text=["x ^ { 2 }", "a + b"])
    out = model(**batch)
    assert out.loss is not None and torch.isfinite(out.loss)
    ids = model.generate(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"], max_new_tokens=5)
    assert len(processor.batch_decode(ids, skip_special_tokens=True)) == 2


def test_pipeline_batch_equals_one_by_one(tiny_model_dir, tmp_path):
    pipe = pipeline("image-to-latex", model=str(tiny_model_dir))
    path = tmp_path / "a.png"
    Image.fromarray(255 - draw_formula_image(3)).save(path)  # dark ink on white, from a file
    inputs = [str(path), Image.fromarray(draw_formula_image(4)), draw_formula_image(5, 90, 300)]
    for kwargs in ({}, {"num_beams": 3}):
        batched = pipe(inputs, batch_size=2, max_new_tokens=8, **kwargs)
        single = [pipe(x, max_new_tokens=8, **kwargs) for x in inputs]
        assert [r["generated_text"] for r in batched] == [r["generated_text"] for r in single]
        for b, s in zip(batched, single):
            assert isinstance(b["score"], float) and b["score"] <= 0
            assert abs(b["score"] - s["score"]) < 1e-3


def test_pipeline_polarity_and_top_k(tiny_model_dir):
    pipe = pipeline("image-to-latex", model=str(tiny_model_dir))
    image = draw_formula_image(6)
    assert pipe(image, max_new_tokens=6) == pipe(255 - image, max_new_tokens=6)
    top = pipe(image, num_beams=4, num_return_sequences=3, max_new_tokens=6)
    assert len(top) == 3 and top[0]["score"] >= top[1]["score"] >= top[2]["score"]
    compact = pipe(image, max_new_tokens=6, compact=True)["generated_text"]
    assert " " not in compact.replace("\\limits ", "")


def test_pipeline_blank_image_is_a_clear_error(tiny_model_dir):
    pipe = pipeline("image-to-latex", model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="blank|no ink|empty"):
        pipe(np.zeros((40, 40), dtype=np.uint8))


def test_cli_predict_prints_json(tiny_model_dir, tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(draw_formula_image(7)).save(good)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(blank)
    cmd = [sys.executable, "-m", "hmer_hf.cli", "predict", str(good), str(blank), "--model", str(tiny_model_dir)]
    proc = subprocess.run(cmd + ["--json", "--max-new-tokens", "5"], capture_output=True, text=True, timeout=300)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1  # one file could not be recognised
    assert lines[0]["file"] == str(good) and isinstance(lines[0]["latex"], str) and lines[0]["score"] <= 0
    assert lines[1]["file"] == str(blank) and "error" in lines[1]
    # Plain output for one file is just the LaTeX, equal to the pipeline's.
    proc = subprocess.run(cmd[:-3] + ["--model", str(tiny_model_dir), "--max-new-tokens", "5"], capture_output=True, text=True, timeout=300)
    expected = pipeline("image-to-latex", model=str(tiny_model_dir))(str(good), max_new_tokens=5)["generated_text"]
    assert proc.returncode == 0 and proc.stdout.strip() == expected


def test_cli_missing_file_is_a_clear_error(tiny_model_dir, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hmer_hf.cli", "predict", str(tmp_path / "nope.png"), "--model", str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "nope.png" in proc.stderr


def test_default_model_constant_is_a_local_path():
    assert hmer_hf.DEFAULT_MODEL.endswith("hmer-comer-crohme")
