"""Kernel Inception Distance (KID) on any feature extractor.

Measures the squared maximum mean discrepancy between real and generated
features under the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, with
the unbiased estimator, averaged over random subsets (Binkowski et al. 2018).
Lower is better; the estimator is unbiased, so it is ~0 (and may be slightly
negative) when both sets come from the same distribution, at any sample size.
"""
from __future__ import annotations

import numpy as np

__all__ = ["kid", "polynomial_mmd2"]


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between ``x [n, d]`` and ``y [m, d]`` (n, m >= 2), cubic kernel."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("KID needs at least 2 samples per set")
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(real_features: np.ndarray, fake_features: np.ndarray, *, subsets: int = 100,
        subset_size: int | None = None, seed: int = 0) -> tuple[float, float]:
    """KID between feature sets ``[N, F]`` and ``[M, F]``: ``(mean, std)`` over subsets.

    Each of ``subsets`` draws takes ``subset_size`` rows of each set without
    replacement (seeded by ``seed``) and computes the unbiased MMD^2. The default
    subset size is ``min(N, M, 1000)``; when it equals both set sizes every draw is
    the full-set estimate and the std is 0. Lower is better.
    """
    x = np.asarray(real_features, np.float64)
    y = np.asarray(fake_features, np.float64)
    size = min(len(x), len(y), 1000) if subset_size is None else int(subset_size)
    size = min(size, len(x), len(y))
    if size < 2:
        raise ValueError("KID needs at least 2 samples per set")
    if size == len(x) == len(y):
        return polynomial_mmd2(x, y), 0.0
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for i in range(subsets):
        xi = x[rng.choice(len(x), size, replace=False)]
        yi = y[rng.choice(len(y), size, replace=False)]
        vals[i] = polynomial_mmd2(xi, yi)
    return float(vals.mean()), float(vals.std())
