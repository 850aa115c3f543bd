"""Learning test: a small model overfits a handful of real CROHME images and generate() returns their captions."""

from __future__ import annotations

import torch

from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERImageProcessor, HMERProcessor, HMERTokenizer

from .conftest import draw_formula_image


def real_or_drawn_samples(crohme_dir_or_none, count: int = 8) -> tuple[list, list[str]]:
    """Short CROHME 2014 test images with their captions; synthetic drawings when the data is absent."""
    if crohme_dir_or_none is None:
        images = [draw_formula_image(100 + i) for i in range(count)]
        captions = ["x", "y ^ { 2 }", "a + b", "1 2", "\\sqrt { 2 }", "x = 1", "\\pi", "3 - z"][:count]
        return images, captions
    lines = (crohme_dir_or_none / "2014" / "caption.txt").read_text().splitlines()
    pairs = [line.split("\t", 1) for line in sorted(lines)]
    # Short, varied expressions keep the test fast while still exercising structure tokens.
    chosen = [(name, cap) for name, cap in pairs if 3 <= len(cap.split()) <= 7][:count]
    images = [str(crohme_dir_or_none / "2014" / "img" / f"{name}.bmp") for name, _ in chosen]
    return images, [cap for _, cap in chosen]


# A small CoMER that overfits 8 images in a few hundred CPU steps (other members add their own parts to it).
LEARNING_CONFIG = dict(
    growth_rate=12,
    num_dense_layers=4,
    stem_channels=24,
    d_model=64,
    num_attention_heads=4,
    dim_feedforward=128,
    num_decoder_layers=2,
    arm_channels=16,
    dropout=0.0,
    encoder_dropout=0.0,
)


def test_tiny_model_overfits_real_samples_and_generates_them(crohme_or_none, one_thread):
    images, captions = real_or_drawn_samples(crohme_or_none)
    torch.manual_seed(0)
    processor = HMERProcessor(HMERImageProcessor(max_height=96, max_width=384), HMERTokenizer())
    model = HMERForConditionalGeneration(HMERConfig(**LEARNING_CONFIG))
    assert_overfits(model, processor, images, captions, max_steps=400)


def assert_overfits(model, processor, images, captions: list[str], max_steps: int, label: str = "") -> None:
    """Train on one batch until greedy decoding (in eval mode) returns the captions; then beam search must too."""
    batch = processor(images=images, text=captions)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    pixels = dict(pixel_values=batch["pixel_values"], pixel_mask=batch["pixel_mask"])
    decoded: list[str] = []
    for step in range(1, max_steps + 1):
        model.train()
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Judge in eval mode (BatchNorm running statistics), the way the model is used.
        if step % 25 == 0:
            model.eval()
            decoded = processor.batch_decode(model.generate(**pixels, max_new_tokens=20), skip_special_tokens=True)
            if decoded == captions:
                break
    assert decoded == captions, f"{label}train loss {loss.item():.4f} after {step} steps"
    # Beam search (bidirectional where the model is) on the same images agrees.
    ids = model.generate(**pixels, max_new_tokens=20, num_beams=3)
    assert processor.batch_decode(ids, skip_special_tokens=True) == captions
