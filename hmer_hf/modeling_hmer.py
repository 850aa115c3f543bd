"""HMER model family: image encoder + autoregressive LaTeX decoder, as a transformers `PreTrainedModel`.

The default member reproduces CoMER (Zhao & Gao, ECCV 2022): a DenseNet-B encoder and a post-LN Transformer decoder
whose cross-attention is refined by the Attention Refinement Module (ARM, coverage), trained left-to-right and
right-to-left at once, decoded by bidirectional beam search with rescoring.

Decoding is incremental: the self-attention keys/values and the ARM coverage (an exclusive cumulative sum of past
attention, i.e. a running sum) are kept in [`HMERDecoderCache`], so each step only computes its own row.

The other members are configurations of the same parts (see `HMERConfig.from_preset`): BTTR (no ARM), HMER-MTL
(CBAM inside the ARM + a structure-skeleton head), ABM (twin GRU decoders, `modeling_hmer_rnn.py`, with mutual
distillation) and SAN-DA (ResNet-18 encoder, `modeling_hmer_resnet.py`, + LSTM decoder with drop attention). One
`forward` composes encoder, decoder(s), heads and the configured losses; one `generate` serves all.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.generation.logits_process import LogitsProcessor, LogitsProcessorList
from transformers.generation.utils import GenerateBeamEncoderDecoderOutput
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.utils import ModelOutput

from .configuration_hmer import HMERConfig
from .modeling_hmer_layers import (
    MaskedBatchNorm2d,
    image_position_encoding,
    masked_avg_pool2d,
    word_position_encoding,
)
from .modeling_hmer_resnet import ResNetBackbone
from .modeling_hmer_rnn import GRUAttentionDecoder, LSTMAttentionDecoder, RecurrentDecoderCache

# ---------------------------------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HMEREncoderOutput(ModelOutput):
    """Encoder output: features [B, h, w, d] and their validity mask [B, h, w] (True = real image, False = padding)."""

    last_hidden_state: torch.FloatTensor | None = None
    feature_mask: torch.BoolTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


class DenseBottleneck(nn.Module):
    """DenseNet-B layer: 1x1 conv to 4*growth, 3x3 conv to growth (each BN-ReLU-dropout), concatenated to the input."""

    def __init__(self, in_channels: int, growth_rate: int, dropout: float):
        super().__init__()
        inter = 4 * growth_rate
        self.conv1 = nn.Conv2d(in_channels, inter, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inter)
        self.conv2 = nn.Conv2d(inter, growth_rate, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(growth_rate)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        # Zero the padding before the 3x3 conv so it sees exactly what zero-padding of the lone image would give.
        out = self.dropout(F.relu(self.bn2(self.conv2(out * mask))))
        return torch.cat((x, out), 1)


class DenseTransition(nn.Module):
    """Transition: 1x1 conv with compression, BN-ReLU-dropout, 2x2 average pooling (ceil mode, valid pixels) unless
    `pool` is off (then the padding is re-zeroed instead)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float, pool: bool = True):
        super().__init__()
        self.pool = pool
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.dropout(F.relu(self.bn(self.conv(x))))
        return masked_avg_pool2d(x, mask) if self.pool else x * mask


class DenseNetBackbone(nn.Module):
    """CoMER's DenseNet-B: 7x7/2 stem, max-pool, dense blocks with transitions; stride 16, 684 channels by default.

    Padding-invariant: every operation that mixes neighbouring pixels sees zeros (or, for average pooling, only valid
    pixels) outside each image, so an image gives the same features alone or padded in a batch; on an unpadded image
    the computation is exactly CoMER's.
    """

    def __init__(self, config: HMERConfig):
        super().__init__()
        growth, depth, drop = config.growth_rate, config.num_dense_layers, config.encoder_dropout
        channels = config.stem_channels
        self.stem = nn.Conv2d(1, channels, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem_norm = nn.BatchNorm2d(channels)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for b in range(config.num_dense_blocks):
            layers = nn.ModuleList()
            for _ in range(depth):
                layers.append(DenseBottleneck(channels, growth, drop))
                channels += growth
            self.blocks.append(layers)
            if b < config.num_dense_blocks - 1:
                out = int(math.floor(channels * config.reduction))
                pool = True if config.transition_pooling is None else config.transition_pooling[b]
                self.transitions.append(DenseTransition(channels, out, drop, pool))
                channels = out
        self.out_norm = nn.BatchNorm2d(channels)
        self.out_channels = channels

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, C, h, w] and the mask downsampled alongside ([B, H, W] -> [B, h, w], True = valid)."""
        # Each stride-2 op (conv pad 3, ceil-mode pools) yields ceil(n/2) positions, exactly what [0::2] keeps.
        m = mask.unsqueeze(1).to(x.dtype)
        x = F.relu(self.stem_norm(self.stem(x * m)))
        if self.blocks[0][0].conv2.weight.is_contiguous(memory_format=torch.channels_last):
            # Weights in channels-last (`model.to(memory_format=torch.channels_last)`, the trainer's default: ~1.5x
            # faster convolutions on CPU): the activations follow.
            x = x.contiguous(memory_format=torch.channels_last)
        mask = mask[:, 0::2, 0::2]
        # After ReLU every value is >= 0, so zeroed padding never wins the max.
        x = F.max_pool2d(x * mask.unsqueeze(1).to(x.dtype), 2, ceil_mode=True)
        mask = mask[:, 0::2, 0::2]
        for i, block in enumerate(self.blocks):
            m = mask.unsqueeze(1).to(x.dtype)
            for layer in block:
                x = layer(x, m)
            if i < len(self.transitions):
                x = self.transitions[i](x, m)
                if self.transitions[i].pool:
                    mask = mask[:, 0::2, 0::2]
        return self.out_norm(x), mask


def build_backbone(config: HMERConfig) -> nn.Module:
    """The convolutional backbone named by `config.encoder_type`."""
    if config.encoder_type == "densenet":
        return DenseNetBackbone(config)
    if config.encoder_type == "resnet18":
        return ResNetBackbone(config)
    raise NotImplementedError(f"encoder_type={config.encoder_type!r} is not implemented")


class HMEREncoder(nn.Module):
    """Backbone -> 1x1 projection to d_model -> + 2-D position encoding (valid extent) -> LayerNorm.

    The projection path serves the Transformer decoder; the attention RNN decoders (ABM, SAN-DA) read the backbone
    features themselves (their attention has its own projection), so for them the encoder returns the backbone output
    [B, h, w, C] as is (`output_dim` = C).
    """

    main_input_name = "pixel_values"

    def __init__(self, config: HMERConfig):
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config)
        self.project = not config.is_recurrent
        if self.project:
            self.proj = nn.Conv2d(self.backbone.out_channels, config.d_model, kernel_size=1)
            self.norm = nn.LayerNorm(config.d_model)
        self.output_dim = config.d_model if self.project else self.backbone.out_channels

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> HMEREncoderOutput:
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 1:
            raise ValueError(
                f"pixel_values must be [batch, 1, height, width] (grey, white ink on black), got {tuple(pixel_values.shape)}"
            )
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], device=pixel_values.device)
        mask = pixel_mask.bool()
        feats, feat_mask = self.backbone(pixel_values, mask)
        if self.project:
            hidden = self.proj(feats).permute(0, 2, 3, 1)  # [B, h, w, d]
            hidden = hidden + image_position_encoding(feat_mask, self.config.d_model).to(hidden.dtype)
            hidden = self.norm(hidden)
        else:
            hidden = feats.permute(0, 2, 3, 1)
        return HMEREncoderOutput(
            last_hidden_state=hidden,
            feature_mask=feat_mask,
            hidden_states=(feats,) if output_hidden_states else None,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Attention Refinement Module and the Transformer decoder
# ---------------------------------------------------------------------------------------------------------------------


class MaskedCBAM(nn.Module):
    """CBAM (Woo et al. 2018) over valid pixels: channel attention, then spatial attention (HMER-MTL, inside the ARM).

    Channel: sigmoid(MLP(avg) + MLP(max)) with a shared MLP C -> C/2 -> C, the average and maximum taken over each
    map's valid pixels only. Spatial: the per-pixel channel mean and max (zero on padding) -> 7x7 conv -> BatchNorm
    (statistics of valid pixels) -> sigmoid. So a padded map gives the same result on its valid pixels as alone.
    """

    def __init__(self, channels: int, reduction: int = 2, kernel_size: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.spatial = nn.Conv2d(2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_norm = MaskedBatchNorm2d(1)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [N, C, h, w], valid [N, h, w] (bool) -> x reweighted, same shape (values on padding are meaningless)."""
        m = valid.unsqueeze(1).to(x.dtype)
        avg = (x * m).sum((2, 3)) / m.sum((2, 3)).clamp(min=1)
        peak = x.masked_fill(~valid.unsqueeze(1), float("-inf")).amax((2, 3))
        x = x * torch.sigmoid(self.mlp(avg) + self.mlp(peak))[:, :, None, None]
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), dim=1) * m
        return x * torch.sigmoid(self.spatial_norm(self.spatial(pooled), valid))


class AttentionRefinementModule(nn.Module):
    """CoMER's ARM: turns past attention (coverage) into a per-head correction of the cross-attention logits.

    With `config.arm_cbam` (HMER-MTL), CBAM reweights the hidden maps after the 5x5 conv + ReLU, before masking.
    """

    def __init__(self, config: HMERConfig):
        super().__init__()
        heads = config.num_attention_heads
        self.cross_coverage = config.cross_coverage
        self.self_coverage = config.self_coverage
        in_channels = heads * (int(config.cross_coverage) + int(config.self_coverage))
        k = config.arm_kernel_size
        self.conv = nn.Conv2d(in_channels, config.arm_channels, kernel_size=k, padding=k // 2)
        self.cbam = MaskedCBAM(config.arm_channels) if config.arm_cbam else None
        self.proj = nn.Conv2d(config.arm_channels, heads, kernel_size=1, bias=False)
        self.norm = MaskedBatchNorm2d(heads)

    def forward(
        self,
        prev_attn: torch.Tensor,
        curr_attn: torch.Tensor,
        valid: torch.Tensor,
        past_sum: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correction [B, heads, T, L] for attention maps [B, heads, T, L]; also the new running sum [B, C, L].

        `past_sum` is the sum of the stacked maps of all earlier steps (incremental decoding); the exclusive cumulative
        sum over this call's T steps is added to it, so full-prefix and step-by-step decoding agree exactly.
        """
        maps = []
        if self.cross_coverage:
            maps.append(prev_attn)
        if self.self_coverage:
            maps.append(curr_attn)
        stacked = torch.cat(maps, dim=1)  # [B, C, T, L]
        if stacked.shape[2] == 1:  # one step (incremental decoding): no earlier step in this call
            coverage, new_sum = torch.zeros_like(stacked), stacked[:, :, 0]
        else:
            coverage = stacked.cumsum(dim=2) - stacked
            new_sum = stacked.sum(dim=2)
        if past_sum is not None:
            coverage = coverage + past_sum.unsqueeze(2)
            new_sum = new_sum + past_sum
        b, c, t, _ = coverage.shape
        h, w = valid.shape[1:]
        # Channels-last: the 5x5 convolution over B*T coverage maps is most of beam-search time; on CPU it runs ~2x
        # faster in this layout (and the ops after it keep the layout).
        coverage = coverage.permute(0, 2, 3, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)  # one copy, into NHWC
        valid_bt = valid.unsqueeze(1).expand(b, t, h, w).reshape(b * t, h, w)
        out = F.relu(self.conv(coverage), inplace=True)
        if self.cbam is not None:
            out = self.cbam(out, valid_bt)
        # Zero the padding. The 1x1 projection has no bias, so masking its (fewer) output channels is the same thing.
        out = self.proj(out) * valid_bt.unsqueeze(1).to(out.dtype)
        out = self.norm(out, valid_bt)
        out = out.reshape(b, t, -1, h * w).permute(0, 2, 1, 3)
        return out, new_sum


class HMERDecoderCache:
    """Decoding state: per-layer self-attention keys/values, cross-attention keys/values and ARM running sums."""

    is_compileable = False

    def __init__(self, num_layers: int):
        self.self_k: list[torch.Tensor | None] = [None] * num_layers
        self.self_v: list[torch.Tensor | None] = [None] * num_layers
        self.cross_k: list[torch.Tensor | None] = [None] * num_layers
        self.cross_v: list[torch.Tensor | None] = [None] * num_layers
        self.coverage: list[torch.Tensor | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Number of decoder positions already processed."""
        return self.seen_tokens

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Select batch rows (beam search keeps the states of the surviving beams).

        The cross-attention keys/values are not reordered: they come from the image features, which `generate()`
        repeats for each beam, and beam search only ever picks among the beams of the same image, so every row of a
        beam group already holds the same keys/values (reordering them was ~1/5 of beam-search time on CPU).
        """
        for store in (self.self_k, self.self_v, self.coverage):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t.index_select(0, beam_idx.to(t.device))


class HMERAttention(nn.Module):
    """Multi-head attention with separate q/k/v projections (so cross keys/values can be cached once)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, d] -> [B, heads, T, head_dim]."""
        b, t, _ = x.shape
        return x.view(b, t, self.heads, self.head_dim).transpose(1, 2)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        """[B, heads, T, head_dim] -> [B, T, d] through the output projection."""
        b, _, t, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, t, -1))

    def masked_softmax(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """Softmax over keys where `allowed` (broadcastable bool), then attention dropout."""
        attn = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
        return F.dropout(attn, p=self.dropout, training=self.training)


class HMERDecoderLayer(nn.Module):
    """Post-LN Transformer decoder layer: self-attention, cross-attention (optionally ARM-refined), ReLU FFN."""

    def __init__(self, config: HMERConfig):
        super().__init__()
        d = config.d_model
        self.self_attn = HMERAttention(d, config.num_attention_heads, config.dropout)
        self.cross_attn = HMERAttention(d, config.num_attention_heads, config.dropout)
        self.fc1 = nn.Linear(d, config.dim_feedforward)
        self.fc2 = nn.Linear(config.dim_feedforward, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_allowed: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
        valid: torch.Tensor,
        arm: AttentionRefinementModule | None,
        prev_attn: torch.Tensor | None,
        cache: HMERDecoderCache | None,
        idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the new hidden states and this layer's (refined) cross-attention [B, heads, T, L]."""
        sa = self.self_attn
        q, k, v = sa.split(sa.q_proj(x)), sa.split(sa.k_proj(x)), sa.split(sa.v_proj(x))
        if cache is not None:
            if cache.self_k[idx] is not None:
                k = torch.cat((cache.self_k[idx], k), dim=2)
                v = torch.cat((cache.self_v[idx], v), dim=2)
            cache.self_k[idx], cache.self_v[idx] = k, v
        attn = sa.masked_softmax((q * sa.scale) @ k.transpose(-1, -2), self_allowed)
        x = self.norm1(x + self.dropout(sa.merge(attn @ v)))

        ca = self.cross_attn
        q = ca.split(ca.q_proj(x)) * ca.scale
        logits = q @ cross_k.transpose(-1, -2)  # [B, heads, T, L]
        allowed = valid.flatten(1)[:, None, None, :]
        attn = ca.masked_softmax(logits, allowed)
        if arm is not None:
            past = cache.coverage[idx] if cache is not None else None
            correction, new_sum = arm(prev_attn, attn, valid, past)
            if cache is not None:
                cache.coverage[idx] = new_sum
            attn = ca.masked_softmax(logits - correction.to(logits.dtype), allowed)
        x = self.norm2(x + self.dropout(ca.merge(attn @ cross_v)))

        x = self.norm3(x + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x))))))
        return x, attn


class HMERTransformerDecoder(nn.Module):
    """Embedding + LN + 1-D position encoding + LN, N post-LN layers, one ARM shared by layers 2..N."""

    def __init__(self, config: HMERConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.embed_norm = nn.LayerNorm(config.d_model)
        self.pos_norm = nn.LayerNorm(config.d_model)
        self.layers = nn.ModuleList(HMERDecoderLayer(config) for _ in range(config.num_decoder_layers))
        self.arm = AttentionRefinementModule(config) if config.use_coverage else None
        self.output_dim = config.d_model

    def new_cache(self) -> HMERDecoderCache:
        return HMERDecoderCache(len(self.layers))

    def forward(
        self,
        input_ids: torch.LongTensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: HMERDecoderCache | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """Hidden states [B, T, d] for tokens [B, T] given memory [B, h, w, d]; also each layer's cross-attention."""
        b, t = input_ids.shape
        past = cache.seen_tokens if cache is not None else 0
        x = self.embed_norm(self.embed(input_ids))
        positions = torch.arange(past, past + t, device=input_ids.device)
        x = self.pos_norm(x + word_position_encoding(positions, self.config.d_model).to(x.dtype))

        # Causal mask over all (past + current) key positions; padded decoder positions are never attended to.
        keys = torch.arange(past + t, device=input_ids.device)
        allowed = (keys[None, :] <= positions[:, None])[None, None]  # [1, 1, T, past+T]
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, -(past + t) :].bool()[:, None, None, :]

        memory_flat = memory.flatten(1, 2)  # [B, L, d]
        attentions = []
        prev_attn = None
        for i, layer in enumerate(self.layers):
            if cache is not None and cache.cross_k[i] is not None:
                ck, cv = cache.cross_k[i], cache.cross_v[i]
            else:
                ca = layer.cross_attn
                # Contiguous once here, so the per-step products do not copy the (large) keys/values again.
                ck = ca.split(ca.k_proj(memory_flat)).contiguous()
                cv = ca.split(ca.v_proj(memory_flat)).contiguous()
                if cache is not None:
                    cache.cross_k[i], cache.cross_v[i] = ck, cv
            arm = self.arm if i > 0 else None
            x, prev_attn = layer(x, allowed, ck, cv, memory_mask, arm, prev_attn, cache, i)
            attentions.append(prev_attn)
        if cache is not None:
            cache.seen_tokens += t
        return x, tuple(attentions)


def build_decoder(config: HMERConfig, memory_dim: int) -> nn.Module:
    """The decoder named by `config.decoder_type`, reading encoder features of width `memory_dim`.

    Every decoder maps (input_ids, memory [B, h, w, memory_dim], memory_mask, attention_mask, cache) to hidden states
    [B, T, decoder.output_dim] and a tuple of attention maps, and makes its own cache with `new_cache()`.
    """
    if config.decoder_type == "transformer":
        return HMERTransformerDecoder(config)
    if config.decoder_type == "gru":
        return GRUAttentionDecoder(config, memory_dim)
    if config.decoder_type == "lstm":
        return LSTMAttentionDecoder(config, memory_dim)
    raise NotImplementedError(f"decoder_type={config.decoder_type!r} is not implemented")


# ---------------------------------------------------------------------------------------------------------------------
# Losses shared by the family
# ---------------------------------------------------------------------------------------------------------------------


def mutual_kl_divergence(
    l2r_logits: torch.Tensor, r2l_logits: torch.Tensor, lengths: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ABM's mutual distillation term T^2 * KL(p_L2R || p_R2L), averaged over aligned token positions.

    `l2r_logits`, `r2l_logits` [B, T+1, V] come from the decoder inputs of [`HMERForConditionalGeneration.build_decoder_io`]
    and `lengths` [B] are the label lengths n. L2R position k predicts y_k; R2L position n-1-k predicts the same y_k, so
    each sample is aligned within its own length (ABM's code flips the padded batch instead, which misaligns every
    sample shorter than the longest). The end positions (k = n: L2R predicts </s>, R2L predicts <s>, different classes)
    and padding are excluded. Both distributions are softened by T; gradients reach both directions (as in ABM's code).
    """
    t = l2r_logits.shape[1]
    k = torch.arange(t, device=l2r_logits.device)[None, :]
    aligned = (lengths[:, None] - 1 - k).clamp(min=0)
    valid = k < lengths[:, None]
    r2l = r2l_logits.gather(1, aligned.unsqueeze(-1).expand(-1, -1, r2l_logits.shape[-1]))
    log_p = torch.log_softmax(l2r_logits.float() / temperature, dim=-1)
    log_q = torch.log_softmax(r2l.float() / temperature, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    if not valid.any():
        return kl.sum() * 0.0
    return temperature**2 * kl[valid].mean()


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class HMERSeq2SeqLMOutput(Seq2SeqLMOutput):
    r"""[`Seq2SeqLMOutput`] plus the parts of the training loss, for logging.

    `loss = ce_loss + skeleton_loss_weight * skeleton_loss + mutual_kl_weight * mutual_kl_loss` (terms that a
    configuration does not use are None).

    ce_loss: cross-entropy of the main head (both directions; see `config.direction_loss_reduction`).
    skeleton_loss: cross-entropy of the structure-skeleton head (HMER-MTL).
    mutual_kl_loss: T^2 * KL(p_L2R || p_R2L) over aligned positions (ABM), see [`mutual_kl_divergence`].
    skeleton_logits: the skeleton head's logits [rows, T, vocab_size + 1] (the last class is `<space>`).
    """

    ce_loss: torch.FloatTensor | None = None
    skeleton_loss: torch.FloatTensor | None = None
    mutual_kl_loss: torch.FloatTensor | None = None
    skeleton_logits: torch.FloatTensor | None = None


class HMERPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing shared by the family."""

    config_class = HMERConfig
    config: HMERConfig
    base_model_prefix = "hmer"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, (nn.GRUCell, nn.LSTMCell)):
            init.xavier_uniform_(module.weight_ih)
            init.orthogonal_(module.weight_hh)
            init.zeros_(module.bias_ih)
            init.zeros_(module.bias_hh)


class HMERForConditionalGeneration(HMERPreTrainedModel, GenerationMixin):
    """Image -> LaTeX tokens. `forward` trains (builds decoder inputs from `labels`); `generate` decodes.

    One forward/loss path for the whole family: encoder -> decoder(s) -> linear head(s), then the losses the
    configuration asks for (cross-entropy; + skeleton cross-entropy; + mutual KL).

    With `config.bidirectional`, training duplicates the batch: L2R `[bos] y -> y [eos]` and R2L
    `[eos] rev(y) -> rev(y) [bos]`, through one shared decoder (CoMER, BTTR, HMER-MTL) or, with
    `config.twin_decoders`, through a separate R2L decoder and head (ABM); the returned logits then have 2*B rows (L2R
    first). Decoding uses the L2R decoder unless `direction="r2l"` is passed (bidirectional rescoring does this).
    """

    def __init__(self, config: HMERConfig):
        super().__init__(config)
        self.encoder = HMEREncoder(config)
        self.decoder = build_decoder(config, self.encoder.output_dim)
        self.lm_head = nn.Linear(self.decoder.output_dim, config.vocab_size)
        if config.twin_decoders:
            self.r2l_decoder = build_decoder(config, self.encoder.output_dim)
            self.r2l_lm_head = nn.Linear(self.decoder.output_dim, config.vocab_size)
        if config.skeleton_head:
            ids = config.skeleton_token_ids or []
            if not ids or max(ids) >= config.vocab_size or min(ids) < 0:
                raise ValueError(f"skeleton_token_ids must be ids < vocab_size ({config.vocab_size}), got {ids}")
            # One extra class, `<space>` = vocab_size: the tokenizer's vocabulary is untouched.
            self.skeleton_head = nn.Linear(self.decoder.output_dim, config.vocab_size + 1)
        self.post_init()
        # from_pretrained replaces this with the saved generation_config.json when there is one.
        self.generation_config = default_generation_config(config)

    # -- transformers hooks ------------------------------------------------------------------------------------------

    def get_encoder(self, modality: str | None = None) -> nn.Module:
        return self.encoder

    def get_decoder(self) -> nn.Module:
        return self.decoder

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_input_embeddings(self) -> nn.Module:
        return self.decoder.embed

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The decoding state includes coverage (ARM sums, RNN coverage and states): the model brings its own cache.
        return False

    def prepare_inputs_for_generation(
        self,
        decoder_input_ids: torch.LongTensor,
        past_key_values: HMERDecoderCache | RecurrentDecoderCache | None = None,
        encoder_outputs: HMEREncoderOutput | None = None,
        use_cache: bool | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        direction: str = "l2r",
        **kwargs,
    ) -> dict:
        if past_key_values is not None:
            decoder_input_ids = decoder_input_ids[:, past_key_values.get_seq_length() :]
        return {
            "decoder_input_ids": decoder_input_ids,
            "encoder_outputs": encoder_outputs,
            "past_key_values": past_key_values,
            "use_cache": use_cache,
            "decoder_attention_mask": decoder_attention_mask,
            "direction": direction,
        }

    # -- forward -----------------------------------------------------------------------------------------------------

    def build_decoder_io(self, labels: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """Decoder inputs and targets from labels [B, T] (pad or -100 = padding): L2R, and R2L appended if bidirectional."""
        cfg = self.config
        pad, bos, eos = cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id
        tokens = labels.masked_fill(labels == -100, pad)
        valid = tokens != pad
        lengths = valid.sum(1)
        b, t = tokens.shape
        col = torch.arange(t + 1, device=tokens.device)[None, :]

        def io(seq: torch.Tensor, start: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
            padded = F.pad(seq, (0, 1), value=pad)
            inputs = torch.cat((torch.full((b, 1), start, device=seq.device, dtype=seq.dtype), seq), dim=1)
            inputs = inputs.masked_fill(col > lengths[:, None], pad)
            targets = padded.masked_fill(col == lengths[:, None], end).masked_fill(col > lengths[:, None], -100)
            return inputs, targets

        l2r_in, l2r_tgt = io(tokens, bos, eos)
        if not cfg.bidirectional:
            return l2r_in, l2r_tgt
        # Reverse each sequence within its own length; positions past the length stay padding.
        rev_idx = (lengths[:, None] - 1 - torch.arange(t, device=tokens.device)[None, :]).clamp(min=0)
        reversed_tokens = tokens.gather(1, rev_idx).masked_fill(~valid, pad)
        r2l_in, r2l_tgt = io(reversed_tokens, eos, bos)
        return torch.cat((l2r_in, r2l_in)), torch.cat((l2r_tgt, r2l_tgt))

    def skeleton_targets(self, targets: torch.LongTensor) -> torch.LongTensor:
        """HMER-MTL's structure skeleton of targets: every token outside `config.skeleton_token_ids` and pad/bos/eos
        becomes the `<space>` class (`vocab_size`); -100 stays -100."""
        cfg = self.config
        kept = [*cfg.skeleton_token_ids, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id, -100]
        keep = torch.isin(targets, torch.tensor(kept, device=targets.device))
        return targets.masked_fill(~keep, cfg.vocab_size)

    def decode(
        self,
        input_ids: torch.LongTensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        direction: str = "l2r",
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """(hidden states, attention maps, logits) of the decoder serving `direction` ("l2r"/"r2l"; one shared decoder
        serves both unless `config.twin_decoders`)."""
        if direction not in ("l2r", "r2l"):
            raise ValueError(f"direction must be 'l2r' or 'r2l', got {direction!r}")
        decoder, head = self.decoder, self.lm_head
        if direction == "r2l" and self.config.twin_decoders:
            decoder, head = self.r2l_decoder, self.r2l_lm_head
        hidden, attentions = decoder(input_ids, memory, memory_mask, attention_mask=attention_mask, cache=cache)
        return hidden, attentions, head(hidden)

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.LongTensor | None = None,
        encoder_outputs: HMEREncoderOutput | tuple | None = None,
        past_key_values: HMERDecoderCache | RecurrentDecoderCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        direction: str = "l2r",
        **kwargs,
    ) -> HMERSeq2SeqLMOutput:
        r"""
        pixel_values (`[B, 1, H, W]`): white ink on black in [0, 1], from [`HMERImageProcessor`].
        pixel_mask (`[B, H, W]`): 1 for real pixels, 0 for batch padding.
        labels (`[B, T]`): token ids without special tokens, padded with -100 (or pad). Decoder inputs are built from
            them (both directions when `config.bidirectional`), and the loss is computed over non-padding targets.
        direction (`"l2r"` or `"r2l"`): which decoder reads `decoder_input_ids` (only matters with `twin_decoders`).
        """
        cfg = self.config
        if encoder_outputs is None:
            if pixel_values is None:
                raise ValueError("Pass pixel_values (or precomputed encoder_outputs).")
            encoder_outputs = self.encoder(pixel_values, pixel_mask, output_hidden_states=output_hidden_states)
        elif isinstance(encoder_outputs, (tuple, list)):
            encoder_outputs = HMEREncoderOutput(*encoder_outputs)
        memory, memory_mask = encoder_outputs.last_hidden_state, encoder_outputs.feature_mask

        targets, lengths, both = None, None, False
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids, targets = self.build_decoder_io(labels)
            decoder_attention_mask = None
            both = cfg.bidirectional
            lengths = (labels.masked_fill(labels == -100, cfg.pad_token_id) != cfg.pad_token_id).sum(1)
        elif labels is not None:
            targets = labels
        if decoder_input_ids is None:
            raise ValueError("Pass labels (training) or decoder_input_ids (decoding).")

        cache = None
        if use_cache and not (both and cfg.twin_decoders):
            decoder = self.r2l_decoder if direction == "r2l" and cfg.twin_decoders else self.decoder
            cache = past_key_values if past_key_values is not None else decoder.new_cache()
        b = memory.shape[0]
        if both and cfg.twin_decoders:
            l2r = self.decode(decoder_input_ids[:b], memory, memory_mask, direction="l2r")
            r2l = self.decode(decoder_input_ids[b:], memory, memory_mask, direction="r2l")
            hidden, logits = torch.cat((l2r[0], r2l[0])), torch.cat((l2r[2], r2l[2]))
            cross_attentions = tuple(torch.cat(pair) for pair in zip(l2r[1], r2l[1]))
        else:
            repeat = decoder_input_ids.shape[0] // b
            if repeat > 1:
                memory, memory_mask = memory.repeat(repeat, 1, 1, 1), memory_mask.repeat(repeat, 1, 1)
            hidden, cross_attentions, logits = self.decode(
                decoder_input_ids, memory, memory_mask, decoder_attention_mask, cache, direction
            )

        loss = ce_loss = skeleton_loss = mutual_kl_loss = skeleton_logits = None
        if cfg.skeleton_head and targets is not None:
            skeleton_logits = self.skeleton_head(hidden)
        if targets is not None:
            if both and cfg.direction_loss_reduction == "sum":
                n = targets.shape[0] // 2
                ce_loss = sum(
                    F.cross_entropy(lg.float().flatten(0, 1), tg.flatten(), ignore_index=-100)
                    for lg, tg in ((logits[:n], targets[:n]), (logits[n:], targets[n:]))
                )
            else:
                ce_loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
            loss = ce_loss
            if cfg.skeleton_head:
                skeleton_loss = F.cross_entropy(
                    skeleton_logits.float().flatten(0, 1), self.skeleton_targets(targets).flatten(), ignore_index=-100
                )
                loss = loss + cfg.skeleton_loss_weight * skeleton_loss
            if both and cfg.mutual_learning:
                mutual_kl_loss = mutual_kl_divergence(logits[:b], logits[b:], lengths, cfg.mutual_kl_temperature)
                loss = loss + cfg.mutual_kl_weight * mutual_kl_loss

        return HMERSeq2SeqLMOutput(
            loss=loss,
            logits=logits,
            past_key_values=cache,
            decoder_hidden_states=(hidden,) if output_hidden_states else None,
            cross_attentions=cross_attentions if output_attentions else None,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            ce_loss=ce_loss,
            skeleton_loss=skeleton_loss,
            mutual_kl_loss=mutual_kl_loss,
            skeleton_logits=skeleton_logits,
        )

    # -- decoding ----------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor | None = None,
        pixel_mask: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        bidirectional_rescoring: bool | None = None,
        syntax_constraints: bool | None = None,
        **kwargs,
    ):
        """HF `generate()`; with `num_beams > 1` on a bidirectionally trained model, beams are searched in both
        directions and each finished hypothesis is rescored by teacher-forcing the other direction (CoMER).

        `bidirectional_rescoring` (default: `config.bidirectional_rescoring` when `config.bidirectional`) turns the
        rescoring on or off. `syntax_constraints` (default: `config.syntax_constrained_decoding`) keeps every
        sequence within the LaTeX grammar of the training labels ([`LatexSyntaxLogitsProcessor`]), after any
        `logits_processor` passed in. Returns the usual output classes (sequences are always in left-to-right order).
        """
        if syntax_constraints is None:
            syntax_constraints = getattr(self.config, "syntax_constrained_decoding", False)
        if syntax_constraints:
            syntax = LatexSyntaxLogitsProcessor(
                self.config.syntax_token_ids, self.config.bos_token_id, self.config.eos_token_id
            )
            kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), syntax])
        gen_config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        num_beams = kwargs.get("num_beams", gen_config.num_beams) or 1
        if bidirectional_rescoring is None:
            bidirectional_rescoring = bool(
                getattr(self.config, "bidirectional_rescoring", False) and self.config.bidirectional
            )
        if not bidirectional_rescoring or num_beams <= 1:
            return super().generate(
                pixel_values, pixel_mask=pixel_mask, generation_config=generation_config, **kwargs
            )
        return self._bidirectional_generate(pixel_values, pixel_mask, gen_config, **kwargs)

    def _bidirectional_generate(self, pixel_values, pixel_mask, gen_config: GenerationConfig, **kwargs):
        """Beam search L2R and R2L, rescore every finished hypothesis in both directions, keep the best sums."""
        cfg = self.config
        pad, bos, eos = cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id
        model_kwargs = gen_config.update(**kwargs)
        num_beams, num_return = gen_config.num_beams, gen_config.num_return_sequences or 1
        alpha = gen_config.length_penalty if gen_config.length_penalty is not None else 1.0
        if num_return > num_beams:
            raise ValueError(f"num_return_sequences ({num_return}) must be <= num_beams ({num_beams})")
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], device=pixel_values.device)
        encoder_outputs = self.encoder(pixel_values, pixel_mask)
        batch = pixel_values.shape[0]

        # Per image: the hypotheses of both directions (left-to-right order), and whether each reached its end token
        # (beam search also returns hypotheses cut at max_new_tokens; they are only kept when none ended).
        candidates: list[list[list[int]]] = [[] for _ in range(batch)]
        ended: list[list[bool]] = [[] for _ in range(batch)]
        for start, end in ((bos, eos), (eos, bos)):
            direction_config = copy.deepcopy(gen_config)
            direction_config.update(
                num_return_sequences=num_beams,
                decoder_start_token_id=start,
                eos_token_id=end,
                return_dict_in_generate=False,
                output_scores=False,
                output_logits=False,
                output_attentions=False,
                output_hidden_states=False,
            )
            out = GenerationMixin.generate(
                self,
                pixel_values,
                pixel_mask=pixel_mask,
                encoder_outputs=copy.copy(encoder_outputs),
                generation_config=direction_config,
                direction="l2r" if start == bos else "r2l",
                **model_kwargs,
            )
            for row, seq in enumerate(out.tolist()):
                tokens = [tok for tok in seq[1:] if tok not in (pad, bos, eos)]
                candidates[row // num_beams].append(tokens if start == bos else tokens[::-1])
                ended[row // num_beams].append(end in seq[1:])

        # Score each distinct candidate in both directions by teacher forcing, in one batch per direction.
        flat, owner = [], []
        for row, cands in enumerate(candidates):
            if any(ended[row]):
                cands = [c for c, done in zip(cands, ended[row]) if done]
            for tokens in dict.fromkeys(map(tuple, cands)):
                flat.append(list(tokens))
                owner.append(row)
        owner_t = torch.tensor(owner, device=pixel_values.device)
        scores = self.sequence_log_probs(encoder_outputs, owner_t, flat, direction="l2r")
        scores = scores + self.sequence_log_probs(encoder_outputs, owner_t, flat, direction="r2l")
        lengths = torch.tensor([len(s) + 1 for s in flat], device=scores.device, dtype=scores.dtype)
        scores = scores / lengths**alpha

        best_seqs, best_scores = [], []
        for row in range(batch):
            idx = (owner_t == row).nonzero().flatten()
            order = idx[scores[idx].argsort(descending=True)][:num_return]
            for i in order.tolist():
                best_seqs.append([bos] + flat[i] + [eos])
                best_scores.append(scores[i])
        width = max(len(s) for s in best_seqs)
        sequences = torch.full((len(best_seqs), width), pad, dtype=torch.long, device=pixel_values.device)
        for i, s in enumerate(best_seqs):
            sequences[i, : len(s)] = torch.tensor(s, device=sequences.device)
        if not gen_config.return_dict_in_generate:
            return sequences
        return GenerateBeamEncoderDecoderOutput(sequences=sequences, sequences_scores=torch.stack(best_scores))

    @torch.no_grad()
    def sequence_log_probs(
        self,
        encoder_outputs: HMEREncoderOutput,
        rows: torch.LongTensor,
        sequences: list[list[int]],
        direction: str = "l2r",
    ) -> torch.Tensor:
        """Teacher-forced log p(sequence + end token | image) in one direction, for token lists (no specials);
        `rows` maps each sequence to its image in `encoder_outputs`."""
        cfg = self.config
        pad, bos, eos = cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id
        start, end = (bos, eos) if direction == "l2r" else (eos, bos)
        width = max(len(s) for s in sequences) + 1
        inputs = torch.full((len(sequences), width), pad, dtype=torch.long, device=rows.device)
        targets = torch.full_like(inputs, -100)
        for i, s in enumerate(sequences):
            s = s if direction == "l2r" else s[::-1]
            inputs[i, : len(s) + 1] = torch.tensor([start] + s, device=rows.device)
            targets[i, : len(s) + 1] = torch.tensor(s + [end], device=rows.device)
        memory = encoder_outputs.last_hidden_state.index_select(0, rows)
        memory_mask = encoder_outputs.feature_mask.index_select(0, rows)
        _, _, logits = self.decode(inputs, memory, memory_mask, attention_mask=inputs != pad, direction=direction)
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(targets == -100, 0.0).sum(-1)


class LatexSyntaxLogitsProcessor(LogitsProcessor):
    r"""Keeps decoding within the grammar of normalised CROHME LaTeX, left-to-right and right-to-left.

    In the canonical captions (all 8,835 training and 986 CROHME 2014 test labels), `{` only ever follows `^`, `_`,
    `\frac`, `\sqrt`, the `]` of `\sqrt[n]`, or the `}` that closes a `\frac` numerator; `^`, `_` and `\frac` are
    always followed by `{`, `\sqrt` by `{` or `[`, and groups are never empty. Left to right (rows that start with
    the `bos` token) this bans:
    - after `^`, `_`, `\frac` or a closed `\frac` numerator: everything but `{`; after `\sqrt`: all but `{` and `[`;
    - `{` anywhere else except after `]`; `}` with no group open or right after `{`; the end token while a group is
      open.
    Right to left (rows that start with `eos`, the sequence reversed: `}` opens a group and `{` closes it) the same
    grammar bans: `{` with no group open or right after `}`; the end token while a group is open or right after `{`;
    `^`, `_`, `\sqrt` unless right after `{` (`\sqrt` also after `[`); after a closed group: everything but `^`, `_`,
    `\sqrt`, `]`, `}` (when the group was a `\frac` denominator) or only `\frac` (when it was its numerator).

    Every prefix stays grammatical, but a sequence cut at `max_new_tokens` may still have open groups (measured: one of
    986 CROHME 2014 beam-10 outputs of the shipped model, a 41+-token expression).

    Banned tokens get `-inf`; allowed scores are left as they are (no renormalisation, as HF's other constraints).
    Rows that have already ended are left alone. `token_ids` maps the symbols of
    `configuration_hmer.SYNTAX_SYMBOLS` to ids; without both braces the processor does nothing.
    """

    def __init__(self, token_ids: dict[str, int], bos_token_id: int, eos_token_id: int):
        self.ids = dict(token_ids)
        self.bos, self.eos = bos_token_id, eos_token_id
        get = self.ids.get
        self.lb, self.rb, self.sup, self.sub = get("{"), get("}"), get("^"), get("_")
        self.frac, self.sqrt, self.lsq, self.rsq = get("\\frac"), get("\\sqrt"), get("["), get("]")
        self.active = self.lb is not None and self.rb is not None
        self.scripts = {t for t in (self.sup, self.sub) if t is not None}

    def allowed_and_banned(self, tokens: list[int], r2l: bool) -> tuple[list[int] | None, list[int]]:
        """For a row's tokens after its start token: (the only tokens allowed, or None) and the tokens banned."""
        return self._r2l(tokens) if r2l else self._l2r(tokens)

    def _l2r(self, tokens: list[int]) -> tuple[list[int] | None, list[int]]:
        lb, rb, end = self.lb, self.rb, self.eos
        stack: list[bool] = []  # per open group: is it a \frac numerator?
        closed_numerator, last = False, None
        for t in tokens:
            closed_numerator = False
            if t == lb:
                stack.append(last == self.frac)
            elif t == rb and stack:
                closed_numerator = stack.pop()
            last = t
        if last in self.scripts or last == self.frac or closed_numerator:
            return [lb], []
        if last == self.sqrt:
            return [lb] + ([self.lsq] if self.lsq is not None else []), []
        banned = [] if last == self.rsq and last is not None else [lb]
        if not stack or last == lb:
            banned.append(rb)
        if stack:
            banned.append(end)
        return None, banned

    def _r2l(self, tokens: list[int]) -> tuple[list[int] | None, list[int]]:
        lb, rb, end = self.lb, self.rb, self.bos
        stack: list[bool] = []  # per open group (opened by "}"): is it a \frac numerator?
        closed: bool | None = None  # after a "{": whether the group it closed was a numerator
        last = None
        for t in tokens:
            closed = None
            if t == rb:
                stack.append(last == lb)  # "} {" only occurs between a \frac's denominator and numerator
            elif t == lb and stack:
                closed = stack.pop()
            last = t
        if closed is True:
            return ([self.frac] if self.frac is not None else None), []
        if closed is False:
            allowed = [t for t in (self.sup, self.sub, self.sqrt, self.rsq, rb) if t is not None]
            return allowed, []
        banned = [t for t in (self.sup, self.sub, self.frac) if t is not None]
        if self.sqrt is not None and last != self.lsq:
            banned.append(self.sqrt)
        if not stack or last == rb:
            banned.append(lb)
        if stack or last == lb:
            banned.append(end)
        return None, banned

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.active:
            return scores
        banned = torch.zeros(scores.shape, dtype=torch.bool)
        for row, seq in enumerate(input_ids.tolist()):
            r2l = seq[0] == self.eos
            tokens = seq[1:]
            if (self.bos if r2l else self.eos) in tokens:
                continue  # this row has ended (greedy/sampling pad it from here on)
            allowed, ban = self.allowed_and_banned(tokens, r2l)
            if allowed is not None:
                banned[row] = True
                banned[row, allowed] = False
            elif ban:
                banned[row, ban] = True
        return scores.masked_fill(banned.to(scores.device), float("-inf"))


def default_generation_config(config: HMERConfig) -> GenerationConfig:
    """Decoding defaults: start with <s>, stop at </s>, at most 200 new tokens (CoMER's limit), greedy."""
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_new_tokens=200,
        num_beams=1,
        length_penalty=1.0,
    )


__all__ = [
    "HMERPreTrainedModel",
    "HMERForConditionalGeneration",
    "HMEREncoderOutput",
    "HMERDecoderCache",
    "HMERSeq2SeqLMOutput",
    "LatexSyntaxLogitsProcessor",
    "RecurrentDecoderCache",
    "mutual_kl_divergence",
]
