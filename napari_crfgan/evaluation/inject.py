"""Controlled corruptions of volume sets, for metric sanity checks.

Each takes volumes ``[N, D, H, W]`` in [-1, 1] and returns a new float32 array
of the same shape (inputs are never modified):

- :func:`blur`: uniform Gaussian blur (a generator that is too smooth);
- :func:`slab_seams`: per-slab intensity gain/offset (and optional in-plane
  shift) discontinuities at slab borders along D, as a patch-wise generator makes;
- :func:`duplicate`: mode collapse to ``n_distinct`` distinct volumes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["blur", "slab_seams", "duplicate"]


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


def slab_seams(volumes, period: int, strength: float, *, shift: int = 0, seed: int = 0
               ) -> np.ndarray:
    """Discontinuities at slab borders along D, every ``period`` planes.

    Each slab ``[k * period, (k + 1) * period)`` of each volume gets its own
    foreground gain ``1 + strength * a`` and offset ``strength * b`` (``a, b`` ~
    N(0, 1)), i.e. ``v' = (v + 1) * gain - 1 + offset``, so the background (-1)
    barely moves while tissue jumps from slab to slab; with ``shift > 0`` each
    slab is also rolled in-plane by up to ``shift`` voxels. The result is clipped
    to [-1, 1]. Seeded by ``seed``.
    """
    v = _volumes(volumes)
    if period < 1:
        raise ValueError("period must be >= 1")
    rng = np.random.default_rng(seed)
    n, depth = v.shape[:2]
    n_slabs = -(-depth // period)
    gain = 1.0 + strength * rng.standard_normal((n, n_slabs))
    offset = strength * rng.standard_normal((n, n_slabs))
    shifts = rng.integers(-shift, shift + 1, size=(n, n_slabs, 2)) if shift > 0 else None
    for i in range(n):
        for k in range(n_slabs):
            sl = v[i, k * period:(k + 1) * period]
            fg = (sl + 1.0) * gain[i, k] - 1.0
            fg = fg + offset[i, k] * (sl > -0.95)
            if shifts is not None:
                fg = np.roll(fg, tuple(shifts[i, k]), axis=(1, 2))
            v[i, k * period:(k + 1) * period] = fg
    return np.clip(v, -1.0, 1.0)


def duplicate(volumes, n_distinct: int, *, seed: int = 0) -> np.ndarray:
    """Mode collapse: ``n_distinct`` volumes drawn (seeded) from the set, each repeated
    to fill the original count ``N``."""
    v = _volumes(volumes)
    if not 1 <= n_distinct <= len(v):
        raise ValueError(f"n_distinct must be in [1, {len(v)}]")
    keep = np.random.default_rng(seed).choice(len(v), n_distinct, replace=False)
    return v[keep[np.arange(len(v)) % n_distinct]].copy()
