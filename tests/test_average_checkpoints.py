"""scripts/average_checkpoints.py: the averaged folder holds the mean weights, loads and decodes; mismatches are
errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

from .conftest import TINY_CONFIG, load_script


@pytest.fixture(scope="module")
def averaging():
    return load_script("average_checkpoints")


def save_model(folder, seed: int, **overrides):
    torch.manual_seed(seed)
    model = HMERForConditionalGeneration(HMERConfig(**{**TINY_CONFIG, **overrides})).eval()
    model.save_pretrained(folder)
    HMERProcessor(HMERImageProcessor(), HMERTokenizer()).save_pretrained(folder)
    (folder / "trainer_info.json").write_text('{"step": 7}')
    return folder


def test_average_is_the_mean_and_loads(averaging, tmp_path):
    a, b = save_model(tmp_path / "a", 0), save_model(tmp_path / "b", 1)
    assert averaging.main([str(tmp_path / "avg"), str(a), str(b)]) == 0
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    avg = load_file(tmp_path / "avg" / "model.safetensors")
    assert avg.keys() == wa.keys()
    for key, tensor in avg.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, (wa[key] + wb[key]) / 2)
        else:
            assert torch.equal(tensor, wa[key])
    assert not torch.equal(avg["lm_head.weight"], wa["lm_head.weight"])  # really a new model
    assert not (tmp_path / "avg" / "trainer_info.json").exists()  # a or b's step is not the average's
    model = HMERForConditionalGeneration.from_pretrained(tmp_path / "avg").eval()
    ids = model.generate(torch.rand(1, 1, 32, 64), max_new_tokens=5)
    assert ids.shape[0] == 1 and ids[0, 0] == model.config.bos_token_id


def test_other_architectures_and_missing_weights_are_errors(averaging, tmp_path, capsys):
    a = save_model(tmp_path / "a", 0)
    wide = save_model(tmp_path / "wide", 0, d_model=48)
    assert averaging.main([str(tmp_path / "out"), str(a), str(wide)]) == 2
    assert "shape" in capsys.readouterr().err
    assert averaging.main([str(tmp_path / "out"), str(a), str(tmp_path / "nothing")]) == 2
    assert "no model.safetensors" in capsys.readouterr().err
    assert averaging.main([str(a), str(a), str(a)]) == 2  # never overwrite an input
    assert "one of the inputs" in capsys.readouterr().err
