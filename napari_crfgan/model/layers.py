"""Shared building blocks: conv-norm-act blocks and spectral-norm layers."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class ConvBlock(nn.Sequential):
    """[nearest x2 upsample] -> Conv3d k3 s1 p1 -> GroupNorm -> ReLU (the generator's unit)."""

    def __init__(self, cin: int, cout: int, groups: int, upsample: bool = False) -> None:
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
        layers += [nn.Conv3d(cin, cout, 3, 1, 1), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class OutputConv(nn.Sequential):
    """Conv3d k3 to one channel -> tanh (an image in [-1, 1])."""

    def __init__(self, cin: int) -> None:
        super().__init__(nn.Conv3d(cin, 1, 3, 1, 1), nn.Tanh())


class DownBlock(nn.Sequential):
    """Conv3d k4 s2 p1 -> GroupNorm -> ReLU (the encoders' unit)."""

    def __init__(self, cin: int, cout: int, groups: int, kernel: int = 4, stride: int = 2,
                 padding: int = 1) -> None:
        super().__init__(nn.Conv3d(cin, cout, kernel, stride, padding),
                         nn.GroupNorm(groups, cout), nn.ReLU(inplace=True))


def sn_conv(cin: int, cout: int, kernel, stride=1, padding=0) -> nn.Module:
    """Spectrally normalised Conv3d (the power-iteration vectors are buffers)."""
    return spectral_norm(nn.Conv3d(cin, cout, kernel, stride, padding))


def sn_linear(cin: int, cout: int) -> nn.Module:
    return spectral_norm(nn.Linear(cin, cout))


def leaky(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, 0.2)


def halving_widths(top: int, count: int) -> list[int]:
    """`count` widths doubling up to `top`: halving_widths(256, 3) == [64, 128, 256]."""
    return [top >> (count - 1 - i) for i in range(count)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
