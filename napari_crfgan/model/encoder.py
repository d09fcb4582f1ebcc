"""Encoders: the half-encoder E^H (both systems) and HA-GAN's global encoder E^G."""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import DownBlock, halving_widths
from .presets import ModelConfig


class HalfEncoder(nn.Module):
    """E^H: image [B, 1, 4d, 4h, 4w] -> embedding [B, C, d, h, w], the inverse of G^H.

    Works on a slab during training and on the whole volume to give the real
    embedding that the CRF (CRF-GAN) and E^G (HA-GAN) read.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        c = cfg.head_channel
        self.net = nn.Sequential(
            DownBlock(1, c, cfg.groups),
            DownBlock(c, c, cfg.groups, kernel=3, stride=1),
            DownBlock(c, cfg.embedding_channels, cfg.groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GlobalEncoder(nn.Module):
    """E^G (HA-GAN only): the real embedding of the whole volume -> a latent code z_hat."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n = int(math.log2(cfg.embedding_size // 4))
        widths = halving_widths(cfg.e_global_width, n)
        cins = [cfg.embedding_channels] + widths[:-1]
        self.blocks = nn.Sequential(*(DownBlock(a, b, cfg.groups) for a, b in zip(cins, widths)))
        self.out = nn.Conv3d(widths[-1], cfg.latent_dim, 4)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(h)).flatten(1)
