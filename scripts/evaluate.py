#!/usr/bin/env python
"""Evaluate a saved model on a labelled dataset: `python scripts/evaluate.py --model RUN/best --data DIR` (= `hmer-hf
evaluate`); writes predictions.jsonl and metrics.json with --out."""

from __future__ import annotations

import sys
from pathlib import Path

# Replace this script's folder on the path by the checkout root: runs without installing, and scripts/evaluate.py
# must not shadow the `evaluate` library that hmer_hf.evaluation imports.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from hmer_hf.evaluation import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
