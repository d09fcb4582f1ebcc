"""Precision, recall, density and coverage of generated features (k-NN manifolds).

With ``k = 5`` nearest neighbours on features (Kynkaanniemi et al. 2019; Naeem et
al. 2020):

- precision: fraction of generated samples inside some real k-NN ball (fidelity);
- recall: fraction of real samples inside some generated k-NN ball (diversity);
- density: mean number of real balls containing each generated sample, over k
  (fidelity, robust to real outliers; ~1 for matching distributions, may exceed 1);
- coverage: fraction of real samples whose ball holds a generated sample (the
  mode-collapse detector).

Higher is better for all four (density: ~1 is ideal).
"""
from __future__ import annotations

import numpy as np

__all__ = ["prdc"]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sa, sb = np.sum(a * a, axis=1), np.sum(b * b, axis=1)
    return np.maximum(sa[:, None] + sb[None, :] - 2.0 * a @ b.T, 0.0)


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each row to its k-th nearest other row."""
    d = _sq_dists(x, x)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def prdc(real_features: np.ndarray, fake_features: np.ndarray, k: int = 5) -> dict:
    """Precision, recall, density, coverage of fake features ``[M, F]`` against
    real features ``[N, F]`` with ``k`` nearest neighbours (N, M > k).

    Returns ``{"precision", "recall", "density", "coverage"}`` floats; higher is
    better (density ~1 is ideal).
    """
    x = np.asarray(real_features, np.float64)
    y = np.asarray(fake_features, np.float64)
    if len(x) <= k or len(y) <= k:
        raise ValueError(f"PRDC with k={k} needs more than {k} samples per set")
    r_real = _knn_radii(x, k)
    r_fake = _knn_radii(y, k)
    d = _sq_dists(x, y)  # [N, M]
    inside_real = d <= r_real[:, None]  # fake j inside the ball of real i
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * len(y))),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }
