"""Overlapping patches blended with a smooth window: a fully convolutional network over any grid in bounded memory.

`blend_patches(fn, x, patch, overlap, halo, multiple)` runs `fn` on patches of side `patch` (at most) that
overlap by at least `overlap` voxels, starting at multiples of `multiple` (the network's total stride, so
each patch sees the grid the one pass sees), and blends their outputs with weights that are separable
products of one 1D window per axis, divided by the sum of the weights. Memory: the output and the weight
volume, plus one patch's activations.

The window along an axis, at each side where another patch follows: 0 on the `halo` voxels next to the
edge (where the patch's zero padding reaches the output), then a raised-cosine ramp over the rest of the
overlap, then 1. When `overlap` >= 2 `halo`, every voxel is inside at least one patch's non-zero part and
every non-zero weight multiplies an output the patch computed with its whole receptive field, so the
blend equals one pass over the whole volume (BatchNorm in eval mode: the network is shift-equivariant by
multiples of its stride). A smaller overlap ramps over all of it: no seam, but not the one-pass output.
At the volume's own faces a patch ends where the volume ends, padded as the one pass is.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def patch_starts(length: int, patch: int, overlap: int, multiple: int) -> list[int]:
    """Start of each patch along an axis of `length` voxels: evenly spread, multiples of `multiple`, the last
    ending at `length`; consecutive patches overlap by at least `overlap` (rounding can only add to it)."""
    if length <= patch:
        return [0]
    count = math.ceil((length - overlap) / (patch - overlap))
    span = length - patch
    return [multiple * round(k * span / (count - 1) / multiple) for k in range(count)]


def _ramp(n: int) -> torch.Tensor:
    """n weights rising from near 0 to near 1, sin^2 at voxel centres (two facing ramps sum to 1)."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    return torch.sin(t * math.pi / 2) ** 2


def axis_window(size: int, before: int | None, after: int | None, halo: int) -> torch.Tensor:
    """The 1D window of a patch of `size` voxels that overlaps its neighbours by `before` / `after` voxels
    (None: no neighbour on that side, the window is 1 up to the edge)."""
    w = torch.ones(size, dtype=torch.float64)
    for side, overlap in (("before", before), ("after", after)):
        if overlap is None:
            continue
        cut = halo if overlap >= 2 * halo else 0
        ramp = max(overlap - 2 * cut, 0)
        edge = torch.cat([torch.zeros(cut, dtype=torch.float64), _ramp(ramp)])[:size]
        if side == "before":
            w[:edge.numel()] *= edge
        else:
            w[size - edge.numel():] *= edge.flip(0)
    return w


def _windows(length: int, starts: list[int], patch: int, halo: int) -> list[torch.Tensor]:
    ends = [min(s + patch, length) for s in starts]
    out = []
    for k, (s, e) in enumerate(zip(starts, ends)):
        before = ends[k - 1] - s if k > 0 else None
        after = e - starts[k + 1] if k + 1 < len(starts) else None
        out.append(axis_window(e - s, before, after, halo))
    return out


def check_patching(patch: int, overlap: int, multiple: int) -> None:
    """ValueError naming the rule a patch size or overlap breaks."""
    if patch < multiple or patch % multiple:
        raise ValueError(f"patch must be a multiple of {multiple} (the generator's total stride), got {patch}")
    if not 0 <= overlap < patch:
        raise ValueError(f"overlap must be at least 0 and smaller than the patch ({patch}), got {overlap}")
    if patch - overlap < multiple:
        raise ValueError(f"patch {patch} with overlap {overlap} leaves a step under {multiple} voxels (the "
                         f"generator's stride); choose a smaller overlap")


@torch.no_grad()
def blend_patches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, patch: int, overlap: int,
                  halo: int, multiple: int) -> torch.Tensor:
    """fn over `x` [B, C, D, H, W] (each side a multiple of `multiple`) patch by patch, blended: [B, C', D, H, W]
    in float32 (module doc)."""
    check_patching(patch, overlap, multiple)
    shape = x.shape[2:]
    if any(n % multiple for n in shape):
        raise ValueError(f"the grid {tuple(shape)} must be a multiple of {multiple} along every axis")
    starts = [patch_starts(n, patch, overlap, multiple) for n in shape]
    windows = [_windows(n, s, patch, halo) for n, s in zip(shape, starts)]
    out = weight = None
    for i, a in enumerate(starts[0]):
        for j, b in enumerate(starts[1]):
            for k, c in enumerate(starts[2]):
                y = fn(x[:, :, a:a + patch, b:b + patch, c:c + patch]).float()
                w = (windows[0][i][:, None, None] * windows[1][j][None, :, None] * windows[2][k][None, None, :])
                w = w.to(device=y.device, dtype=torch.float32)
                if out is None:
                    out = torch.zeros(*y.shape[:2], *shape, dtype=torch.float32, device=y.device)
                    weight = torch.zeros(*shape, dtype=torch.float32, device=y.device)
                region = (slice(a, a + y.shape[2]), slice(b, b + y.shape[3]), slice(c, c + y.shape[4]))
                out[(slice(None), slice(None), *region)] += y * w
                weight[region] += w
    return out.div_(weight)
