"""Multi-scale SSIM for 3D volumes, and MS-SSIM diversity of a sample set.

MS-SSIM (Wang et al. 2003) compares two volumes by luminance, contrast and
structure over a pyramid of scales (1 = identical). As a *diversity* measure
(Odena et al. 2017), the mean MS-SSIM over random pairs of generated volumes is
reported beside the same over pairs of real volumes: lower = more diverse; a
generated value clearly above the real one signals mode collapse, one below it
signals noise-like samples. Duplicated samples push it towards 1.

Small volumes need a small window: the 11-voxel default window of 2D SSIM needs
160+ voxels a side for five scales. Here the window is 3 at 64^3 and below, 7 up
to 175, 11 above, and the number of scales (at most 5) is the largest for which
the coarsest scale still holds a whole window.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ms_ssim", "msssim_diversity", "msssim_pair_values", "default_kernel_size", "num_scales"]

_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def default_kernel_size(min_side: int) -> int:
    """Window size used for volumes whose smallest side is ``min_side``."""
    if min_side <= 64:
        return 3
    if min_side < 176:
        return 7
    return 11


def num_scales(min_side: int, kernel_size: int, max_scales: int = 5) -> int:
    """Largest number of dyadic scales (<= max_scales) whose coarsest side >= window."""
    s = 1
    while s < max_scales and (min_side >> s) >= kernel_size:
        s += 1
    return s


def _window(kernel_size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(kernel_size, dtype=torch.float32) - (kernel_size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filtering of ``[B, C, D, H, W]``.

    Written as in-place weighted sums of shifted views: for the small windows
    used here this is as fast as ``conv3d`` and has no per-shape warm-up cost.
    """
    k = len(g)
    weights = [float(w) for w in g]
    for axis in (2, 3, 4):
        n = x.shape[axis] - k + 1
        out = x.narrow(axis, 0, n) * weights[0]
        for j in range(1, k):
            out.add_(x.narrow(axis, j, n), alpha=weights[j])
        x = out
    return x


def ms_ssim(x, y, *, data_range: float = 2.0, kernel_size: int | None = None,
            sigma: float | None = None, scales: int | None = None) -> np.ndarray:
    """MS-SSIM between paired volumes ``x[i]`` and ``y[i]`` (``[B, D, H, W]``).

    Args:
        data_range: intensity range (2 for the model's [-1, 1]).
        kernel_size: Gaussian window (default from :func:`default_kernel_size`).
        sigma: window std (default ``max(0.75, 1.5 * kernel_size / 11)``).
        scales: number of scales (default :func:`num_scales`).

    Returns:
        float array ``[B]``; 1 = identical, higher = more similar. Negative
        contrast-structure terms are clamped at 0 so fractional powers stay real.
    """
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.ascontiguousarray(y, dtype=np.float32))
    if xt.ndim == 3:
        xt, yt = xt[None], yt[None]
    if xt.shape != yt.shape or xt.ndim != 4:
        raise ValueError(f"expected paired volumes [B, D, H, W], got {tuple(xt.shape)} "
                         f"and {tuple(yt.shape)}")
    min_side = min(xt.shape[1:])
    k = default_kernel_size(min_side) if kernel_size is None else int(kernel_size)
    if min_side < k:
        raise ValueError(f"volumes of side {min_side} are smaller than the window {k}")
    sig = max(0.75, 1.5 * k / 11) if sigma is None else float(sigma)
    n = num_scales(min_side, k) if scales is None else int(scales)
    if (min_side >> (n - 1)) < k:
        raise ValueError(f"{n} scales do not fit a window of {k} in side {min_side}")
    w = torch.tensor(_WEIGHTS[:n], dtype=torch.float64)
    w = w / w.sum()
    g = _window(k, sig)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    a, b = xt.unsqueeze(1), yt.unsqueeze(1)
    out = torch.ones(len(a), dtype=torch.float64)
    with torch.no_grad():
        for i in range(n):
            stats = _blur(torch.cat([a, b, a * a, b * b, a * b], dim=1), g)
            mu_a, mu_b = stats[:, 0:1], stats[:, 1:2]
            var_a = stats[:, 2:3] - mu_a ** 2
            var_b = stats[:, 3:4] - mu_b ** 2
            cov = stats[:, 4:5] - mu_a * mu_b
            cs_map = (2 * cov + c2) / (var_a + var_b + c2)
            if i < n - 1:
                term = cs_map.flatten(1).mean(1)
                a, b = F.avg_pool3d(a, 2), F.avg_pool3d(b, 2)
            else:
                lum = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1)
                term = (lum * cs_map).flatten(1).mean(1)
            out = out * term.double().clamp_min(0.0) ** w[i]
    return out.numpy()


def _pairs(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` distinct unordered index pairs (i < j); all of them if fewer."""
    iu, ju = np.triu_indices(n, k=1)
    if len(iu) <= count:
        return np.stack([iu, ju], axis=1)
    pick = rng.choice(len(iu), size=count, replace=False)
    return np.stack([iu[pick], ju[pick]], axis=1)


def msssim_pair_values(volumes, *, pairs: int = 100, seed: int = 0,
                       batch_size: int | None = None, **kwargs) -> np.ndarray:
    """MS-SSIM of up to ``pairs`` random distinct pairs of one set (all pairs if fewer).

    ``batch_size`` pairs are compared at once (default: about 2^22 voxels a
    batch, at most 32 pairs).
    """
    v = np.asarray(volumes, dtype=np.float32)
    if v.ndim == 5 and v.shape[1] == 1:
        v = v[:, 0]
    if len(v) < 2:
        raise ValueError("diversity needs at least 2 volumes")
    if batch_size is None:
        batch_size = max(1, min(32, (1 << 22) // int(np.prod(v.shape[1:]))))
    idx = _pairs(len(v), pairs, np.random.default_rng(seed))
    vals = [ms_ssim(v[idx[i:i + batch_size, 0]], v[idx[i:i + batch_size, 1]], **kwargs)
            for i in range(0, len(idx), batch_size)]
    return np.concatenate(vals)


def msssim_diversity(volumes, *, pairs: int = 100, seed: int = 0,
                     batch_size: int | None = None, **kwargs) -> tuple[float, float]:
    """Mean and std of MS-SSIM over random distinct pairs of one sample set.

    Lower = more diverse. Compare the generated value with the same on real
    volumes (the real-vs-real floor); duplicates (mode collapse) raise it.
    Extra keyword arguments go to :func:`ms_ssim`.
    """
    vals = msssim_pair_values(volumes, pairs=pairs, seed=seed, batch_size=batch_size, **kwargs)
    return float(vals.mean()), float(vals.std())
