"""Mask-to-volume generators: the seed paper's U-Net and a SPADE generator, both fully convolutional.

Input: a one-hot label map [B, mask_classes (+1 noise channel), D, H, W]; output: an image [B, 1, D, H, W]
in [-1, 1] on the same grid. D, H and W must be multiples of `multiple` (2^levels); any such grid works,
not only the training cube, which is what patch-blended synthesis (model/blending.py) relies on.

U-Net (the seed paper): `levels` convs k4 s2 p1 down, as many transposed convs k4 s2 p1 up with skip
connections, each followed by BatchNorm and LeakyReLU 0.2 except the last (tanh) and the innermost
conv (a 1-voxel BatchNorm in a batch of one would zero it, as pix2pix also leaves it out).

SPADE (Park et al. 2019): the label map averaged down 2^levels times and convolved is the input; one
SPADE residual block per level, each followed by a nearest x2 upsampling, a last SPADE at full
resolution, a conv to one channel and tanh. Each SPADE normalises with parameter-free BatchNorm and
modulates with a per-voxel scale and shift made by convs from the label map at that level
(class fractions: average pooling, so a shift by a multiple of 2^levels shifts the output alike).

`halo`: voxels either side that one output voxel depends on (its receptive-field radius), computed
exactly from the layer list in index arithmetic; patches whose outputs are cut `halo` voxels from an
inner edge equal one pass over the whole volume.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import leaky
from .presets import ModelConfig

Interval = tuple[int, int]


# ---- receptive fields in index arithmetic: output interval -> the input interval it reads ----
def _conv(iv: Interval, k: int, s: int, p: int) -> Interval:
    return iv[0] * s - p, iv[1] * s - p + k - 1


def _conv_transpose(iv: Interval, k: int, s: int, p: int) -> Interval:
    return -(-(iv[0] + p - k + 1) // s), (iv[1] + p) // s  # output o reads inputs i with o = i s - p + t, t < k


def _pooled(iv: Interval, f: int) -> Interval:
    return iv[0] * f, iv[1] * f + f - 1


def _hull(*ivs: Interval) -> Interval:
    return min(a for a, _ in ivs), max(b for _, b in ivs)


def _radius(support, period: int) -> int:
    """The largest distance from an output voxel to an input voxel it reads, over every phase of the strides."""
    return max(max(o - lo, hi - o) for o in range(period) for lo, hi in [support((o, o))])


def input_channels(cfg: ModelConfig) -> int:
    return cfg.mask_classes + int(cfg.mask_noise)


def level_widths(base: int, levels: int) -> list[int]:
    """Channels at levels 1 .. levels: base, 2 base, ... up to 8 base (pix2pix's 64 .. 512)."""
    return [base * min(2 ** i, 8) for i in range(levels)]


class UNetGenerator(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.levels = cfg.mask_levels
        widths = level_widths(cfg.mask_g_width, self.levels)
        self.down = nn.ModuleList()
        cin = input_channels(cfg)
        for level, cout in enumerate(widths, start=1):
            norm = level < self.levels  # not the innermost
            self.down.append(nn.Sequential(nn.Conv3d(cin, cout, 4, 2, 1, bias=not norm),
                                           nn.BatchNorm3d(cout) if norm else nn.Identity(), nn.LeakyReLU(0.2)))
            cin = cout
        self.up = nn.ModuleList()
        for level in range(self.levels, 0, -1):  # innermost first; the skip of each level joins its input
            cin = widths[level - 1] * (1 if level == self.levels else 2)
            if level == 1:
                self.up.append(nn.Sequential(nn.ConvTranspose3d(cin, 1, 4, 2, 1), nn.Tanh()))
            else:
                cout = widths[level - 2]
                self.up.append(nn.Sequential(nn.ConvTranspose3d(cin, cout, 4, 2, 1, bias=False),
                                             nn.BatchNorm3d(cout), nn.LeakyReLU(0.2)))

    @property
    def multiple(self) -> int:
        return 2 ** self.levels

    @property
    def halo(self) -> int:
        levels = self.levels

        def encoder(level: int, iv: Interval) -> Interval:
            for _ in range(level):
                iv = _conv(iv, 4, 2, 1)
            return iv

        def decoder_input(level: int, iv: Interval) -> Interval:  # what the transposed conv of `level` reads
            if level == levels:
                return encoder(level, iv)
            return _hull(encoder(level, iv), decoder_input(level + 1, _conv_transpose(iv, 4, 2, 1)))

        return _radius(lambda iv: decoder_input(1, _conv_transpose(iv, 4, 2, 1)), self.multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = skips.pop()
        for i, up in enumerate(self.up):
            x = up(x if i == 0 else torch.cat([x, skips.pop()], dim=1))
        return x


class SPADE(nn.Module):
    """Parameter-free BatchNorm, then x (1 + gamma) + beta, gamma and beta per voxel from the mask's features by
    a 1x1x1 conv (Park et al.'s 3x3 would be 27 taps in 3D, the block's costliest part; the features' own
    3x3x3 conv gives the context)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm3d(channels, affine=False)
        self.gamma_beta = nn.Conv3d(hidden, 2 * channels, 1)

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma_beta(features).chunk(2, dim=1)
        return self.norm(x) * (1 + gamma) + beta


class MaskFeatures(nn.Sequential):
    """conv3 -> ReLU on the label map: what the SPADEs of one block read (one per block, not one per SPADE as
    in Park et al.: in 3D this conv on the one-hot map is the costliest of a block)."""

    def __init__(self, mask_channels: int, hidden: int) -> None:
        super().__init__(nn.Conv3d(mask_channels, hidden, 3, 1, 1), nn.ReLU())


class SPADEBlock(nn.Module):
    """SPADE -> LeakyReLU -> conv3, twice, plus a shortcut (SPADE -> 1x1 conv where the width changes)."""

    def __init__(self, cin: int, cout: int, mask_channels: int, hidden: int) -> None:
        super().__init__()
        mid = min(cin, cout)
        self.features = MaskFeatures(mask_channels, hidden)
        self.norm0, self.conv0 = SPADE(cin, hidden), nn.Conv3d(cin, mid, 3, 1, 1)
        self.norm1, self.conv1 = SPADE(mid, hidden), nn.Conv3d(mid, cout, 3, 1, 1)
        self.learned_shortcut = cin != cout
        if self.learned_shortcut:
            self.norm_s, self.conv_s = SPADE(cin, hidden), nn.Conv3d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        f = self.features(mask)
        shortcut = self.conv_s(self.norm_s(x, f)) if self.learned_shortcut else x
        dx = self.conv0(leaky(self.norm0(x, f)))
        return shortcut + self.conv1(leaky(self.norm1(dx, f)))


class SPADEGenerator(nn.Module):
    """head conv at 1 / 2^levels; a SPADE block at each level from there to 1 / 2, each followed by nearest x2;
    at full resolution one SPADE (no block: its convs would cost more than all the coarser levels), a conv to
    one channel, tanh."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.levels = cfg.mask_levels
        k = input_channels(cfg)
        widths = [cfg.mask_g_width * min(2 ** i, 8) for i in range(self.levels + 1)]  # level 0 .. levels
        self.head = nn.Conv3d(k, widths[-1], 3, 1, 1)
        # blocks[i] runs at level levels - i: the width of its level -> the width of the next finer one
        self.blocks = nn.ModuleList(SPADEBlock(widths[level], widths[level - 1], k, cfg.spade_hidden)
                                    for level in range(self.levels, 0, -1))
        self.final_features = MaskFeatures(k, cfg.spade_hidden)
        self.final_norm = SPADE(widths[0], cfg.spade_hidden)
        self.out = nn.Conv3d(widths[0], 1, 3, 1, 1)

    @property
    def multiple(self) -> int:
        return 2 ** self.levels

    @property
    def halo(self) -> int:
        levels = self.levels

        def block_output(level: int, iv: Interval) -> Interval:  # the block of `level`, on its output interval
            a, b = iv
            inner = (a - 2, b + 2)  # its two 3x3x3 convs on the features
            x_in = _pooled((inner[0] - 1, inner[1] + 1), 2 ** levels) if level == levels else \
                block_output(level + 1, (inner[0] // 2, inner[1] // 2))  # nearest x2 from the coarser level
            return _hull(_pooled((a - 3, b + 3), 2 ** level), x_in)  # the mask: its features' conv too

        def output(iv: Interval) -> Interval:  # out conv <- final SPADE (a 3x3x3 conv on the mask) <- nearest x2
            a, b = iv[0] - 1, iv[1] + 1
            return _hull((a - 1, b + 1), block_output(1, (a // 2, b // 2)))

        return _radius(output, self.multiple)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        pooled = [mask] + [F.avg_pool3d(mask, 2 ** level) for level in range(1, self.levels + 1)]
        x = self.head(pooled[-1])
        for i, block in enumerate(self.blocks):
            x = F.interpolate(block(x, pooled[self.levels - i]), scale_factor=2, mode="nearest")
        x = self.final_norm(x, self.final_features(mask))
        return torch.tanh(self.out(leaky(x)))


MASK_GENERATORS: dict[str, type[nn.Module]] = {"unet": UNetGenerator, "spade": SPADEGenerator}
