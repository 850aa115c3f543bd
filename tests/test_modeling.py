"""Model tests: decoder I/O construction, cached decoding, save/load, generate() paths (greedy, beam, bidirectional)."""

from __future__ import annotations

import pytest
import torch

from hmer_hf.configuration_hmer import HMERConfig
from hmer_hf.modeling_hmer import HMERDecoderCache, HMERForConditionalGeneration

from .conftest import TINY_CONFIG


def tiny_model(seed: int = 0, **overrides) -> HMERForConditionalGeneration:
    """A small randomly initialised model in eval mode with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    model = HMERForConditionalGeneration(HMERConfig(**{**TINY_CONFIG, **overrides}))
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def random_batch(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of different valid sizes padded into one batch, with their pixel mask."""
    g = torch.Generator().manual_seed(seed)
    h, w = 64, 160
    pixels = torch.zeros(batch, 1, h, w)
    mask = torch.zeros(batch, h, w, dtype=torch.long)
    for i in range(batch):
        vh, vw = h - 13 * i % 40, w - 37 * i % 100
        pixels[i, 0, :vh, :vw] = torch.rand(vh, vw, generator=g)
        mask[i, :vh, :vw] = 1
    return pixels, mask


def test_decoder_io_both_directions():
    model = tiny_model()
    labels = torch.tensor([[10, 11, 12], [20, -100, -100]])
    inputs, targets = model.build_decoder_io(labels)
    bos, eos, pad = 1, 2, 0
    assert inputs.tolist() == [
        [bos, 10, 11, 12],
        [bos, 20, pad, pad],
        [eos, 12, 11, 10],
        [eos, 20, pad, pad],
    ]
    assert targets.tolist() == [
        [10, 11, 12, eos],
        [20, eos, -100, -100],
        [12, 11, 10, bos],
        [20, bos, -100, -100],
    ]
    # Padding given as pad id instead of -100 means the same thing.
    inputs2, targets2 = model.build_decoder_io(labels.masked_fill(labels == -100, pad))
    assert torch.equal(inputs, inputs2) and torch.equal(targets, targets2)


def test_decoder_io_l2r_only():
    model = tiny_model(bidirectional=False)
    inputs, targets = model.build_decoder_io(torch.tensor([[7, 8]]))
    assert inputs.tolist() == [[1, 7, 8]] and targets.tolist() == [[7, 8, 2]]


def test_loss_ignores_padding_and_backpropagates():
    model = tiny_model().train()
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, -100, -100]])
    out = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    assert out.logits.shape == (4, 4, model.config.vocab_size)  # L2R + R2L rows, T + 1 steps
    out.loss.backward()
    assert model.decoder.arm.conv.weight.grad.abs().sum() > 0
    assert model.encoder.backbone.stem.weight.grad.abs().sum() > 0


def test_encoder_mask_and_shapes():
    model = tiny_model()
    pixels, mask = random_batch(3)
    enc = model.encoder(pixels, mask)
    assert enc.last_hidden_state.shape == (3, 4, 10, 32)  # stride 16 with ceil: 64/16, 160/16
    assert enc.feature_mask.shape == (3, 4, 10)
    # The feature mask is the pixel mask sampled every 16 pixels (ceil-mode grid).
    assert torch.equal(enc.feature_mask, mask[:, ::16, ::16].bool())


@pytest.mark.parametrize("batch,length", [(1, 1), (2, 5), (3, 12)])
@pytest.mark.parametrize("coverage", [(True, True), (True, False), (False, True), (False, False)])
def test_cached_decoding_equals_full_prefix(batch, length, coverage):
    model = tiny_model(cross_coverage=coverage[0], self_coverage=coverage[1])
    pixels, mask = random_batch(batch, seed=length)
    tokens = torch.randint(4, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = 1
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        full = model(encoder_outputs=enc, decoder_input_ids=tokens).logits
        cache = HMERDecoderCache(len(model.decoder.layers))
        steps = []
        for t in range(length):
            out = model(encoder_outputs=enc, decoder_input_ids=tokens[:, t : t + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits)
            cache = out.past_key_values
    stepwise = torch.cat(steps, dim=1)
    assert (full - stepwise).abs().max().item() < 1e-4


def test_cached_generate_equals_uncached():
    model = tiny_model()
    pixels, mask = random_batch(3)
    cached = model.generate(pixels, pixel_mask=mask, max_new_tokens=12)
    uncached = model.generate(pixels, pixel_mask=mask, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)


def test_cached_beam_search_equals_uncached():
    """Beam search reorders the cache (but not the cross-attention keys/values, identical within a beam group):
    it must find exactly what full-prefix decoding without a cache finds."""
    model = tiny_model()
    pixels, mask = random_batch(3)
    kwargs = dict(max_new_tokens=10, num_beams=4, num_return_sequences=4, bidirectional_rescoring=False)
    cached = model.generate(pixels, pixel_mask=mask, **kwargs)
    uncached = model.generate(pixels, pixel_mask=mask, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_masked_batch_norm_eval_equals_normalising_valid_pixels_only():
    from hmer_hf.modeling_hmer_layers import MaskedBatchNorm2d

    g = torch.Generator().manual_seed(0)
    norm = MaskedBatchNorm2d(4)
    norm.bn.running_mean.copy_(torch.randn(4, generator=g))
    norm.bn.running_var.copy_(torch.rand(4, generator=g) + 0.5)
    norm.bn.weight.data.copy_(torch.randn(4, generator=g))
    norm.bn.bias.data.copy_(torch.randn(4, generator=g))
    x = torch.randn(3, 4, 5, 6, generator=g)
    valid = torch.rand(3, 5, 6, generator=g) > 0.3
    norm.eval()
    out = norm(x, valid)
    bn = norm.bn
    expected = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected = (expected * bn.weight[:, None, None] + bn.bias[:, None, None]) * valid[:, None]
    assert torch.allclose(out, expected, atol=1e-5)
    assert (out.permute(0, 2, 3, 1)[~valid] == 0).all()


def test_greedy_generate_equals_manual_argmax_loop():
    model = tiny_model(seed=3)
    pixels, mask = random_batch(2, seed=3)
    generated = model.generate(pixels, pixel_mask=mask, max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        for row in range(2):
            seq = [1]
            for _ in range(8):
                logits = model(
                    pixel_values=pixels[row : row + 1],
                    pixel_mask=mask[row : row + 1],
                    decoder_input_ids=torch.tensor([seq]),
                ).logits
                seq.append(int(logits[0, -1].argmax()))
                if seq[-1] == 2:
                    break
            assert generated[row, : len(seq)].tolist() == seq
            assert (generated[row, len(seq) :] == 0).all()


def sequence_score(model, pixels, mask, seq: list[int]) -> float:
    """Sum of log-probabilities of a generated L2R sequence (after <s>, up to and including </s>)."""
    enc = model.encoder(pixels, mask)
    tokens = [t for t in seq[1:] if t not in (0, 1, 2)]
    return float(model.sequence_log_probs(enc, torch.tensor([0]), [tokens], direction="l2r")[0])


def test_beam_score_not_below_greedy():
    model = tiny_model(seed=5)
    pixels, mask = random_batch(1, seed=5)
    greedy = model.generate(pixels, pixel_mask=mask, max_new_tokens=10)
    beam = model.generate(
        pixels, pixel_mask=mask, max_new_tokens=10, num_beams=10, bidirectional_rescoring=False, length_penalty=0.0
    )
    assert sequence_score(model, pixels, mask, beam[0].tolist()) >= sequence_score(
        model, pixels, mask, greedy[0].tolist()
    ) - 1e-5


def test_beam_search_output_dict_and_num_return_sequences():
    model = tiny_model(seed=2)
    pixels, mask = random_batch(2)
    out = model.generate(
        pixels,
        pixel_mask=mask,
        max_new_tokens=6,
        num_beams=4,
        num_return_sequences=3,
        bidirectional_rescoring=False,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert out.sequences.shape[0] == 6 and out.sequences_scores.shape == (6,)
    assert (out.sequences[:, 0] == 1).all()


def test_bidirectional_rescoring_returns_valid_sequences():
    model = tiny_model(seed=4)
    pixels, mask = random_batch(2, seed=4)
    out = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=3, num_return_sequences=2, return_dict_in_generate=True)
    assert out.sequences.shape[0] == 4
    assert (out.sequences[:, 0] == 1).all()
    scores = out.sequences_scores.view(2, 2)
    assert (scores[:, 0] >= scores[:, 1]).all()  # best first
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
    for i, seq in enumerate(out.sequences.tolist()):
        body = seq[1 : seq.index(2)] if 2 in seq else seq[1:]
        assert all(t >= 4 for t in body)  # no specials inside
        # The returned score is the length-normalised sum of both directions' teacher-forced log-probabilities.
        rows = torch.tensor([i // 2])
        both = model.sequence_log_probs(enc, rows, [body], "l2r") + model.sequence_log_probs(enc, rows, [body], "r2l")
        assert abs(float(both[0]) / (len(body) + 1) - float(out.sequences_scores[i])) < 1e-4
    # Default is on for a bidirectionally trained model; switching it off gives plain beam search.
    plain = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=3, bidirectional_rescoring=False)
    assert plain.shape[0] == 2


def test_save_load_identical_logits(tmp_path):
    model = tiny_model(seed=7)
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, 21, -100]])
    with torch.no_grad():
        before = model(pixel_values=pixels, pixel_mask=mask, labels=labels).logits
    model.save_pretrained(tmp_path)
    loaded = HMERForConditionalGeneration.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        after = loaded(pixel_values=pixels, pixel_mask=mask, labels=labels).logits
    assert torch.equal(before, after)
    assert loaded.generation_config.max_new_tokens == 200 and loaded.generation_config.decoder_start_token_id == 1


def test_bf16_autocast_forward_runs_and_is_close():
    model = tiny_model(seed=8)
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12], [20, 21, -100]])
    with torch.no_grad():
        ref = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss
    assert abs(float(ref) - float(low)) < 0.1 * float(ref)


def test_bad_pixel_values_shape_is_a_clear_error():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[batch, 1, height, width\]"):
        model(pixel_values=torch.rand(1, 3, 32, 32), labels=torch.tensor([[5]]))


@pytest.mark.parametrize("overrides", [{}, {"transition_pooling": [True, False]}], ids=["stride16", "stride8"])
def test_encoder_is_padding_invariant(overrides):
    model = tiny_model(seed=9, **overrides)
    pixels, mask = random_batch(3, seed=9)
    with torch.no_grad():
        batched = model.encoder(pixels, mask)
        for i in range(3):
            vh, vw = int(mask[i].any(1).sum()), int(mask[i].any(0).sum())
            alone = model.encoder(pixels[i : i + 1, :, :vh, :vw])
            h, w = alone.last_hidden_state.shape[1:3]
            diff = (batched.last_hidden_state[i, :h, :w] - alone.last_hidden_state[0]).abs().max().item()
            assert diff < 1e-4, (i, diff)


def test_transition_pooling_sets_the_stride():
    pixels = torch.rand(1, 1, 64, 160)
    with torch.no_grad():
        full = tiny_model().encoder(pixels).last_hidden_state
        half = tiny_model(transition_pooling=[True, False]).encoder(pixels).last_hidden_state
    assert full.shape[1:3] == (4, 10) and half.shape[1:3] == (8, 20)
    with pytest.raises(ValueError, match="one flag per transition"):
        HMERConfig(transition_pooling=[False])


def test_channels_last_weights_give_the_same_logits():
    model = tiny_model(seed=4)
    pixels, mask = random_batch(2, seed=4)
    labels = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    with torch.no_grad():
        ref = model(pixel_values=pixels, pixel_mask=mask, labels=labels).logits
        model = model.to(memory_format=torch.channels_last)
        assert model.encoder.backbone.blocks[0][0].conv2.weight.is_contiguous(memory_format=torch.channels_last)
        out = model(pixel_values=pixels, pixel_mask=mask, labels=labels).logits
    assert (ref - out).abs().max().item() < 1e-4
