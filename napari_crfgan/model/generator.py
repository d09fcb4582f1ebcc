"""Generator parts: trunk G^A, sub-volume head G^H, HA-GAN's low-resolution head G^L.

Shapes (B = batch, C = embedding channels, e = size // 4):
  G^A: z [B, latent (+ classes)] -> embedding [B, C, e, e, e]
  G^H: embedding slab [B, C, d, e, e] -> image [B, 1, 4d, 4e, 4e]
  G^L: embedding [B, C, e, e, e] -> low-resolution image [B, 1, e, e, e]
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConvBlock, OutputConv, checkpointed, upsample2
from .presets import ModelConfig


class Trunk(nn.Module):
    """G^A: latent code to the intermediate embedding of the whole volume."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.trunk_channels
        self.base = ch[0]
        self.fc = nn.Linear(cfg.latent_dim + cfg.num_classes, ch[0] * 4**3)
        ups = cfg.trunk_upsamplings
        # which convs follow an upsampling: early = 1..ups (the reference), late = the last ups
        upsampled = range(1, ups + 1) if cfg.trunk_upsampling == "early" else range(len(ch) - ups, len(ch))
        cins = (ch[0],) + ch[:-1]
        self.blocks = nn.Sequential(
            *(ConvBlock(cin, cout, cfg.groups, upsample=i in upsampled, mode=cfg.upsample)
              for i, (cin, cout) in enumerate(zip(cins, ch)))
        )

        self.checkpointing = False  # activation checkpointing per block (GANSystem.set_activation_checkpointing)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(z).view(z.shape[0], self.base, 4, 4, 4)
        if not (self.checkpointing and torch.is_grad_enabled()):
            return self.blocks(x)
        for block in self.blocks:  # a block keeps only its input
            x = checkpointed(block, x)
        return x


class SubVolumeHead(nn.Module):
    """G^H: an embedding slab (or the whole embedding) to full-resolution voxels.

    up x2 -> conv -> GroupNorm (or PixelNorm) -> ReLU -> up x2 -> conv to 1 -> tanh. Split in
    `hidden` (before the norm) and `finish` (after it) so that chunked decoding
    (model/decoding.py) can normalise chunks with statistics of the whole volume.
    `halo`: embedding slices each side of a chunk that its output depends on (two
    upsampled 3x3x3 convs; one more where the upsampling reads a neighbour).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cfg.embedding_channels, cfg.head_channel, 3, 1, 1)
        self.norm = nn.GroupNorm(cfg.groups, cfg.head_channel) if cfg.head_norm == "group" else \
            PixelNorm(cfg.head_channel)
        self.conv2 = nn.Conv3d(cfg.head_channel, 1, 3, 1, 1)
        self.mode = cfg.upsample
        self.halo = 2 if cfg.upsample == "nearest" else 3

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv1(upsample2(h, self.mode))

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        x = upsample2(F.relu(x), self.mode)
        return torch.tanh(self.conv2(x))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.finish(self.norm(self.hidden(h)))


class PixelNorm(nn.Module):
    """Each voxel's channel vector divided by its RMS, then a per-channel scale and shift: no statistics
    over space, so a slab, a chunk and the whole volume are normalised alike."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)


class LowResHead(nn.Module):
    """G^L (HA-GAN only): the whole embedding to a low-resolution image."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = (cfg.embedding_channels,) + cfg.low_head_channels
        self.blocks = nn.Sequential(*(ConvBlock(a, b, cfg.groups) for a, b in zip(chans, chans[1:])))
        self.out = OutputConv(chans[-1])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.blocks(h))


def embedding_slab(embedding: torch.Tensor, crop_idx: int, cfg: ModelConfig) -> torch.Tensor:
    """The embedding slices that G^H decodes into the image slab starting at `crop_idx`."""
    start = crop_idx // 4
    return embedding[:, :, start:start + cfg.slab // 4]
