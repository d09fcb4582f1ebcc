"""Discriminators: sub-volume D^H (both systems) and low-resolution D^L (HA-GAN).

Spectral norm on every conv and linear (the papers'; `d_spectral_norm=False` leaves it out),
LeakyReLU 0.2, no normalisation layers; `minibatch_std` adds a minibatch standard-deviation
channel before the last conv. Each returns logits [B, 1 + num_classes]: column 0 real/fake,
the rest class logits; D^H also its feature vector when asked (feature matching).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import conv_leaky, halving_widths, leaky, minibatch_std, sn_conv, sn_linear
from .presets import ModelConfig


class SubVolumeDiscriminator(nn.Module):
    """D^H: judges a [slab, size, size] sub-volume given its normalised crop position.

    Layout: k4 s2 convs until the slab is 4 deep; two k(2,4,4) s2 convs to depth 1;
    k(1,4,4) s(1,2,2) convs until 4x4 in-plane; a k(1,4,4) conv to a feature
    vector; the crop position appended; an SNLinear tail.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n_cubic = int(math.log2(cfg.slab // 4))
        in_plane = cfg.size >> (n_cubic + 2)
        n_flat = int(math.log2(in_plane // 4))
        kinds = ["cubic"] * n_cubic + ["deep"] * 2 + ["flat"] * n_flat
        widths = halving_widths(cfg.d_high_width, len(kinds))
        convs: list[nn.Module] = []
        cin = 1
        sn = cfg.d_spectral_norm
        for kind, cout in zip(kinds, widths):
            if kind == "cubic":
                convs.append(sn_conv(cin, cout, 4, 2, 1, sn=sn))
            elif kind == "deep":
                convs.append(sn_conv(cin, cout, (2, 4, 4), 2, (0, 1, 1), sn=sn))
            else:
                convs.append(sn_conv(cin, cout, (1, 4, 4), (1, 2, 2), (0, 1, 1), sn=sn))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.minibatch_std = cfg.minibatch_std
        self.feature = sn_conv(cin + self.minibatch_std, cfg.d_high_feature, (1, 4, 4), sn=sn)
        self.fc1 = sn_linear(cfg.d_high_feature + 1, cfg.d_high_hidden, sn=sn)
        self.fc2 = sn_linear(cfg.d_high_hidden, 1 + cfg.num_classes, sn=sn)
        self.max_crop = cfg.max_crop
        self.checkpointing = False  # activation checkpointing of the convs (GANSystem.set_activation_checkpointing)

    def forward(self, slab: torch.Tensor, crop_idx: int, features: bool = False):
        """Logits [B, 1 + classes]; with `features`, also the feature vector [B, d_high_feature]."""
        x = slab
        for conv in self.convs:
            x = conv_leaky(conv, x, self.checkpointing)
        if self.minibatch_std:
            x = minibatch_std(x)
        feats = leaky(self.feature(x)).flatten(1)  # [B, feature]; flatten keeps B at batch 1
        pos = feats.new_full((feats.shape[0], 1), crop_idx / self.max_crop)
        logits = self.fc2(leaky(self.fc1(torch.cat([feats, pos], dim=1))))
        return (logits, feats) if features else logits


class LowResDiscriminator(nn.Module):
    """D^L (HA-GAN only): k4 s2 convs down to 4^3, then a k4 conv to the logits."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        n = int(math.log2(cfg.embedding_size // 4))
        widths = halving_widths(cfg.d_low_width, n)
        sn = cfg.d_spectral_norm
        self.convs = nn.ModuleList(sn_conv(a, b, 4, 2, 1, sn=sn) for a, b in zip([1] + widths, widths))
        self.minibatch_std = cfg.minibatch_std
        self.out = sn_conv(widths[-1] + self.minibatch_std, 1 + cfg.num_classes, 4, sn=sn)
        self.checkpointing = False

    def forward(self, low: torch.Tensor) -> torch.Tensor:
        x = low
        for conv in self.convs:
            x = conv_leaky(conv, x, self.checkpointing)
        if self.minibatch_std:
            x = minibatch_std(x)
        return self.out(x).flatten(1)
