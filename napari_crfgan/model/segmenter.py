"""A small 3D U-Net segmenter: the judge of mask-to-volume synthesis (experiments/mask_eval.py).

It is trained on (image, label map) pairs, real or synthetic, and scored by Dice on real test pairs,
as the empirical study of mask-conditioned GANs does. Small on purpose: it has to train three arms x
three seeds on a 2-core CPU, so the full-resolution layers are one 3x3x3 conv in and 1x1x1 convs out;
the context (two stride-2 levels) is built at half and quarter resolution, where a voxel costs 8x and
64x less.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    # GroupNorm: batches of two volumes are too small for BatchNorm's statistics
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.GroupNorm(min(4, cout), cout), nn.LeakyReLU(0.1))


class SegmentationUNet(nn.Module):
    """[B, 1, D, H, W] image (D, H, W multiples of 4) -> [B, classes, D, H, W] logits."""

    def __init__(self, classes: int, width: int = 8) -> None:
        super().__init__()
        c = int(width)
        self.stem = _block(1, c)
        self.down1 = nn.Sequential(_block(c, 2 * c, stride=2), _block(2 * c, 2 * c))
        self.down2 = nn.Sequential(_block(2 * c, 4 * c, stride=2), _block(4 * c, 4 * c))
        self.up1 = _block(6 * c, 2 * c)
        self.up0 = _block(3 * c, c, kernel=1)
        self.head = nn.Conv3d(c, int(classes), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s0 = self.stem(x)
        s1 = self.down1(s0)
        h = self.down2(s1)
        h = self.up1(torch.cat([F.interpolate(h, size=s1.shape[2:], mode="trilinear", align_corners=False), s1], 1))
        h = self.up0(torch.cat([F.interpolate(h, size=s0.shape[2:], mode="trilinear", align_corners=False), s0], 1))
        return self.head(h)
