"""Shared building blocks: x2 upsampling, conv-norm-act blocks and (spectral-norm) layers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm
from torch.utils.checkpoint import checkpoint

_BLUR = torch.tensor([1.0, 2.0, 1.0]) / 4


def upsample2(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """x2 along every spatial axis: "nearest" (the papers'; it leaves a grid of 2-voxel blocks), or "trilinear" /
    "blur". Nearest x2 followed by a fixed [1, 2, 1] / 4 filter per axis (edges replicated) gives (x[i-1] + 3 x[i])
    / 4 and (3 x[i] + x[i+1]) / 4: exactly trilinear interpolation (align_corners=False), so "blur" is computed as
    that, four times faster than the three filter passes (`blur_reference` is the filter, for the test of their
    equality). All read at most one input voxel beyond a crop."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)


def blur_reference(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2, then the [1, 2, 1] / 4 filter along each axis with replicated edges."""
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    c = x.shape[1]
    k = _BLUR.to(x.device, x.dtype)
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = 3
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = 1
        x = F.conv3d(F.pad(x, pad, mode="replicate"), k.view(1, 1, *shape).expand(c, 1, *shape), groups=c)
    return x


class Upsample2(nn.Module):
    def __init__(self, mode: str = "nearest") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2(x, self.mode)


class ConvBlock(nn.Sequential):
    """[x2 upsample] -> Conv3d k3 s1 p1 -> GroupNorm -> ReLU (the generator's unit)."""

    def __init__(self, cin: int, cout: int, groups: int, upsample: bool = False, mode: str = "nearest") -> None:
        layers: list[nn.Module] = [Upsample2(mode)] if upsample else []
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


def sn_conv(cin: int, cout: int, kernel, stride=1, padding=0, sn: bool = True) -> nn.Module:
    """Spectrally normalised Conv3d (the power-iteration vectors are buffers); sn=False: a plain one."""
    conv = nn.Conv3d(cin, cout, kernel, stride, padding)
    return spectral_norm(conv) if sn else conv


def sn_linear(cin: int, cout: int, sn: bool = True) -> nn.Module:
    linear = nn.Linear(cin, cout)
    return spectral_norm(linear) if sn else linear


def minibatch_std(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """x with one more channel: the std over groups of `group` volumes of the batch, averaged over channels
    and voxels (StyleGAN's minibatch standard deviation; a collapsed batch shows a std near 0)."""
    b = x.shape[0]
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().view(g, b // g, *x.shape[1:])
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3, 4))  # [b // g]
    std = std.repeat(g).to(x.dtype).view(b, 1, 1, 1, 1).expand(b, 1, *x.shape[2:])
    return torch.cat([x, std], dim=1)


def leaky(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.leaky_relu(x, 0.2)


def checkpointed(fn, *args):
    """fn(*args) with its activations recomputed in backward instead of kept (activation checkpointing).
    Non-reentrant, and torch replays the RNG state, so a recomputed random draw is the same draw."""
    return checkpoint(fn, *args, use_reentrant=False)


def conv_leaky(conv: nn.Conv3d, x: torch.Tensor, checkpointing: bool) -> torch.Tensor:
    """leaky(conv(x)); checkpointed, only the input is kept. The weight is read outside the recomputed
    function, so spectral norm's power iteration runs once per forward, as without checkpointing."""
    if not (checkpointing and torch.is_grad_enabled()):
        return leaky(conv(x))
    return checkpointed(_conv_leaky, x, conv.weight, conv.bias, conv.stride, conv.padding)


def _conv_leaky(x, weight, bias, stride, padding):
    return leaky(F.conv3d(x, weight, bias, stride, padding))


def halving_widths(top: int, count: int) -> list[int]:
    """`count` widths doubling up to `top`: halving_widths(256, 3) == [64, 128, 256]."""
    return [top >> (count - 1 - i) for i in range(count)]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
