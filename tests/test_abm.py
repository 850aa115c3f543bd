"""ABM's distinguishing parts: KL alignment of the two directions on uneven lengths, twin decoders, the attention
aggregation module, L2R-only inference and the recurrent cache."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hmer_hf.modeling_hmer import mutual_kl_divergence
from hmer_hf.modeling_hmer_rnn import CoverageAttention, RecurrentDecoderCache

from .test_modeling import random_batch
from .test_presets import tiny_config, tiny_preset


def aligned_logits(lengths: list[int], t: int, v: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """L2R/R2L logits [B, t, v] that agree wherever position k of L2R meets position len-1-k of R2L; random elsewhere."""
    g = torch.Generator().manual_seed(seed)
    l2r = torch.randn(len(lengths), t, v, generator=g)
    r2l = torch.randn(len(lengths), t, v, generator=g)
    for i, n in enumerate(lengths):
        for k in range(n):
            r2l[i, n - 1 - k] = l2r[i, k]
    return l2r, r2l


def test_kl_is_zero_when_aligned_positions_agree_on_uneven_lengths():
    lengths = [5, 2, 3]
    l2r, r2l = aligned_logits(lengths, t=6)  # T+1 = 6 positions: the longest label has 5 tokens
    kl = mutual_kl_divergence(l2r, r2l, torch.tensor(lengths), temperature=4.0)
    assert kl.abs().item() < 1e-6
    # ABM's code flips the padded batch as a whole (position k meets T-1-k): wrong for every shorter sample.
    naive = torch.flip(r2l[:, :5], dims=[1])
    log_p, log_q = F.log_softmax(l2r[:, :5] / 4, -1), F.log_softmax(naive / 4, -1)
    valid = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    assert (log_p.exp() * (log_p - log_q)).sum(-1)[valid].mean() > 0.01
    # Positions at and past the end (</s> vs <s>, padding) do not count.
    l2r[0, 5], r2l[1, 2:] = 100.0, -50.0
    assert mutual_kl_divergence(l2r, r2l, torch.tensor(lengths), 4.0).abs().item() < 1e-6


def test_kl_value_temperature_and_direction():
    l2r, r2l = aligned_logits([3], t=4, seed=1)
    r2l[0, 0] += torch.tensor([3.0, 0, 0, 0, 0, 0, -1.0])  # position 0 of R2L meets position 2 of L2R
    p, q = F.softmax(l2r[0, 2] / 2, -1), F.softmax(r2l[0, 0] / 2, -1)
    expected = 4 * (p * (p.log() - q.log())).sum() / 3  # T^2 * KL(p_L2R || p_R2L), mean over the 3 positions
    assert torch.allclose(mutual_kl_divergence(l2r, r2l, torch.tensor([3]), 2.0), expected, atol=1e-6)


def test_twin_decoders_have_separate_weights_and_the_loss_is_abms():
    model = tiny_preset("abm").train()
    assert model.config.twin_decoders and model.r2l_decoder is not model.decoder
    l2r_params = {p.data_ptr() for p in [*model.decoder.parameters(), *model.lm_head.parameters()]}
    r2l_params = {p.data_ptr() for p in [*model.r2l_decoder.parameters(), *model.r2l_lm_head.parameters()]}
    assert not l2r_params & r2l_params
    torch.manual_seed(0)
    pixels, mask = random_batch(2)
    labels = torch.tensor([[10, 11, 12, 13], [20, 21, -100, -100]])
    model.eval()  # deterministic: dropout off
    out = model(pixel_values=pixels, pixel_mask=mask, labels=labels)
    _, targets = model.build_decoder_io(labels)
    ce = [F.cross_entropy(out.logits[s].flatten(0, 1), targets[s].flatten(), ignore_index=-100) for s in (slice(0, 2), slice(2, 4))]
    assert torch.allclose(out.ce_loss, ce[0] + ce[1])
    kl = mutual_kl_divergence(out.logits[:2], out.logits[2:], torch.tensor([4, 2]), 4.0)
    assert torch.allclose(out.mutual_kl_loss, kl) and kl > 0
    assert torch.allclose(out.loss, ce[0] + ce[1] + 0.5 * kl)
    model.train()
    model(pixel_values=pixels, pixel_mask=mask, labels=labels).loss.backward()
    for part in (model.decoder, model.r2l_decoder):
        assert part.attention.coverage_convs[0].weight.grad.abs().sum() > 0
        assert part.gru2.weight_ih.grad.abs().sum() > 0


def test_attention_aggregation_module_structure_and_fused_kernel():
    config = tiny_config("abm")
    att = CoverageAttention(feature_dim=12, query_dim=config.hidden_size, config=config, position=False)
    assert [c.kernel_size for c in att.coverage_convs] == [(11, 11), (5, 5)]
    assert [c.padding for c in att.coverage_convs] == [(5, 5), (2, 2)]
    torch.manual_seed(0)
    for p in att.parameters():
        p.data.normal_()
    coverage = torch.rand(2, 1, 6, 9)
    # Reference: each branch conv -> linear, summed (ABM's U_f(Q * beta) for the 11x11 and 5x5 branches).
    ref = sum(
        proj(F.conv2d(coverage, conv.weight, padding=conv.padding).flatten(2).transpose(1, 2))
        for conv, proj in zip(att.coverage_convs, att.coverage_projs)
    )
    weight, bias = att.fused_coverage_kernel()
    fused = F.conv2d(coverage, weight, bias, padding=5).flatten(2).transpose(1, 2)
    assert (fused - ref).abs().max() < 1e-3 * ref.abs().max()


def test_inference_uses_the_l2r_branch_only():
    model = tiny_preset("abm", seed=2)
    assert model.config.bidirectional_rescoring is False
    pixels, mask = random_batch(2, seed=2)
    greedy = model.generate(pixels, pixel_mask=mask, max_new_tokens=6)
    beam = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=4)
    with torch.no_grad():
        for p in model.r2l_decoder.parameters():
            p.normal_(0, 3)
    assert torch.equal(greedy, model.generate(pixels, pixel_mask=mask, max_new_tokens=6))
    assert torch.equal(beam, model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=4))
    # Rescoring with the R2L branch stays available on request.
    rescored = model.generate(pixels, pixel_mask=mask, max_new_tokens=6, num_beams=3, bidirectional_rescoring=True)
    assert rescored.shape[0] == 2 and (rescored[:, 0] == 1).all()


def test_recurrent_cache_reorders_every_state():
    model = tiny_preset("abm", seed=3)
    pixels, mask = random_batch(3, seed=3)
    tokens = torch.tensor([[1, 10, 11], [1, 20, 21], [1, 30, 31]])
    with torch.no_grad():
        enc = model.encoder(pixels, mask)
        out = model(encoder_outputs=enc, decoder_input_ids=tokens, use_cache=True)
    cache = out.past_key_values
    assert isinstance(cache, RecurrentDecoderCache) and cache.get_seq_length() == 3
    assert set(cache.state) == {"hidden", "coverage"}
    hidden, coverage = cache.state["hidden"].clone(), cache.state["coverage"].clone()
    cache.reorder_cache(torch.tensor([2, 0, 0]))
    assert torch.equal(cache.state["hidden"], hidden[[2, 0, 0]])
    assert torch.equal(cache.state["coverage"], coverage[[2, 0, 0]])
    assert torch.equal(cache.static["valid"], enc.feature_mask[[2, 0, 0]])
