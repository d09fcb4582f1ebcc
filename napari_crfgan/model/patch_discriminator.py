"""The 3D PatchGAN of the mask systems: judges an image together with its mask, patch by patch.

Five convs (the seed paper's): k4 s2 to widths w, 2w, 4w, a k4 s1 to 8w, each with BatchNorm and
LeakyReLU 0.2, and a k4 s1 conv to one logit per patch (no norm). Spectral norm on every conv when the
recipe asks for it (`d_spectral_norm`; the mask systems' default is off, as in the seed), and a
minibatch standard-deviation channel before the last conv with `minibatch_std`. Input: the image and the
one-hot mask concatenated [B, 1 + mask_classes, D, H, W]; output [B, 1, d, h, w] (2^3 patches at 32^3,
each seeing 70 voxels a side).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import leaky, minibatch_std, sn_conv
from .presets import ModelConfig


class PatchDiscriminator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        w = cfg.mask_d_width
        widths = [w, 2 * w, 4 * w, 8 * w]
        strides = [2, 2, 2, 1]
        sn = cfg.d_spectral_norm
        cin = 1 + cfg.mask_classes
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for cout, stride in zip(widths, strides):
            self.convs.append(sn_conv(cin, cout, 4, stride, 1, sn=sn))
            self.norms.append(nn.BatchNorm3d(cout))
            cin = cout
        self.minibatch_std = cfg.minibatch_std
        self.out = sn_conv(cin + self.minibatch_std, 1, 4, 1, 1, sn=sn)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Patch logits [B, 1, d, h, w]; with `features`, also the last hidden layer averaged over space."""
        for conv, norm in zip(self.convs, self.norms):
            x = leaky(norm(conv(x)))
        feats = x.mean(dim=(2, 3, 4))
        if self.minibatch_std:
            x = minibatch_std(x)
        logits = self.out(x)
        return (logits, feats) if features else logits
