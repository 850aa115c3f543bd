#!/usr/bin/env python
"""Build and cache a dataset: `python scripts/prepare_data.py crohme --out prepared/crohme` (= `hmer-hf prepare`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hmer_hf.data.prepare import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
