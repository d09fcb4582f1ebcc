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
nearest training volume (for a side-by-side montage). :func:`nearest_training` asks
the same question of one volume (the napari sample widget's "Nearest training volume").
"""
from __future__ import annotations

import numpy as np

from .mmd import pool_volumes

__all__ = ["nearest_distances", "memorisation", "nearest_training"]


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


def _pooled_rows(volumes, pool: int) -> np.ndarray:
    """Pooled rows of an array [N, D, H, W], or of a sequence of volumes pooled one at a time.

    A sequence (e.g. a VolumeDataset of [1, S, S, S] tensors) is read item by item, so a
    large training set never has to fit in memory at full resolution.
    """
    if isinstance(volumes, np.ndarray):
        return pool_volumes(volumes, pool)
    rows = []
    for i in range(len(volumes)):
        v = np.asarray(volumes[i], np.float32)
        rows.append(pool_volumes(v.reshape(1, *v.shape[-3:]), pool))
    return np.concatenate(rows) if rows else np.zeros((0, pool ** 3))


def nearest_training(volume, train_volumes, test_volumes=None, *, pool: int = 16, quantile: float = 0.05) -> dict:
    """The training volume nearest to one `volume`, and how close that is next to held-out scans.

    volume: ``[D, H, W]`` in [-1, 1]; train_volumes / test_volumes: ``[N, D, H, W]`` arrays or
    sequences of volumes (``[1, D, H, W]`` items are fine), in [-1, 1]. Distances are those of
    :func:`memorisation` (volumes pooled to ``pool^3``). Returns ``index`` (of the nearest training
    volume), ``distance``, ``test_threshold`` (the `quantile` of the test-to-train distances; None
    without test volumes) and ``closer_than_test`` (distance below it: closer to a training scan
    than all but that fraction of new scans are; None without test volumes).
    """
    train = _pooled_rows(train_volumes, pool)
    if len(train) < 1:
        raise ValueError("the nearest training volume needs at least one training volume")
    d, nearest = nearest_distances(pool_volumes(np.asarray(volume, np.float32)[None], pool), train)
    threshold = closer = None
    if test_volumes is not None and len(test_volumes):
        d_test, _ = nearest_distances(_pooled_rows(test_volumes, pool), train)
        threshold = float(np.quantile(d_test, quantile))
        closer = bool(d[0] < threshold)
    return {"index": int(nearest[0]), "distance": float(d[0]), "test_threshold": threshold,
            "closer_than_test": closer}
