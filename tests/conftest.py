"""Shared fixtures: where the CROHME data lives (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CROHME_DIR = Path(os.environ.get("HMER_CROHME_DIR", REPO_ROOT.parent / "shared" / "data" / "crohme"))


@pytest.fixture(scope="session")
def crohme_dir() -> Path:
    """The CROHME folder beside the checkout (../shared/data/crohme); skips the test when it is absent."""
    if not (CROHME_DIR / "2014" / "caption.txt").is_file():
        pytest.skip(f"CROHME data not found at {CROHME_DIR}")
    return CROHME_DIR
