"""The measures of mask-to-volume synthesis (experiments/mask_eval.py): arrays in, numbers out.

- :func:`dice`: overlap of a predicted and a true structure, per case;
- :func:`structure_means`: mean intensity (HU) inside each structure of a label map, which compares a
  synthetic volume with the real one on the same mask (per-structure intensity agreement);
- :func:`paint_sphere` and :func:`painted_contrast`: the painted-nodule check (a ball of the nodule
  label painted deep inside the lung; its mean HU minus that of a shell of lung around it);
- :func:`seed_interval`: mean and 95% t-interval over segmenter seeds.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

CONFIDENCE = 0.95


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """2 |P & T| / (|P| + |T|) of two boolean masks; NaN when both are empty (nothing to find, nothing found:
    such a case says nothing about the structure and is left out of its mean)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = int(pred.sum()) + int(truth.sum())
    return float("nan") if total == 0 else 2.0 * int((pred & truth).sum()) / total


def dice_per_structure(pred: np.ndarray, truth: np.ndarray, structures: Mapping[str, Sequence[int]]) -> dict:
    """{structure: Dice} of two class maps, a structure being the union of its classes."""
    return {name: dice(np.isin(pred, list(ks)), np.isin(truth, list(ks))) for name, ks in structures.items()}


def structure_means(volume: np.ndarray, labels: np.ndarray, structures: Mapping[str, Sequence[int]]) -> dict:
    """{structure: mean of `volume` over the voxels whose label is one of its labels}; None where it is absent."""
    out = {}
    for name, ks in structures.items():
        inside = np.isin(labels, list(ks))
        out[name] = float(volume[inside].mean()) if inside.any() else None
    return out


def paint_sphere(labels: np.ndarray, region: int, paint: int, radius: float, shell: float):
    """Paint a ball of label `paint` and radius `radius` (voxels) where the region `region` is deepest.

    Returns (painted labels, ball, shell) with shell the voxels of `region` (in the original labels) within
    `shell` voxels outside the ball; None when no ball of that radius fits inside the region.
    """
    inside = np.asarray(labels) == region
    if not inside.any():
        return None
    depth = ndimage.distance_transform_edt(inside)
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    if depth[centre] < radius:  # the ball would leave the region
        return None
    grid = np.indices(labels.shape, dtype=np.float64)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    ball = dist <= radius
    ring = (dist > radius) & (dist <= radius + shell) & inside
    painted = np.array(labels, copy=True)
    painted[ball] = paint
    return painted, ball, ring


def painted_contrast(volume: np.ndarray, ball: np.ndarray, shell: np.ndarray) -> float:
    """Mean of `volume` inside the painted ball minus its mean over the surrounding shell."""
    return float(volume[ball].mean() - volume[shell].mean())


def seed_interval(values: Sequence[float | None], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict:
    """Mean, std (ddof=1) and the 95% Student-t interval of the mean over seeds, cut to `bounds` (a Dice
    interval past 1 means nothing); None and NaN are dropped, no spread and no interval below two values."""
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))])
    if not len(v):
        return {"mean": None, "std": None, "low": None, "high": None, "n": 0}
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "std": None, "low": None, "high": None, "n": 1}
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(v) - 1)) * std / math.sqrt(len(v))
    return {"mean": mean, "std": std, "low": max(bounds[0], mean - half), "high": min(bounds[1], mean + half),
            "n": int(len(v))}


def nanmean(values: Sequence[float]) -> float | None:
    """Mean over the finite values (None when there are none)."""
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else None
