"""Small building blocks shared by the HMER model files: position encodings and mask-aware (padding-invariant) ops.

Shipped as remote code next to the weights: imports only torch and the standard library.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------------------------------
# Position encodings
# ---------------------------------------------------------------------------------------------------------------------


def word_position_encoding(positions: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sinusoidal encoding of integer positions [T] -> [T, d_model] (sin on even, cos on odd channels)."""
    dim_t = torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device)
    angles = positions.float().unsqueeze(-1) / (temperature ** (dim_t / d_model))
    pe = torch.zeros(positions.shape[0], d_model, device=positions.device)
    pe[:, 0::2] = angles.sin()
    pe[:, 1::2] = angles.cos()
    return pe


def image_position_encoding(valid: torch.Tensor, d_model: int, temperature: float = 10000.0) -> torch.Tensor:
    """2-D sinusoidal encoding [B, h, w, d_model] normalised to each image's *valid* (unpadded) extent."""
    half = d_model // 2
    valid = valid.float()
    y_embed = valid.cumsum(1)
    x_embed = valid.cumsum(2)
    # Normalising by the last valid coordinate makes the encoding independent of how much padding the batch adds.
    eps, scale = 1e-6, 2 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32, device=valid.device)
    inv_freq = 1.0 / (temperature ** (dim_t / half))
    pos_x = x_embed.unsqueeze(-1) * inv_freq
    pos_y = y_embed.unsqueeze(-1) * inv_freq
    pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((pos_x, pos_y), dim=3)


# ---------------------------------------------------------------------------------------------------------------------
# Mask-aware operations: on a padded batch they give each image what it would get alone
# ---------------------------------------------------------------------------------------------------------------------


def masked_avg_pool2d(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """2x2 ceil-mode average over valid pixels only: on a padded batch it equals pooling each unpadded image."""
    pooled = F.avg_pool2d(x * mask, 2, ceil_mode=True)
    return pooled / F.avg_pool2d(mask, 2, ceil_mode=True).clamp(min=1e-6)


class MaskedBatchNorm2d(nn.Module):
    """BatchNorm whose statistics come from valid (unpadded) pixels only; padded pixels stay zero."""

    def __init__(self, num_features: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not self.training and bn.running_mean is not None:
            # Running statistics: a per-channel affine map, so apply it everywhere and zero the padding (no gather).
            out = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            return out * valid.unsqueeze(1).to(out.dtype)
        flat = x.permute(0, 2, 3, 1)  # [N, h, w, C]
        out = torch.zeros_like(flat)
        out[valid] = self.bn(flat[valid]).to(out.dtype)
        return out.permute(0, 3, 1, 2)
