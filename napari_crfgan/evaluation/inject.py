"""Controlled corruptions of volume sets, for metric sanity checks.

Each takes volumes ``[N, D, H, W]`` in [-1, 1] and returns a new float32 array
of the same shape (inputs are never modified):

- :func:`blur`: uniform Gaussian blur (a generator that is too smooth);
- :func:`slab_seams`: per-slab intensity gain/offset (and optional in-plane
  shift) discontinuities at slab borders along D, as a patch-wise generator makes;
- :func:`duplicate`: mode collapse to ``n_distinct`` distinct volumes;
- :func:`noise`: additive Gaussian noise;
- :func:`nearest_grid`: the blocky grid of nearest-neighbour upsampling, without slabs.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["blur", "slab_seams", "duplicate", "noise", "nearest_grid"]


def _volumes(volumes) -> np.ndarray:
    v = np.array(volumes, dtype=np.float32, copy=True)
    if v.ndim != 4:
        raise ValueError(f"expected volumes [N, D, H, W], got shape {v.shape}")
    return v


def blur(volumes, sigma: float) -> np.ndarray:
    """Isotropic Gaussian blur of each volume (std ``sigma`` voxels, edges replicated)."""
    v = _volumes(volumes)
    if sigma <= 0:
        return v
    return ndimage.gaussian_filter(v, sigma=(0, sigma, sigma, sigma), mode="nearest"
                                   ).astype(np.float32)


def slab_seams(volumes, period: int, strength: float, *, shift: int = 0, seed: int = 0, phase: int = 0,
               kind: str = "both") -> np.ndarray:
    """Discontinuities at slab borders along D, every ``period`` planes from plane ``phase``.

    Each slab ``[phase + k * period, phase + (k + 1) * period)`` of each volume gets its
    own foreground gain ``1 + strength * a`` and offset ``strength * b`` (``a, b`` ~
    N(0, 1)), i.e. ``v' = (v + 1) * gain - 1 + offset``, so the background (-1)
    barely moves while tissue jumps from slab to slab; ``kind`` "gain" or "offset"
    keeps one of the two (multiplicative or additive seams). With ``shift > 0`` each
    slab is also rolled in-plane by up to ``shift`` voxels. The result is clipped
    to [-1, 1]. Seeded by ``seed``.
    """
    v = _volumes(volumes)
    if period < 1:
        raise ValueError("period must be >= 1")
    if kind not in ("both", "gain", "offset"):
        raise ValueError(f"kind must be both, gain or offset, not {kind!r}")
    rng = np.random.default_rng(seed)
    n, depth = v.shape[:2]
    phase %= period
    starts = [0, *range(phase or period, depth, period)]
    n_slabs = len(starts)
    gain = 1.0 + strength * rng.standard_normal((n, n_slabs)) * (kind != "offset")
    offset = strength * rng.standard_normal((n, n_slabs)) * (kind != "gain")
    shifts = rng.integers(-shift, shift + 1, size=(n, n_slabs, 2)) if shift > 0 else None
    for i in range(n):
        for k, (a, b) in enumerate(zip(starts, [*starts[1:], depth])):
            sl = v[i, a:b]
            fg = (sl + 1.0) * gain[i, k] - 1.0
            fg = fg + offset[i, k] * (sl > -0.95)
            if shifts is not None:
                fg = np.roll(fg, tuple(shifts[i, k]), axis=(1, 2))
            v[i, a:b] = fg
    return np.clip(v, -1.0, 1.0)


def duplicate(volumes, n_distinct: int, *, seed: int = 0) -> np.ndarray:
    """Mode collapse: ``n_distinct`` volumes drawn (seeded) from the set, each repeated
    to fill the original count ``N``."""
    v = _volumes(volumes)
    if not 1 <= n_distinct <= len(v):
        raise ValueError(f"n_distinct must be in [1, {len(v)}]")
    keep = np.random.default_rng(seed).choice(len(v), n_distinct, replace=False)
    return v[keep[np.arange(len(v)) % n_distinct]].copy()


def noise(volumes, sigma: float, *, seed: int = 0) -> np.ndarray:
    """Additive i.i.d. Gaussian noise of std ``sigma`` (not clipped). Seeded by ``seed``."""
    v = _volumes(volumes)
    return (v + np.random.default_rng(seed).normal(0.0, sigma, v.shape)).astype(np.float32)


def nearest_grid(volumes, factor: int = 4, strength: float = 1.0) -> np.ndarray:
    """The grid of nearest x``factor`` upsampling (no slabs): each volume mixed with its block-mean
    version, ``(1 - strength) v + strength * nearest_up(mean_pool(v))``, blocks aligned at 0."""
    v = _volumes(volumes)
    n, d, h, w = v.shape
    if d % factor or h % factor or w % factor:
        raise ValueError(f"volume sides {v.shape[1:]} must be multiples of {factor}")
    blocks = v.reshape(n, d // factor, factor, h // factor, factor, w // factor, factor).mean(axis=(2, 4, 6))
    up = blocks.repeat(factor, 1).repeat(factor, 2).repeat(factor, 3)
    return ((1 - strength) * v + strength * up).astype(np.float32)
