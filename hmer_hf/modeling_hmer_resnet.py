"""SAN-DA's encoder: ResNet-18 with every convolution at stride 1 and all downsampling done by max-pooling.

Li et al. (2020) set the stride of every ResNet-18 convolution to 1 so that no input pixel is skipped, and downsample
with max-pooling instead. Layout here: 7x7 stem conv (1 -> C0, stride 1) + BN + ReLU, then for each stage a 2x2
max-pool (ceil mode) followed by the stage's basic blocks, so the four stages [64, 128, 256, 512] x 2 blocks end at
stride 16 like the DenseNet encoder (and share its feature-mask grid). `config.resnet_pooling` can switch stage
pools off (stride 8 for half-resolution input, like the DenseNet's `transition_pooling`).

Padding-invariant like the DenseNet: every 3x3/7x7 convolution sees zeros outside each image and padding is zeroed
before each max-pool (all values are >= 0 after ReLU, so padding never wins), so an image gives the same features
alone or padded in a batch (BatchNorm in eval mode).

Shipped as remote code next to the weights: imports only torch and its sibling configuration file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_hmer import HMERConfig


class ResNetBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-dropout-conv3x3-BN, + shortcut (1x1 conv + BN when the width changes), ReLU; all stride 1."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = None
        if in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x [B, C, h, w] with zeros outside the valid mask m [B, 1, h, w]; returns the same, zeroed outside m."""
        out = self.dropout(F.relu(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out * m))
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity) * m


class ResNetBackbone(nn.Module):
    """ResNet-18, stride-1 convolutions, max-pool downsampling (SAN-DA); `out_channels` = last stage width."""

    def __init__(self, config: HMERConfig):
        super().__init__()
        channels = list(config.resnet_channels)
        self.stem = nn.Conv2d(1, channels[0], kernel_size=7, padding=3, bias=False)
        self.stem_norm = nn.BatchNorm2d(channels[0])
        self.stages = nn.ModuleList()
        width = channels[0]
        for out, blocks in zip(channels, config.resnet_blocks):
            stage = nn.ModuleList()
            for _ in range(blocks):
                stage.append(ResNetBasicBlock(width, out, config.encoder_dropout))
                width = out
            self.stages.append(stage)
        self.out_channels = width
        self.pooling = [True] * len(self.stages) if config.resnet_pooling is None else list(config.resnet_pooling)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [B, C, h, w] (zero outside each image) and the mask downsampled alongside ([B, h, w])."""
        m = mask.unsqueeze(1).to(x.dtype)
        x = F.relu(self.stem_norm(self.stem(x * m))) * m
        for stage, pool in zip(self.stages, self.pooling):
            if pool:
                # Ceil-mode 2x2 pooling keeps ceil(n/2) positions, exactly what [0::2] keeps of the mask.
                x = F.max_pool2d(x, 2, ceil_mode=True)
                mask = mask[:, 0::2, 0::2]
                m = mask.unsqueeze(1).to(x.dtype)
                x = x * m
            for block in stage:
                x = block(x, m)
        return x, mask


__all__ = ["ResNetBackbone", "ResNetBasicBlock"]
