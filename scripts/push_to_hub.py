#!/usr/bin/env python
"""Upload a saved model to the Hugging Face Hub with its remote code and model card:
`python scripts/push_to_hub.py MODEL_DIR USER/REPO [--dry-run --output DIR]` (= `hmer-hf push`)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hmer_hf.hub import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
