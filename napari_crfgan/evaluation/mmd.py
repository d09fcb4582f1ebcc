"""Voxel-space MMD with a Gaussian kernel and a permutation test.

Measures the unbiased squared maximum mean discrepancy (Gretton et al. 2012)
between real and generated volumes, each average-pooled to ``16^3`` voxels and
flattened, under a Gaussian kernel ``exp(-|x - y|^2 / (2 s^2))`` whose bandwidth
``s`` is the median pairwise distance of the pooled REAL volumes (median heuristic
on the reference set only), so every system compared with the same real set is
scored with the same kernel; :func:`~napari_crfgan.evaluation.evaluate` computes it
once from the whole real set and uses it for the real-vs-real floor too. A
permutation test over the set labels gives a p-value for "the two sets come from
the same distribution". Lower MMD^2 is better; a small p-value
(e.g. < 0.05) means the generated set is distinguishable from the real one.

This is not MONAI's ``MMDMetric``, whose linear kernel only sees a mean shift.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mmd", "pool_volumes", "gaussian_mmd2", "median_bandwidth"]


def pool_volumes(volumes, size: int = 16) -> np.ndarray:
    """Average-pool volumes ``[N, D, H, W]`` to ``[N, size**3]`` (float64)."""
    v = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))
    if v.ndim == 5 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 4:
        raise ValueError(f"expected volumes [N, D, H, W], got shape {tuple(v.shape)}")
    with torch.no_grad():
        p = F.adaptive_avg_pool3d(v.unsqueeze(1), size)
    return p.flatten(1).double().numpy()


def _mmd2_from_kernel(k: np.ndarray, is_x: np.ndarray) -> float:
    """Unbiased MMD^2 from a joint kernel matrix and a boolean label vector."""
    x, y = is_x, ~is_x
    n, m = int(x.sum()), int(y.sum())
    kxx = k[np.ix_(x, x)]
    kyy = k[np.ix_(y, y)]
    kxy = k[np.ix_(x, y)]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2.0 * kxy.mean())


def _squared_distances(z: np.ndarray) -> np.ndarray:
    sq = np.sum(z * z, axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """Median pairwise distance between rows of ``x`` (the reference set), 1 if degenerate."""
    x = np.asarray(x, np.float64)
    d2 = _squared_distances(x)
    off = d2[~np.eye(len(x), dtype=bool)]
    med = float(np.median(np.sqrt(off))) if off.size else 1.0
    return med if med > 0 else 1.0


def gaussian_mmd2(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None
                  ) -> tuple[float, np.ndarray, float]:
    """Unbiased Gaussian-kernel MMD^2 between rows of ``x`` (reference) and ``y``.

    Returns ``(mmd2, joint_kernel, bandwidth)``; the bandwidth defaults to the
    median pairwise distance within ``x``.
    """
    z = np.concatenate([np.asarray(x, np.float64), np.asarray(y, np.float64)])
    d2 = _squared_distances(z)
    if bandwidth is None:
        bandwidth = median_bandwidth(x)
    k = np.exp(-d2 / (2.0 * bandwidth ** 2))
    is_x = np.zeros(len(z), dtype=bool)
    is_x[: len(x)] = True
    return _mmd2_from_kernel(k, is_x), k, float(bandwidth)


def mmd(real, fake, *, pool: int = 16, permutations: int = 200, seed: int = 0,
        bandwidth: float | None = None) -> dict:
    """Gaussian MMD^2 of real vs generated volumes, with a permutation p-value.

    Args:
        real, fake: volumes ``[N, D, H, W]`` and ``[M, D, H, W]`` in [-1, 1], N, M >= 2.
        pool: side of the average-pooled grid (16 -> 4096-d vectors).
        permutations: label permutations for the p-value (seeded by ``seed``).
        bandwidth: kernel bandwidth on the pooled vectors (default: the median pairwise
            distance of the pooled ``real`` volumes).

    Returns:
        ``{"value": MMD^2, "std": std of MMD^2 under the permutation null (the
        noise scale at these counts), "p": permutation p-value, "bandwidth": s}``.
        Lower value is better; p < 0.05 means the sets differ significantly.
    """
    x, y = pool_volumes(real, pool), pool_volumes(fake, pool)
    if len(x) < 2 or len(y) < 2:
        raise ValueError("MMD needs at least 2 volumes per set")
    value, k, bw = gaussian_mmd2(x, y, bandwidth)
    rng = np.random.default_rng(seed)
    base = np.zeros(len(x) + len(y), dtype=bool)
    base[: len(x)] = True
    null = np.empty(permutations)
    for i in range(permutations):
        null[i] = _mmd2_from_kernel(k, rng.permutation(base))
    p = (1.0 + np.sum(null >= value)) / (1.0 + permutations)
    return {"value": value, "std": float(null.std()) if permutations else 0.0,
            "p": float(p), "bandwidth": bw}
