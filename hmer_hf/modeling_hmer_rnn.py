"""Attention RNN decoders of the HMER family: ABM's two-stage GRU and SAN-DA's LSTM, on one shared base.

Both decoders read the encoder's feature map F [B, h, w, C] (the backbone output, no projection) through additive
coverage attention, step by step:

* [`AttentionRNNDecoder`] holds what they share: the token embedding, the initial state (tanh of a linear map of the
  mean valid feature), [`CoverageAttention`], drop attention, the maxout readout, the time loop and the recurrent
  cache ([`RecurrentDecoderCache`]); a subclass only defines its state and one step.
* [`GRUAttentionDecoder`] (ABM, Bian et al. AAAI 2022): GRU1 on the previous token's embedding, attention with GRU1's
  state as query, GRU2 on the context; output maxout(W_c c + W_h h + W_y E(y_prev)).
* [`LSTMAttentionDecoder`] (SAN-DA, Li et al. 2020): an LSTM on [E(y_prev); c'_prev], attention with its new state,
  e = w^T tanh(W_f f + W_q q + W_h h + W_s s) with q the 2-D sinusoidal position embedding of the feature map,
  context c = sum alpha f and c' = sum alpha (f + q) (fed back at the next step); output g(c, h) = maxout(W_c c + W_h h).

The coverage s is the running sum of all past attention maps (s_t = alpha_1 + ... + alpha_t; step t attends with
s_{t-1}). Decoding keeps the recurrent state, the coverage and the per-image projections in the cache, so `generate()`
feeds one token per step; the cache is reordered on beam search.

Shipped as remote code next to the weights: imports only torch and its sibling files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_hmer import HMERConfig
from .modeling_hmer_layers import image_position_encoding


class RecurrentDecoderCache:
    """Decoding state of an attention RNN: `state` (hidden/cell state, coverage, fed-back context) and `static`
    (per-image projections of the feature map, computed once); both are tensors with the batch first."""

    is_compileable = False

    def __init__(self):
        self.state: dict[str, torch.Tensor] = {}
        self.static: dict[str, torch.Tensor] = {}
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of decoder positions already processed."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search keeps the states of the surviving beams)."""
        for store in (self.state, self.static):
            for key, value in store.items():
                store[key] = value.index_select(0, beam_idx.to(value.device))


def drop_attention(alpha: torch.Tensor, prob: float, threshold: float) -> torch.Tensor:
    """SAN-DA's drop attention (training only), rule used here.

    For each row of `alpha` [B, L] (a distribution over valid positions, 0 on padding), with probability `prob`
    independently per row (= per sample and step): zero every weight >= `threshold` x the row's largest weight (so the
    peak is always suppressed, with the weights close to it) and renormalise the rest to sum 1. A row in which nothing
    would remain (e.g. uniform attention) is left unchanged. Padding stays 0.
    """
    chosen = torch.rand(alpha.shape[0], 1, device=alpha.device) < prob
    peak = alpha.amax(dim=-1, keepdim=True)
    kept = alpha.masked_fill(chosen & (alpha >= threshold * peak), 0.0)
    total = kept.sum(dim=-1, keepdim=True)
    return torch.where(chosen & (total > 1e-6), kept / total.clamp(min=1e-12), alpha)


class CoverageAttention(nn.Module):
    """Additive attention with coverage: e = v^T tanh(keys + W_h h + sum_k U_k(Q_k * s)), softmax over valid positions.

    `keys` are the per-image projections (U_a F, plus W_q q for SAN-DA) computed once. Each coverage branch k is a
    conv Q_k (1 -> coverage_channels, kernel k, padding k // 2) followed by a linear map U_k to the attention width
    (ABM's attention aggregation: kernels 11 and 5, 512 channels); with `coverage_channels=0` the conv maps straight
    to the attention width (U_k = identity). All branches are linear in s, so they are fused into one conv per call
    (exactly the same function, a fraction of the cost).
    """

    def __init__(self, feature_dim: int, query_dim: int, config: HMERConfig, position: bool):
        super().__init__()
        att = config.attention_dim
        self.feature_proj = nn.Linear(feature_dim, att)
        self.position_proj = nn.Linear(feature_dim, att, bias=False) if position else None
        self.query_proj = nn.Linear(query_dim, att, bias=False)
        channels = config.coverage_channels
        self.coverage_convs = nn.ModuleList(
            nn.Conv2d(1, channels or att, kernel_size=k, padding=k // 2, bias=False) for k in config.coverage_kernel_sizes
        )
        self.coverage_projs = (
            nn.ModuleList(nn.Linear(channels, att) for _ in config.coverage_kernel_sizes) if channels else None
        )
        self.score = nn.Linear(att, 1)

    def keys(self, features: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Per-image part of the logits' argument: U_a F (+ W_q q), [B, L, att]."""
        keys = self.feature_proj(features)
        if self.position_proj is not None:
            keys = keys + self.position_proj(positions)
        return keys

    def fused_coverage_kernel(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One conv weight [att, 1, K, K] (K = largest kernel) and bias [att] equal to the sum of all branches."""
        size = max(conv.kernel_size[0] for conv in self.coverage_convs)
        weight, bias = None, None
        for i, conv in enumerate(self.coverage_convs):
            w = conv.weight  # [channels, 1, k, k]
            if self.coverage_projs is not None:
                proj = self.coverage_projs[i]
                w = torch.einsum("ac,cikl->aikl", proj.weight, w)
                bias = proj.bias if bias is None else bias + proj.bias
            pad = (size - w.shape[-1]) // 2
            w = F.pad(w, (pad, pad, pad, pad))
            weight = w if weight is None else weight + w
        return weight, bias

    def forward(
        self,
        keys: torch.Tensor,
        query: torch.Tensor,
        coverage: torch.Tensor,
        valid: torch.Tensor,
        kernel: tuple[torch.Tensor, torch.Tensor | None],
    ) -> torch.Tensor:
        """Attention [B, L] for keys [B, L, att], query [B, Hq], coverage [B, h, w] and validity [B, h, w]."""
        weight, bias = kernel
        cov = F.conv2d(coverage.unsqueeze(1), weight.to(coverage.dtype), None if bias is None else bias.to(coverage.dtype),
                       padding=weight.shape[-1] // 2)  # fmt: skip
        cov = cov.flatten(2).transpose(1, 2)  # [B, L, att]
        energy = torch.tanh(keys + self.query_proj(query).unsqueeze(1) + cov.to(keys.dtype))
        logits = self.score(energy).squeeze(-1).float()
        return torch.softmax(logits.masked_fill(~valid.flatten(1), float("-inf")), dim=-1)


class AttentionRNNDecoder(nn.Module):
    """The shared part of the attention RNN decoders (see the module docstring); subclasses define the recurrence.

    `forward(input_ids, memory, memory_mask, cache=...)` returns the readout [B, T, hidden_size // 2] (what the model's
    linear head turns into logits) and a one-element tuple of attention maps [B, 1, T, h*w].
    """

    use_position = False  # SAN-DA: 2-D position embedding q in the attention and in the fed-back context
    readout_uses_embedding = True  # ABM: W_y E(y_prev) in the output

    def __init__(self, config: HMERConfig, feature_dim: int):
        super().__init__()
        hidden = config.hidden_size
        if hidden % 2:
            raise ValueError(f"hidden_size must be even (maxout pairs), got {hidden}")
        if self.use_position and feature_dim % 4:
            raise ValueError(f"the feature width must be a multiple of 4 for the 2-D position embedding, got {feature_dim}")
        self.config = config
        self.feature_dim = feature_dim
        self.embed = nn.Embedding(config.vocab_size, hidden)
        self.init_proj = nn.Linear(feature_dim, hidden)
        self.attention = CoverageAttention(feature_dim, hidden, config, position=self.use_position)
        self.readout_context = nn.Linear(feature_dim, hidden)
        self.readout_hidden = nn.Linear(hidden, hidden)
        self.readout_embed = nn.Linear(hidden, hidden) if self.readout_uses_embedding else None
        self.dropout = nn.Dropout(config.dropout)
        self.output_dim = hidden // 2

    # -- pieces ------------------------------------------------------------------------------------------------------

    def new_cache(self) -> RecurrentDecoderCache:
        return RecurrentDecoderCache()

    def prepare(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-image tensors computed once: flattened features, validity, attention keys (and f + q for SAN-DA)."""
        features = memory.flatten(1, 2)  # [B, L, C]
        static = {"features": features, "valid": memory_mask}
        positions = None
        if self.use_position:
            positions = image_position_encoding(memory_mask, self.feature_dim).to(features.dtype).flatten(1, 2)
            static["values_pos"] = features + positions
        static["keys"] = self.attention.keys(features, positions)
        return static

    def mean_feature(self, static: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean feature over each image's valid positions [B, C]."""
        valid = static["valid"].flatten(1).unsqueeze(-1).to(static["features"].dtype)
        return (static["features"] * valid).sum(1) / valid.sum(1).clamp(min=1)

    def initial_state(self, static: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """h_0 = tanh(W mean(F)) and an empty coverage; subclasses add their own entries."""
        valid = static["valid"]
        return {
            "hidden": torch.tanh(self.init_proj(self.mean_feature(static))),
            "coverage": torch.zeros(valid.shape, dtype=static["features"].dtype, device=valid.device),
        }

    def attend(
        self, query: torch.Tensor, state: dict[str, torch.Tensor], static: dict[str, torch.Tensor], kernel
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention alpha_t [B, L] (drop attention applied in training) and the updated coverage s_t = s_{t-1} + alpha_t."""
        alpha = self.attention(static["keys"], query, state["coverage"], static["valid"], kernel)
        if self.training and self.config.drop_attention_prob > 0:
            alpha = drop_attention(alpha, self.config.drop_attention_prob, self.config.drop_attention_threshold)
        alpha = alpha.to(static["features"].dtype)
        return alpha, state["coverage"] + alpha.view_as(state["coverage"])

    def step(self, emb, state, static, kernel):
        """One decoding step: (h_t for the readout, context c_t, alpha_t, new state)."""
        raise NotImplementedError

    def readout(self, context: torch.Tensor, hidden: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """maxout(W_c c + W_h h [+ W_y E(y_prev)]) over pairs of units, then dropout: [B, T, hidden_size // 2]."""
        x = self.readout_context(context) + self.readout_hidden(hidden)
        if self.readout_embed is not None:
            x = x + self.readout_embed(emb)
        x = x.unflatten(-1, (-1, 2)).amax(-1)
        return self.dropout(x)

    # -- the time loop -----------------------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.LongTensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: RecurrentDecoderCache | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Readout [B, T, hidden/2] for tokens [B, T] (step t reads token t and predicts token t+1).

        Positions after a sequence's end (padding) are computed like any other: the recurrence is causal, so they never
        affect earlier positions, and their targets are ignored by the loss.
        """
        if cache is not None and cache.static:
            static = cache.static
        else:
            static = self.prepare(memory, memory_mask)
        state = cache.state if cache is not None and cache.state else self.initial_state(static)
        kernel = self.attention.fused_coverage_kernel()
        emb = self.embed(input_ids)
        hiddens, contexts, alphas = [], [], []
        for t in range(input_ids.shape[1]):
            h, context, alpha, state = self.step(emb[:, t], state, static, kernel)
            hiddens.append(h)
            contexts.append(context)
            alphas.append(alpha)
        out = self.readout(torch.stack(contexts, 1), torch.stack(hiddens, 1), emb)
        if cache is not None:
            cache.static, cache.state = static, state
            cache.seen_tokens += input_ids.shape[1]
        return out, (torch.stack(alphas, 1).unsqueeze(1),)


class GRUAttentionDecoder(AttentionRNNDecoder):
    """ABM's decoder: two-stage conditional GRU with the attention aggregation module."""

    def __init__(self, config: HMERConfig, feature_dim: int):
        super().__init__(config, feature_dim)
        self.gru1 = nn.GRUCell(config.hidden_size, config.hidden_size)
        self.gru2 = nn.GRUCell(feature_dim, config.hidden_size)

    def step(self, emb, state, static, kernel):
        h1 = self.gru1(emb, state["hidden"])
        alpha, coverage = self.attend(h1, state, static, kernel)
        context = torch.bmm(alpha.unsqueeze(1), static["features"]).squeeze(1)
        h2 = self.gru2(context, h1)
        return h2, context, alpha, {"hidden": h2, "coverage": coverage}


class LSTMAttentionDecoder(AttentionRNNDecoder):
    """SAN-DA's decoder: LSTM on [E(y_prev); c'_prev], coverage attention with 2-D position embedding."""

    use_position = True
    readout_uses_embedding = False

    def __init__(self, config: HMERConfig, feature_dim: int):
        super().__init__(config, feature_dim)
        self.lstm = nn.LSTMCell(config.hidden_size + feature_dim, config.hidden_size)

    def initial_state(self, static):
        state = super().initial_state(static)
        state["cell"] = torch.zeros_like(state["hidden"])
        state["feedback"] = torch.zeros_like(static["features"][:, 0])  # c'_0 = 0
        return state

    def step(self, emb, state, static, kernel):
        h, cell = self.lstm(torch.cat((emb, state["feedback"]), -1), (state["hidden"], state["cell"]))
        alpha, coverage = self.attend(h, state, static, kernel)
        weights = alpha.unsqueeze(1)
        context = torch.bmm(weights, static["features"]).squeeze(1)
        feedback = torch.bmm(weights, static["values_pos"]).squeeze(1)
        return h, context, alpha, {"hidden": h, "cell": cell, "coverage": coverage, "feedback": feedback}


__all__ = [
    "AttentionRNNDecoder",
    "CoverageAttention",
    "GRUAttentionDecoder",
    "LSTMAttentionDecoder",
    "RecurrentDecoderCache",
    "drop_attention",
]
