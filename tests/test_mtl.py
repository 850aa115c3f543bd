"""HMER-MTL's distinguishing parts: CBAM inside the ARM (shapes, valid-pixel pooling) and the structure-skeleton head."""

from __future__ import annotations

import pytest
import torch

from hmer_hf import HMERConfig, HMERForConditionalGeneration, HMERTokenizer
from hmer_hf.configuration_hmer import DEFAULT_SKELETON_TOKEN_IDS, SKELETON_SYMBOLS
from hmer_hf.modeling_hmer import MaskedCBAM

from .test_modeling import random_batch
from .test_presets import tiny_preset


def test_cbam_shapes_and_padding_invariance():
    torch.manual_seed(0)
    cbam = MaskedCBAM(8)
    assert [m.out_features for m in cbam.mlp if isinstance(m, torch.nn.Linear)] == [4, 8]  # C -> C/2 -> C
    assert cbam.spatial.kernel_size == (7, 7)
    cbam.spatial_norm.bn.running_mean.fill_(0.3)
    cbam.spatial_norm.bn.running_var.fill_(2.0)
    cbam.eval()
    alone = torch.relu(torch.randn(1, 8, 5, 7))
    padded = torch.full((1, 8, 9, 12), 7.0)  # large garbage in the padding must not reach the pools
    padded[:, :, :5, :7] = alone
    valid = torch.zeros(1, 9, 12, dtype=torch.bool)
    valid[:, :5, :7] = True
    with torch.no_grad():
        out_alone = cbam(alone, torch.ones(1, 5, 7, dtype=torch.bool))
        out_padded = cbam(padded, valid)
    assert out_padded.shape == padded.shape and out_alone.shape == alone.shape
    assert (out_padded[:, :, :5, :7] - out_alone).abs().max() < 1e-5


def test_cbam_is_inside_the_arm_and_trained():
    model = tiny_preset("hmer-mtl").train()
    assert model.decoder.arm.cbam is not None
    assert tiny_preset("comer").decoder.arm.cbam is None
    pixels, mask = random_batch(2)
    model(pixel_values=pixels, pixel_mask=mask, labels=torch.tensor([[10, 11, 12], [20, 21, -100]])).loss.backward()
    assert model.decoder.arm.cbam.spatial.weight.grad.abs().sum() > 0
    assert model.decoder.arm.cbam.mlp[0].weight.grad.abs().sum() > 0


def test_default_skeleton_ids_are_the_structure_symbols_of_the_tokenizer():
    vocab = HMERTokenizer().get_vocab()
    assert DEFAULT_SKELETON_TOKEN_IDS == sorted(vocab[s] for s in SKELETON_SYMBOLS)
    assert len(SKELETON_SYMBOLS) == 17
    assert HMERConfig.from_preset("hmer-mtl").skeleton_token_ids == DEFAULT_SKELETON_TOKEN_IDS
    assert HMERConfig.skeleton_ids_from_vocab(vocab) == DEFAULT_SKELETON_TOKEN_IDS
    # Another vocabulary: the ids come from it, and ids outside it are refused by the model.
    small = HMERTokenizer.from_captions(["x ^ { 2 }", "a + b"])
    ids = HMERConfig.skeleton_ids_from_vocab(small.get_vocab())
    assert sorted(small.convert_ids_to_tokens(ids)) == sorted(["^", "{", "}", "+"])
    with pytest.raises(ValueError, match="skeleton_token_ids"):
        HMERForConditionalGeneration(HMERConfig.from_preset("hmer-mtl", vocab_size=10))


def test_skeleton_targets():
    model = tiny_preset("hmer-mtl")
    tok = HMERTokenizer()
    space = model.config.vocab_size
    text = "\\frac { x ^ { 2 } } { \\alpha } = 1"
    ids = tok(text)["input_ids"]
    labels = torch.tensor([ids, ids[:3] + [-100] * (len(ids) - 3)])
    _, targets = model.build_decoder_io(labels)
    skeleton = model.skeleton_targets(targets)
    keep = {"\\frac", "{", "}", "^", "="}
    expected = [t if tok.convert_ids_to_tokens(t) in keep else space for t in ids] + [2]  # </s> unchanged
    assert skeleton[0].tolist() == expected
    assert skeleton[1, :4].tolist() == expected[:3] + [2]
    assert (skeleton[1, 4:] == -100).all()
    # R2L rows end with <s>, kept as is.
    assert skeleton[2].tolist() == expected[:-1][::-1] + [1]


def test_aux_loss_is_reported_and_weighted():
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, -100, -100]])
    model = tiny_preset("hmer-mtl", seed=3)
    with torch.no_grad():
        out = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    assert out.skeleton_logits.shape == (4, 4, model.config.vocab_size + 1)
    assert out.skeleton_loss > 0 and out.mutual_kl_loss is None
    assert torch.allclose(out.loss, out.ce_loss + 1.0 * out.skeleton_loss)
    model.config.skeleton_loss_weight = 0.25
    with torch.no_grad():
        out2 = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    assert torch.allclose(out2.loss, out.ce_loss + 0.25 * out.skeleton_loss)
    # CoMER has no auxiliary head, and its loss is the plain cross-entropy.
    comer = tiny_preset("comer")
    with torch.no_grad():
        plain = comer(pixel_values=pixels, pixel_mask=mask, labels=labels)
    assert plain.skeleton_loss is None and torch.equal(plain.loss, plain.ce_loss)


def test_only_the_main_head_decodes():
    model = tiny_preset("hmer-mtl", seed=4)
    pixels, mask = random_batch(2, seed=4)
    before = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=3)
    with torch.no_grad():
        model.skeleton_head.weight.normal_(0, 10)
    after = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=3)
    assert torch.equal(before, after)
