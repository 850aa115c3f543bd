"""Shared fixtures: where the CROHME data lives (tests that need it skip when it is absent)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import `scripts/<name>.py` as a module (the scripts are not a package), for tests of their helpers."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CROHME_DIR = Path(os.environ.get("HMER_CROHME_DIR", REPO_ROOT.parent / "shared" / "data" / "crohme"))


@pytest.fixture(scope="session")
def crohme_dir() -> Path:
    """The CROHME folder beside the checkout (../shared/data/crohme); skips the test when it is absent."""
    if not (CROHME_DIR / "2014" / "caption.txt").is_file():
        pytest.skip(f"CROHME data not found at {CROHME_DIR}")
    return CROHME_DIR


@pytest.fixture
def crohme_or_none(request) -> Path | None:
    """The CROHME folder when present, else None (for tests that fall back to drawn images)."""
    try:
        return request.getfixturevalue("crohme_dir")
    except pytest.skip.Exception:  # no CROHME data: fall back to drawn images
        return None


@pytest.fixture
def one_thread():
    """Run on one intra-op thread: on a shared, busy CPU two spinning OpenMP threads can make a step 10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_CONFIG = dict(
    growth_rate=8,
    num_dense_layers=2,
    stem_channels=16,
    d_model=32,
    num_attention_heads=4,
    dim_feedforward=64,
    num_decoder_layers=3,
    arm_channels=8,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved, randomly initialised small model with its processor (for pipeline, CLI and export tests)."""
    import torch

    from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

    torch.manual_seed(0)
    model = HMERForConditionalGeneration(HMERConfig(**TINY_CONFIG)).eval()
    folder = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(folder)
    HMERProcessor(HMERImageProcessor(), HMERTokenizer()).save_pretrained(folder)
    return folder


def draw_formula_image(seed: int, height: int = 60, width: int = 160):
    """A synthetic white-on-black 'handwriting' image (random thick strokes) as a uint8 array."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    image = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        points = [tuple(map(float, rng.uniform([5, 5], [width - 5, height - 5]))) for _ in range(4)]
        draw.line(points, fill=255, width=3, joint="curve")
    return np.array(image)
