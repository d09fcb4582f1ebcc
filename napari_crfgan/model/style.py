"""A style-based G^A (StyleGAN's generator, in 3D): the "StyleGAN" row of the empirical study.

z (+ one-hot class) -> mapping MLP -> style vector w; a learned constant 4^3 input;
per conv: [x2 upsample] -> 3x3x3 convolution modulated by an affine map of w and
demodulated (StyleGAN2), per-voxel noise scaled by a learned per-channel strength,
bias, LeakyReLU 0.2. The channels and upsampling layout are the plain trunk's
(`trunk_channels`, `trunk_upsampling`), so the embedding has the same shape and
either system's heads decode it.

Noise: random while training; fixed buffers (drawn once at construction) in eval
mode, so a latent seed gives the same volume every time it is sampled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import sample_rows
from .layers import checkpointed, leaky, upsample2
from .presets import ModelConfig


class ModulatedConv3d(nn.Module):
    """A 3x3x3 convolution whose input channels are scaled per sample by a style, then demodulated."""

    def __init__(self, cin: int, cout: int, w_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3, 3) / (cin * 27) ** 0.5)
        self.affine = nn.Linear(w_dim, cin)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # styles start at 1: a plain convolution

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        b, cin = x.shape[:2]
        s = self.affine(w)  # [B, cin]
        weight = self.weight[None] * s[:, None, :, None, None, None]  # [B, cout, cin, 3, 3, 3]
        weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4, 5), keepdim=True) + 1e-8)
        cout = weight.shape[1]
        y = F.conv3d(x.reshape(1, b * cin, *x.shape[2:]), weight.reshape(b * cout, cin, 3, 3, 3),
                     padding=1, groups=b)
        return y.view(b, cout, *y.shape[2:])


class StyleBlock(nn.Module):
    def __init__(self, cin: int, cout: int, w_dim: int, side: int, upsample: bool, mode: str) -> None:
        super().__init__()
        self.upsample, self.mode = upsample, mode
        self.conv = ModulatedConv3d(cin, cout, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(1, cout, 1, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, cout, 1, 1, 1))
        self.register_buffer("fixed_noise", torch.randn(1, 1, side, side, side))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = upsample2(x, self.mode)
        x = self.conv(x, w)
        if self.training:
            noise = sample_rows(lambda n: torch.randn(n, 1, *x.shape[2:], device=x.device, dtype=x.dtype), x.shape[0])
        else:
            noise = self.fixed_noise.to(x.dtype)
        return leaky(x + self.noise_strength * noise + self.bias)


class StyleTrunk(nn.Module):
    """G^A, style-based: latent code [B, latent (+ classes)] -> embedding [B, C, e, e, e]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        ch = cfg.trunk_channels
        z_dim = cfg.latent_dim + cfg.num_classes
        w_dim = cfg.latent_dim
        layers: list[nn.Module] = []
        for i in range(cfg.style_mapping_layers):
            layers += [nn.Linear(z_dim if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.mapping = nn.Sequential(*layers)
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4, 4))
        ups = cfg.trunk_upsamplings
        upsampled = range(1, ups + 1) if cfg.trunk_upsampling == "early" else range(len(ch) - ups, len(ch))
        blocks, side = [], 4
        for i, (cin, cout) in enumerate(zip((ch[0],) + ch[:-1], ch)):
            side *= 2 if i in upsampled else 1
            blocks.append(StyleBlock(cin, cout, w_dim, side, i in upsampled, cfg.upsample))
        self.blocks = nn.ModuleList(blocks)
        self.latent_dim = cfg.latent_dim
        self.checkpointing = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # pixel norm of the latent part (not of the one-hot class), as StyleGAN's mapping input
        code, cls = z[:, :self.latent_dim], z[:, self.latent_dim:]
        w = self.mapping(torch.cat([code * torch.rsqrt(code.pow(2).mean(dim=1, keepdim=True) + 1e-8), cls], dim=1))
        x = self.const.expand(z.shape[0], -1, -1, -1, -1)
        keep = not (self.checkpointing and torch.is_grad_enabled())
        for block in self.blocks:
            x = block(x, w) if keep else checkpointed(block, x, w)
        return x
