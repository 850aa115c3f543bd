"""Gradio demo of hmer-hf: `python demo/app.py [--model DIR] [--host 127.0.0.1] [--port 7860] [--share]`.

The same as `hmer-hf demo`; the code lives in `hmer_hf/demo.py` (docs/demo.md has the guide).
"""

import sys

from hmer_hf.demo import main

if __name__ == "__main__":
    sys.exit(main())
