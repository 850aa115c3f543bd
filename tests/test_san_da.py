"""SAN-DA's distinguishing parts: stride-1 ResNet-18 encoder, drop attention, coverage accumulation, the position
embedding fed back with the context."""

from __future__ import annotations

import pytest
import torch

from hmer_hf import HMERConfig, HMERForConditionalGeneration
from hmer_hf.modeling_hmer_layers import image_position_encoding
from hmer_hf.modeling_hmer_resnet import ResNetBackbone
from hmer_hf.modeling_hmer_rnn import drop_attention

from .test_modeling import random_batch
from .test_presets import tiny_preset


def test_resnet18_layout_stride_and_padding_invariance():
    config = HMERConfig.from_preset("san-da")
    backbone = ResNetBackbone(config)
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.stride == (1, 1) for c in convs)  # downsampling only by max-pooling
    assert [len(stage) for stage in backbone.stages] == [2, 2, 2, 2] and backbone.out_channels == 512
    assert sum(c.kernel_size == (3, 3) for c in convs) == 16  # 8 basic blocks x 2

    model = tiny_preset("san-da", seed=1)
    pixels, mask = random_batch(3, seed=1)
    with torch.no_grad():
        batched = model.encoder(pixels, mask)
        assert batched.last_hidden_state.shape == (3, 4, 10, 32)  # stride 16 (ceil), raw 32-channel features
        assert torch.equal(batched.feature_mask, mask[:, ::16, ::16].bool())
        for i in range(3):
            vh, vw = int(mask[i].any(1).sum()), int(mask[i].any(0).sum())
            alone = model.encoder(pixels[i : i + 1, :, :vh, :vw]).last_hidden_state
            h, w = alone.shape[1:3]
            assert (batched.last_hidden_state[i, :h, :w] - alone[0]).abs().max() < 1e-4


def test_drop_attention_renormalises_and_suppresses_the_peak():
    torch.manual_seed(0)
    logits = torch.randn(64, 30)
    valid = torch.ones(64, 30, dtype=torch.bool)
    valid[:, 20:] = False
    alpha = torch.softmax(logits.masked_fill(~valid, float("-inf")), -1)
    dropped = drop_attention(alpha, prob=1.0, threshold=0.5)
    assert torch.allclose(dropped.sum(-1), torch.ones(64))
    assert (dropped[:, 20:] == 0).all()  # padding stays empty
    top = alpha.argmax(-1)
    assert (dropped.gather(1, top[:, None]) == 0).all()
    # Exactly the weights >= 0.5 x peak are gone; the others keep their ratios.
    gone = alpha >= 0.5 * alpha.amax(-1, keepdim=True)
    assert (dropped[gone] == 0).all()
    kept = alpha.masked_fill(gone, 0)
    assert torch.allclose(dropped, kept / kept.sum(-1, keepdim=True))
    # prob 0: unchanged; a uniform row (nothing would remain) is left as it is.
    assert torch.equal(drop_attention(alpha, prob=0.0, threshold=0.5), alpha)
    uniform = torch.full((1, 8), 1 / 8)
    assert torch.equal(drop_attention(uniform, 1.0, 0.5), uniform)
    # About `prob` of the rows are touched.
    some = drop_attention(alpha.repeat(20, 1), prob=0.3, threshold=0.5)
    changed = (some != alpha.repeat(20, 1)).any(-1).float().mean()
    assert 0.2 < changed < 0.4


def test_drop_attention_only_in_training():
    model = tiny_preset("san-da", seed=2, drop_attention_prob=1.0, dropout=0.0, encoder_dropout=0.0)
    pixels, mask = random_batch(2, seed=2)
    tokens = torch.tensor([[1, 10, 11, 12], [1, 20, 21, 22]])
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        eval_a = model(encoder_outputs=enc, decoder_input_ids=tokens, output_attentions=True).cross_attentions[0]
        eval_b = model(encoder_outputs=enc, decoder_input_ids=tokens, output_attentions=True).cross_attentions[0]
        assert torch.equal(eval_a, eval_b)
        model.decoder.train()  # decoder only: the encoder's BatchNorm stays in eval mode
        train = model(encoder_outputs=enc, decoder_input_ids=tokens, output_attentions=True).cross_attentions[0]
    assert not torch.allclose(train, eval_a)
    assert torch.allclose(train.sum(-1), torch.ones_like(train.sum(-1)), atol=1e-5)
    # The peak of every step is suppressed (prob 1): the argmax of the undropped map gets nothing.
    # (Only step 0 is comparable: later steps see different states.)
    top = eval_a[:, 0, 0].argmax(-1)
    assert (train[:, 0, 0].gather(1, top[:, None]) == 0).all()


def test_coverage_is_the_sum_of_past_attention():
    model = tiny_preset("san-da", seed=3)
    pixels, mask = random_batch(2, seed=3)
    tokens = torch.tensor([[1, 10, 11, 12, 13], [1, 20, 21, 22, 23]])
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        out = model(encoder_outputs=enc, decoder_input_ids=tokens, use_cache=True, output_attentions=True)
        alphas = out.cross_attentions[0][:, 0]  # [B, T, L]
        coverage = out.past_key_values.state["coverage"]
        assert torch.allclose(coverage.flatten(1), alphas.sum(1), atol=1e-6)
        # Step by step: after t steps the coverage is the sum of the first t maps.
        cache = None
        for t in range(tokens.shape[1]):
            step = model(encoder_outputs=enc, decoder_input_ids=tokens[:, t : t + 1], past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            assert torch.allclose(cache.state["coverage"].flatten(1), alphas[:, : t + 1].sum(1), atol=1e-6)
    # Attention lives on valid positions only.
    assert (alphas.masked_select(~enc.feature_mask.flatten(1)[:, None, :]) == 0).all()


def test_context_fed_back_carries_the_position_embedding():
    model = tiny_preset("san-da", seed=4)
    pixels, mask = random_batch(2, seed=4)
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        static = model.decoder.prepare(enc.last_hidden_state, enc.feature_mask)
        q = image_position_encoding(enc.feature_mask, enc.last_hidden_state.shape[-1]).flatten(1, 2)
        assert torch.allclose(static["values_pos"] - static["features"], q, atol=1e-6)
        out = model(encoder_outputs=enc, decoder_input_ids=torch.tensor([[1, 10], [1, 20]]), use_cache=True, output_attentions=True)
        alpha_last = out.cross_attentions[0][:, 0, -1]
        feedback = out.past_key_values.state["feedback"]
    assert torch.allclose(feedback, torch.einsum("bl,blc->bc", alpha_last, static["features"] + q), atol=1e-5)
    assert model.decoder.lstm.input_size == model.config.hidden_size + enc.last_hidden_state.shape[-1]


def test_san_da_is_left_to_right_only():
    config = HMERConfig.from_preset("san-da")
    assert not config.bidirectional and not config.bidirectional_rescoring
    model = tiny_preset("san-da")
    pixels, mask = random_batch(1)
    out = model(pixel_values=pixels, pixel_mask=mask, labels=torch.tensor([[10, 11]]))
    assert out.logits.shape[0] == 1
    assert isinstance(model, HMERForConditionalGeneration) and not hasattr(model, "r2l_decoder")


def test_resnet_pooling_sets_the_stride():
    pixels = torch.rand(1, 1, 64, 160)
    with torch.no_grad():
        full = tiny_preset("san-da", seed=2).encoder(pixels).last_hidden_state
        half = tiny_preset("san-da", seed=2, resnet_pooling=[True, True, True, False]).encoder(pixels)
    assert full.shape[1:3] == (4, 10) and half.last_hidden_state.shape[1:3] == (8, 20)
    assert half.feature_mask.shape[1:] == (8, 20)
    with pytest.raises(ValueError, match="one flag per ResNet stage"):
        HMERConfig.from_preset("san-da", resnet_pooling=[True])
