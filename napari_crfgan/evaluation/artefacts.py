"""Slab seams and upsampling-grid artefacts as two tests with a real-data null.

Both read the same per-volume profile along one axis: the masked mean SQUARED
difference of neighbouring planes, g2(s) = mean (V[s + 1] - V[s])^2 over voxels
where either plane is above 5% of the range. Squared differences make additive
noise harmless: i.i.d. noise of std sigma adds 2 sigma^2 to every gap alike, and
both statistics below compare gaps with other gaps of the same set.

Each volume's profile is folded by the slab period P (the training slab, size / 8):
F(phi) = mean of g2(s) over the gaps with (s + 1) mod P = phi, so a slab border at
planes phi, phi + P, ... raises F(phi). G^H's two nearest x2 upsamplings repeat
every q = 4 planes (q divides P for sizes >= 64), which raises every F(phi) of one
residue phi mod q alike. So, on the set-mean folded profile:

- grid: G(r) = min over the P / q copies of F(r + q j), the part shared by every copy
  (a seam sits in one copy, so the min ignores it); grid strength = max_r G - min_r G;
- seams: R(phi) = F(phi) - G(phi mod q), what one copy has beyond the others; seam
  strength = max_phi R(phi), scanned over every phase (seams at unknown phase).

Each strength is reported for the fake set minus the real set (the real profile at
the same phase is the null: anatomy has its own structure), divided by the real
set's mean g2 (a scale-free excess), with a permutation p-value over the volumes'
set labels (the same statistic on shuffled sets). A small p means the artefact is
there; the validation matrix in docs/evaluation.md (and tests/test_artefacts.py)
shows each test reacting to its own artefact and staying at its null for the other,
for additive noise and for blur.

At 32^3 the slab period (4) equals the grid period: there the two cannot be told apart.
"""
from __future__ import annotations

import numpy as np

from .seams import _plane_pair_mask

__all__ = ["squared_gaps", "folded_profiles", "artefact_tests"]

GRID_PERIOD = 4  # G^H: two nearest x2 upsamplings


def squared_gaps(volumes, axis: int = 0, *, value_range=(-1.0, 1.0), threshold: float = 0.05) -> np.ndarray:
    """Per-volume masked mean squared plane differences ``[N, L - 1]`` (NaN where the mask is empty)."""
    v, mask = _plane_pair_mask(volumes, axis, value_range, threshold)
    diff = np.square(v[:, 1:] - v[:, :-1], dtype=np.float64) * mask
    num = diff.reshape(*diff.shape[:2], -1).sum(-1)
    den = mask.reshape(*mask.shape[:2], -1).sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def folded_profiles(gaps: np.ndarray, period: int) -> np.ndarray:
    """``[N, period]``: each volume's gaps averaged by slab phase (s + 1) mod period."""
    phase = (np.arange(gaps.shape[1]) + 1) % period
    out = np.empty((gaps.shape[0], period))
    for p in range(period):
        with np.errstate(invalid="ignore"):
            out[:, p] = np.nanmean(gaps[:, phase == p], axis=1)
    return out


def _seam_strength(folded: np.ndarray, grid: int) -> tuple[float, int]:
    """(seam strength, phase) of one set-mean folded profile: the most any phase has beyond the
    part its residue mod `grid` shares with the other copies (their minimum)."""
    period = len(folded)
    if period % grid == 0 and period > grid:
        shared = np.tile(np.nanmin(folded.reshape(period // grid, grid), axis=0), period // grid)
    else:  # the periods coincide or do not nest: the whole profile counts as seams
        shared = np.full(period, np.nanmin(folded))
    residual = folded - shared
    phase = int(np.nanargmax(residual))
    return float(residual[phase]), phase


def _grid_strength(folded: np.ndarray) -> float:
    """Range of a set-mean profile folded by the grid period."""
    return float(np.nanmax(folded) - np.nanmin(folded))


def _permutation_test(real: np.ndarray, fake: np.ndarray, statistic, permutations: int, seed: int):
    """Observed statistic(real, fake) and its one-sided permutation p-value over set labels."""
    observed = statistic(real, fake)
    pooled, n = np.concatenate([real, fake]), len(real)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    for i in range(permutations):
        order = rng.permutation(len(pooled))
        null[i] = statistic(pooled[order[:n]], pooled[order[n:]])
    return observed, float((1 + np.sum(null >= observed)) / (1 + permutations)), float(null.std())


def artefact_tests(real, fake, *, seam_axis: int = 0, grid_axes: tuple[int, ...] = (1, 2),
                   period: int | None = None, grid: int = GRID_PERIOD, permutations: int = 500,
                   seed: int = 0) -> dict:
    """Seam test along `seam_axis` (the slab axis, D) and grid test along `grid_axes` (H, W: the
    upsampling grid is in every axis, slab borders are not, so in-plane the grid is seen alone).

    Returns ``{"seams": {...}, "grid": {...}}``, each with ``value`` (fake minus real
    strength, in units of the real set's mean squared plane gap; ~0 without the
    artefact), ``fake`` and ``real`` strengths, ``p`` (permutation p-value, one-sided),
    ``null_std`` (spread of the statistic under the permutation null); for seams also the
    ``phase`` of the strongest slab border and the ``period`` scanned.
    """
    r_gaps, f_gaps = squared_gaps(real, seam_axis), squared_gaps(fake, seam_axis)
    period = period or max(grid, (r_gaps.shape[1] + 1) // 8)
    r_fold, f_fold = folded_profiles(r_gaps, period), folded_profiles(f_gaps, period)
    scale = float(np.nanmean(r_fold)) or 1.0

    def seams(a, b):
        return (_seam_strength(np.nanmean(b, axis=0) / scale, grid)[0]
                - _seam_strength(np.nanmean(a, axis=0) / scale, grid)[0])

    seam, seam_p, seam_null = _permutation_test(r_fold, f_fold, seams, permutations, seed)
    f_seam, phase = _seam_strength(np.nanmean(f_fold, axis=0) / scale, grid)
    r_seam, _ = _seam_strength(np.nanmean(r_fold, axis=0) / scale, grid)

    def grid_profiles(volumes) -> np.ndarray:  # [N, grid]: the grid axes' profiles folded and averaged
        return np.mean([folded_profiles(squared_gaps(volumes, a), grid) for a in grid_axes], axis=0)

    r_grid, f_grid = grid_profiles(real), grid_profiles(fake)
    grid_scale = float(np.nanmean(r_grid)) or 1.0

    def grids(a, b):
        return (_grid_strength(np.nanmean(b, axis=0)) - _grid_strength(np.nanmean(a, axis=0))) / grid_scale

    grid_value, grid_p, grid_null = _permutation_test(r_grid, f_grid, grids, permutations, seed + 1)
    return {
        "seams": {"value": seam, "fake": f_seam, "real": r_seam, "p": seam_p, "null_std": seam_null,
                  "phase": phase, "period": period, "axis": "dhw"[seam_axis]},
        "grid": {"value": grid_value, "fake": _grid_strength(np.nanmean(f_grid, axis=0)) / grid_scale,
                 "real": _grid_strength(np.nanmean(r_grid, axis=0)) / grid_scale, "p": grid_p,
                 "null_std": grid_null, "grid_period": grid, "axes": "".join("dhw"[a] for a in grid_axes)},
    }
