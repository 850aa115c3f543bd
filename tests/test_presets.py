"""Every family member (preset): train step, save/load via the Auto classes, cached decoding, greedy and beam generate,
padding invariance, the image-to-latex pipeline, remote-code export in a clean process, and a learning test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, pipeline

from hmer_hf import PRESETS, HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

from .conftest import TINY_CONFIG, draw_formula_image
from .test_learning import LEARNING_CONFIG, assert_overfits, real_or_drawn_samples
from .test_modeling import random_batch
from .test_remote_code import BLOCK_HMER_HF

PRESET_NAMES = ["comer", "bttr", "hmer-mtl", "abm", "san-da"]
NEW_PRESETS = ["hmer-mtl", "abm", "san-da"]

# Small shapes on top of TINY_CONFIG for the members whose parts TINY_CONFIG does not shrink.
TINY_OVERRIDES = {
    "abm": dict(hidden_size=32, attention_dim=32, coverage_channels=16),
    "san-da": dict(hidden_size=32, attention_dim=32, resnet_channels=[8, 16, 16, 32], resnet_blocks=[1, 1, 1, 1]),
}


def tiny_config(name: str, **overrides) -> HMERConfig:
    return HMERConfig.from_preset(name, **{**TINY_CONFIG, **TINY_OVERRIDES.get(name, {}), **overrides})


def tiny_preset(name: str, seed: int = 0, **overrides) -> HMERForConditionalGeneration:
    """A small randomly initialised member in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = HMERForConditionalGeneration(tiny_config(name, **overrides))
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_presets_are_the_documented_set():
    assert sorted(PRESETS) == sorted(PRESET_NAMES)
    assert HMERConfig.from_preset("SAN_DA").decoder_type == "lstm"
    with pytest.raises(ValueError, match="Unknown preset"):
        HMERConfig.from_preset("wap")


# Parameter counts at the default (paper) sizes, also listed in docs/presets.md.
DEFAULT_PARAMETERS = {"comer": 6_389_554, "bttr": 6_376_450, "hmer-mtl": 6_420_281, "abm": 8_434_294, "san-da": 13_250_099}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_default_sizes(name):
    model = HMERForConditionalGeneration(HMERConfig.from_preset(name))
    assert sum(p.numel() for p in model.parameters()) == DEFAULT_PARAMETERS[name]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_train_step_and_save_load_through_auto_class(name, tmp_path):
    model = tiny_preset(name).train()
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, -100, -100]])
    out = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    rows = 4 if model.config.bidirectional else 2
    assert out.logits.shape == (rows, 4, model.config.vocab_size)
    out.loss.backward()
    assert model.encoder.backbone.stem.weight.grad.abs().sum() > 0
    assert model.lm_head.weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        before = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HMERForConditionalGeneration) and loaded.config.preset == name
    with torch.no_grad():
        after = loaded(pixel_values=pixels, pixel_mask=mask, labels=labels)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.loss, after.loss)


@pytest.mark.parametrize("name", NEW_PRESETS)
@pytest.mark.parametrize("direction", ["l2r", "r2l"])
def test_cached_decoding_equals_full_prefix(name, direction):
    model = tiny_preset(name, seed=1)
    pixels, mask = random_batch(2, seed=3)
    tokens = torch.randint(4, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(2))
    tokens[:, 0] = 1 if direction == "l2r" else 2
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        full = model(encoder_outputs=enc, decoder_input_ids=tokens, direction=direction).logits
        cache, steps = None, []
        for t in range(tokens.shape[1]):
            out = model(
                encoder_outputs=enc,
                decoder_input_ids=tokens[:, t : t + 1],
                past_key_values=cache,
                use_cache=True,
                direction=direction,
            )
            steps.append(out.logits)
            cache = out.past_key_values
    assert cache.get_seq_length() == tokens.shape[1] and cache.is_compileable is False
    assert (full - torch.cat(steps, dim=1)).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_padded_batch_gives_the_same_logits_as_one_by_one(name):
    model = tiny_preset(name, seed=2)
    pixels, mask = random_batch(3, seed=4)
    tokens = torch.randint(4, model.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(5))
    tokens[:, 0] = 1
    with torch.no_grad():
        batched = model(pixel_values=pixels, pixel_mask=mask, decoder_input_ids=tokens).logits
        for i in range(3):
            vh, vw = int(mask[i].any(1).sum()), int(mask[i].any(0).sum())
            alone = model(pixel_values=pixels[i : i + 1, :, :vh, :vw], decoder_input_ids=tokens[i : i + 1]).logits
            assert (batched[i] - alone[0]).abs().max().item() < 1e-4, i


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_greedy_generate_equals_manual_argmax_loop_and_uncached(name):
    model = tiny_preset(name, seed=3)
    pixels, mask = random_batch(2, seed=3)
    generated = model.generate(pixels, pixel_mask=mask, max_new_tokens=8)
    assert torch.equal(generated, model.generate(pixels, pixel_mask=mask, max_new_tokens=8, use_cache=False))
    with torch.no_grad():
        for row in range(2):
            seq = [1]
            for _ in range(8):
                logits = model(
                    pixel_values=pixels[row : row + 1], pixel_mask=mask[row : row + 1], decoder_input_ids=torch.tensor([seq])
                ).logits
                seq.append(int(logits[0, -1].argmax()))
                if seq[-1] == 2:
                    break
            assert generated[row, : len(seq)].tolist() == seq


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_beam_search(name):
    model = tiny_preset(name, seed=4)
    pixels, mask = random_batch(2, seed=4)
    out = model.generate(
        pixels,
        pixel_mask=mask,
        max_new_tokens=6,
        num_beams=4,
        num_return_sequences=3,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences.shape[0] == 6 and out.sequences_scores.shape == (6,)
    assert (out.sequences[:, 0] == 1).all()
    scores = out.sequences_scores.view(2, 3)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    uncached = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=4, use_cache=False)
    assert torch.equal(model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=4), uncached)


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_bf16_autocast_trains_and_decodes(name):
    model = tiny_preset(name, seed=8)
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, 21, -100]])
    with torch.no_grad():
        ref = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
            ids = model.generate(pixels, pixel_mask=mask, max_new_tokens=4, num_beams=2)
    assert abs(float(ref) - float(low)) < 0.05 * float(ref) and ids.shape[0] == 2
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.lm_head.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Saved members: pipeline and remote code
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def preset_dirs(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for name in NEW_PRESETS:
        folder = tmp_path_factory.mktemp(name)
        tiny_preset(name, seed=5).save_pretrained(folder)
        HMERProcessor(HMERImageProcessor(), HMERTokenizer()).save_pretrained(folder)
        folders[name] = folder
    return folders


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_pipeline_batch_equals_one_by_one(name, preset_dirs):
    pipe = pipeline("image-to-latex", model=str(preset_dirs[name]))
    inputs = [draw_formula_image(3), draw_formula_image(4), draw_formula_image(5, 90, 300)]
    for kwargs in ({}, {"num_beams": 3}):
        batched = pipe(inputs, batch_size=2, max_new_tokens=8, **kwargs)
        single = [pipe(x, max_new_tokens=8, **kwargs) for x in inputs]
        assert [r["generated_text"] for r in batched] == [r["generated_text"] for r in single]
        for b, s in zip(batched, single):
            assert isinstance(b["score"], float) and b["score"] <= 0 and abs(b["score"] - s["score"]) < 1e-3
    top = pipe(inputs[0], num_beams=3, num_return_sequences=2, max_new_tokens=6)
    assert len(top) == 2 and top[0]["score"] >= top[1]["score"]


CHILD = BLOCK_HMER_HF + textwrap.dedent(
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor
    images, folders = sys.argv[1:3], sys.argv[3:]
    result = {}
    for folder in folders:
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        batch = processor(images=images)
        ids = model.generate(**batch, max_new_tokens=8, num_beams=3)
        result[folder] = [type(model).__module__, processor.batch_decode(ids, skip_special_tokens=True)]
    result["hmer_hf_loaded"] = any(m == "hmer_hf" or m.startswith("hmer_hf.") for m in sys.modules)
    print(json.dumps(result))
    """
)


def test_remote_code_loads_every_new_member_without_hmer_hf(preset_dirs, tmp_path):
    paths = []
    for seed in (11, 12):
        path = tmp_path / f"img{seed}.png"
        Image.fromarray(draw_formula_image(seed)).save(path)
        paths.append(str(path))
    for name in NEW_PRESETS:
        for file in ("modeling_hmer_layers.py", "modeling_hmer_rnn.py", "modeling_hmer_resnet.py"):
            assert (preset_dirs[name] / file).is_file(), (name, file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HOME=str(tmp_path / "hf"))
    folders = [str(preset_dirs[name]) for name in NEW_PRESETS]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *paths, *folders], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    assert child.pop("hmer_hf_loaded") is False
    for name, folder in zip(NEW_PRESETS, folders):
        module, texts = child[folder]
        assert module.startswith("transformers_modules")
        model = HMERForConditionalGeneration.from_pretrained(folder)
        processor = HMERProcessor.from_pretrained(folder)
        ids = model.generate(**processor(images=paths), max_new_tokens=8, num_beams=3)
        assert texts == processor.batch_decode(ids, skip_special_tokens=True), name


# ---------------------------------------------------------------------------------------------------------------------
# Learning: each new member overfits a handful of real CROHME images and decodes them exactly
# ---------------------------------------------------------------------------------------------------------------------

MEMBER_LEARNING_CONFIG = dict(
    LEARNING_CONFIG,
    hidden_size=64,
    attention_dim=64,
    resnet_channels=[16, 32, 48, 64],
    resnet_blocks=[1, 1, 1, 1],
)


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_tiny_member_overfits_real_samples_and_generates_them(name, crohme_or_none, one_thread):
    images, captions = real_or_drawn_samples(crohme_or_none)
    torch.manual_seed(0)
    processor = HMERProcessor(HMERImageProcessor(max_height=96, max_width=384), HMERTokenizer())
    overrides = dict(MEMBER_LEARNING_CONFIG)
    if PRESETS[name].get("coverage_channels", 512):
        overrides["coverage_channels"] = 16
    # SAN-DA keeps its drop attention (p = 0.5) on: the model must still learn the samples.
    model = HMERForConditionalGeneration(HMERConfig.from_preset(name, **overrides))
    assert_overfits(model, processor, images, captions, max_steps=300, label=f"{name}: ")
