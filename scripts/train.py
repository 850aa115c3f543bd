#!/usr/bin/env python
"""Train an HMER model: `python scripts/train.py configs/comer_crohme.yaml --set optim.lr=0.1` (= `hmer-hf train`).

Multi-GPU: `accelerate launch --multi_gpu --num_processes 4 scripts/train.py configs/comer_crohme.yaml`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Replace this script's folder on the path by the checkout root: runs without installing, and scripts/evaluate.py
# must not shadow the `evaluate` library that hmer_hf.evaluation imports.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from hmer_hf.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
