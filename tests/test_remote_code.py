"""Remote-code export: a saved folder loads through the Auto classes with trust_remote_code where hmer_hf is absent."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from hmer_hf import HMERForConditionalGeneration, HMERProcessor

from .conftest import draw_formula_image

# The flat files exported next to the weights, and the only top-level packages each may import (besides the
# standard library and its siblings): they run where `hmer_hf` does not exist.
REMOTE_CODE_IMPORTS = {
    "configuration_hmer.py": {"transformers", "torch"},
    "modeling_hmer.py": {"transformers", "torch"},
    "modeling_hmer_layers.py": {"transformers", "torch"},
    "modeling_hmer_rnn.py": {"transformers", "torch"},
    "modeling_hmer_resnet.py": {"transformers", "torch"},
    "tokenization_hmer.py": {"transformers", "numpy", "PIL", "torch"},
    "image_processing_hmer.py": {"transformers", "numpy", "PIL", "torch"},
    "processing_hmer.py": {"transformers", "numpy", "PIL", "torch"},
    "rendering_hmer.py": {"transformers", "numpy", "PIL", "torch"},
}


@pytest.mark.parametrize("name", sorted(REMOTE_CODE_IMPORTS))
def test_remote_code_files_only_import_siblings_and_dependencies(name):
    path = Path(__file__).resolve().parents[1] / "hmer_hf" / name
    siblings = {p.stem for p in path.parent.glob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module in siblings and node.module != "data", ast.unparse(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for module in modules:
                top = module.split(".")[0]
                assert top in REMOTE_CODE_IMPORTS[name] or top in sys.stdlib_module_names, ast.unparse(node)


# The start of a script for a fresh interpreter that refuses to import hmer_hf, so only exported files can serve.
BLOCK_HMER_HF = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hmer_hf" or name.startswith("hmer_hf."):
                raise ImportError("hmer_hf is blocked in this process")
    sys.meta_path.insert(0, Block())
    """
)

CHILD = BLOCK_HMER_HF + textwrap.dedent(
    """
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    folder, images = sys.argv[1], sys.argv[2:]
    model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(images=images)
    ids = model.generate(**batch, max_new_tokens=8, num_beams=3)
    ink = processor(strokes=[[[[0, 20], [30, 20]], [[15, 5], [15, 35]]]])
    print(json.dumps({
        "ink_sum": float(ink["pixel_values"].sum()),
        "ink_shape": list(ink["pixel_values"].shape),
        "model": type(model).__module__,
        "texts": processor.batch_decode(ids, skip_special_tokens=True),
        "hmer_hf_loaded": any(m == "hmer_hf" or m.startswith("hmer_hf.") for m in sys.modules),
    }))
    """
)


def test_remote_code_loads_without_hmer_hf(tiny_model_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(tiny_model_dir, export)
    paths = []
    for seed in (11, 12):
        path = tmp_path / f"img{seed}.png"
        Image.fromarray(draw_formula_image(seed)).save(path)
        paths.append(str(path))

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(export), *paths],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child["model"].startswith("transformers_modules")
    assert child["hmer_hf_loaded"] is False

    model = HMERForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = HMERProcessor.from_pretrained(tiny_model_dir)
    batch = processor(images=paths)
    ids = model.generate(**batch, max_new_tokens=8, num_beams=3)
    assert child["texts"] == processor.batch_decode(ids, skip_special_tokens=True)
    # Online ink renders with the exported renderer exactly as with the library's.
    ink = processor(strokes=[[[[0, 20], [30, 20]], [[15, 5], [15, 35]]]])
    assert child["ink_shape"] == list(ink["pixel_values"].shape) and child["ink_sum"] == float(ink["pixel_values"].sum())
