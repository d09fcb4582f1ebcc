"""Memorisation: is a generated volume closer to a training volume than new real volumes are?

A generator that copies its training scans scores well on realism and diversity
while leaking them. So, in the space of volumes average-pooled to 16^3 (the MMD's
space: anatomy, not noise), each generated volume's distance to its nearest
training volume is set against the same distance for held-out real (test)
volumes, which the generator never saw: the null of "as close as a new scan is".

Reported: the fraction of generated volumes closer to a training volume than the
5th percentile of the test-to-train distances (about 0.05 when generation is no
closer to the training set than new scans; well above it means memorisation), the
median distance ratio fake / test, and for each generated volume the index of its
nearest training volume (for a side-by-side montage).
"""
from __future__ import annotations

import numpy as np

from .mmd import pool_volumes

__all__ = ["nearest_distances", "memorisation"]


def nearest_distances(queries: np.ndarray, references: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance of each query row to its nearest reference row, and that row's index."""
    q, r = np.asarray(queries, np.float64), np.asarray(references, np.float64)
    d2 = np.maximum((q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T, 0.0)
    nearest = d2.argmin(axis=1)
    return np.sqrt(d2[np.arange(len(q)), nearest]), nearest


def memorisation(train, test, fake, *, pool: int = 16, quantile: float = 0.05) -> dict:
    """Nearest-training-volume distances of `fake` against those of held-out `test` volumes.

    train, test, fake: volumes ``[N, D, H, W]`` in [-1, 1]; test must not overlap train.
    """
    tr, te, fk = (pool_volumes(v, pool) for v in (train, test, fake))
    if len(tr) < 1 or len(te) < 2:
        raise ValueError("memorisation needs at least one training and two test volumes")
    d_test, _ = nearest_distances(te, tr)
    d_fake, nearest = nearest_distances(fk, tr)
    threshold = float(np.quantile(d_test, quantile))
    return {
        "value": float(np.mean(d_fake < threshold)),  # fraction closer than new scans' 5th percentile
        "null": quantile,
        "threshold": threshold,
        "median_ratio": float(np.median(d_fake) / np.median(d_test)),
        "fake_to_train": [float(d) for d in d_fake],
        "test_to_train": [float(d) for d in d_test],
        "nearest_train": [int(i) for i in nearest],
    }
