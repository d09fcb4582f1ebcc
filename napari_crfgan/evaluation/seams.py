"""Seam Discontinuity Ratio (SDR): the slab-border artefact CRF-GAN removes.

Generators that decode a volume as separate sub-volumes (slabs along D) can leave
jumps of intensity at slab borders. Per plane ``s`` along an axis,

    g(s) = masked mean of |V[s + 1] - V[s]|,

with the mask = voxels where either plane is above 5% of the intensity range
(``lo + 0.05 (hi - lo)``, range [-1, 1] by default), so empty background does not
dilute it. Profiles are averaged over volumes (``g_bar``).

- Grid variant, seams at known places ``S`` (difference indices ``s`` such that
  ``V[s]`` ends a slab and ``V[s + 1]`` starts the next):
  ``SDR = mean_S g_bar(s) / mean_S mean(g_bar(s-2), g_bar(s-1), g_bar(s+1), g_bar(s+2))``.
  About 1 without seams; higher = stronger seams. Fake SDR is reported beside
  the real SDR on the same grid; their difference has a bootstrap interval
  (volumes resampled). A uniform blur scales all g alike and leaves SDR put.
- Grid-free variant, seams at unknown places: ratio profile
  ``r(k) = g_bar_fake(k) / g_bar_real(k)``; reported: ``max_k |r(k) - 1|`` (lower
  is better; the real-vs-real floor shows its noise) and the amplitude of the
  periodic component of ``r`` at the sub-volume period (lower is better).

The CRF-GAN sub-volume is a slab along D of thickness ``size / 8``, so the default
grid is every ``D / 8`` planes along D.
"""
from __future__ import annotations

import numpy as np

__all__ = ["plane_gaps", "plane_support", "seam_indices", "grid_sdr", "sdr", "sdr_profile"]


def _plane_pair_mask(volumes, axis: int, value_range, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Volumes with `axis` moved first ``[N, L, ...]`` and the mask of each neighbouring
    plane pair ``[N, L - 1, ...]``: voxels where either plane is above `threshold` of the range."""
    v = np.asarray(volumes, dtype=np.float32)
    if v.ndim == 5 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 4:
        raise ValueError(f"expected volumes [N, D, H, W], got shape {v.shape}")
    v = np.moveaxis(v, axis + 1, 1)
    if value_range is None:
        lo = v.min(axis=(1, 2, 3), keepdims=True)
        hi = v.max(axis=(1, 2, 3), keepdims=True)
    else:
        lo, hi = value_range
    above = v > lo + threshold * (np.asarray(hi) - np.asarray(lo))
    return v, above[:, 1:] | above[:, :-1]


def plane_gaps(volumes, axis: int = 0, *, value_range: tuple[float, float] | None = (-1.0, 1.0),
               threshold: float = 0.05) -> np.ndarray:
    """Per-volume profiles ``g(s)`` along a spatial axis: ``[N, L - 1]`` (NaN where the
    mask is empty).

    Args:
        volumes: ``[N, D, H, W]``.
        axis: spatial axis, 0 = D, 1 = H, 2 = W.
        value_range: intensity range for the 5% mask threshold; ``None`` uses each
            volume's own min and max.
        threshold: mask fraction of the range (0.05).
    """
    v, mask = _plane_pair_mask(volumes, axis, value_range, threshold)
    diff = np.abs(v[:, 1:] - v[:, :-1]) * mask
    num = diff.reshape(*diff.shape[:2], -1).sum(-1, dtype=np.float64)
    den = mask.reshape(*mask.shape[:2], -1).sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def seam_indices(length: int, period: int) -> np.ndarray:
    """Difference indices ``s`` of slab borders every ``period`` planes in an axis of
    ``length`` planes, keeping those with two neighbours each side in the profile."""
    if period < 3:
        raise ValueError("seam period must be >= 3 planes (neighbours must not be seams)")
    s = np.arange(period, length, period) - 1
    return s[(s >= 2) & (s <= length - 4)]


def grid_sdr(profile: np.ndarray, seams: np.ndarray) -> float:
    """Grid SDR of one mean profile ``g_bar`` ``[L - 1]`` (or a batch ``[B, L - 1]``)."""
    p = np.asarray(profile, dtype=np.float64)
    seams = np.asarray(seams)
    if len(seams) == 0:
        raise ValueError("no seam positions fit in this axis")
    at = p[..., seams]
    near = np.stack([p[..., seams + o] for o in (-2, -1, 1, 2)], axis=0).mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(at, axis=-1) / np.nanmean(near, axis=-1)


def _mean_profiles(g: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """NaN-aware mean over volumes; ``weights [B, N]`` gives ``B`` resampled means."""
    valid = np.isfinite(g)
    g0 = np.where(valid, g, 0.0)
    if weights is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            return g0.sum(0) / valid.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ g0) / (weights @ valid.astype(np.float64))


def _boot_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def sdr(real, fake, *, axis: int = 0, period: int | None = None, n_boot: int = 1000,
        seed: int = 0, confidence: float = 0.95,
        value_range: tuple[float, float] | None = (-1.0, 1.0), threshold: float = 0.05) -> dict:
    """Grid Seam Discontinuity Ratio of fake and real volumes on the same grid.

    Args:
        real, fake: volumes ``[N, D, H, W]``, ``[M, D, H, W]`` of the same shape.
        axis: 0 = D, 1 = H, 2 = W.
        period: slab thickness in planes (default: axis length // 8).
        n_boot: bootstrap resamples of the volumes (seeded by ``seed``).

    Returns:
        ``{"value": SDR_fake, "std": its bootstrap std, "real": SDR_real,
        "diff": SDR_fake - SDR_real, "ci": [lo, hi] bootstrap interval of diff,
        "period": period}``. SDR ~ 1 without seams; higher = stronger seams;
        ``diff`` near 0 (ci holding 0) = no more seams than real data.
    """
    gr = plane_gaps(real, axis, value_range=value_range, threshold=threshold)
    gf = plane_gaps(fake, axis, value_range=value_range, threshold=threshold)
    length = gr.shape[1] + 1
    period = max(3, length // 8) if period is None else int(period)
    seams = seam_indices(length, period)
    rng = np.random.default_rng(seed)
    s_real = float(grid_sdr(_mean_profiles(gr), seams))
    s_fake = float(grid_sdr(_mean_profiles(gf), seams))
    b_real = grid_sdr(_mean_profiles(gr, _boot_weights(len(gr), n_boot, rng)), seams)
    b_fake = grid_sdr(_mean_profiles(gf, _boot_weights(len(gf), n_boot, rng)), seams)
    a = (1.0 - confidence) / 2
    lo, hi = np.nanquantile(b_fake - b_real, [a, 1 - a])
    return {"value": s_fake, "std": float(np.nanstd(b_fake)), "real": s_real,
            "diff": s_fake - s_real, "ci": [float(lo), float(hi)], "period": period}


def _periodic_amplitude(r: np.ndarray, period: float) -> np.ndarray:
    """Amplitude of the component of period ``period`` in profiles ``r [..., L]``."""
    k = np.arange(r.shape[-1])
    finite = np.isfinite(r)
    count = np.maximum(finite.sum(axis=-1), 1)
    with np.errstate(invalid="ignore"):
        centred = r - np.nanmean(np.where(finite, r, np.nan), axis=-1, keepdims=True)
    centred = np.where(finite, centred, 0.0)
    phase = np.exp(-2j * np.pi * k / period)
    return 2.0 * np.abs(centred @ phase) / count


def plane_support(volumes, axis: int = 0, *,
                  value_range: tuple[float, float] | None = (-1.0, 1.0),
                  threshold: float = 0.05) -> np.ndarray:
    """Mean fraction of masked voxels per plane pair along an axis: ``[L - 1]``."""
    _, mask = _plane_pair_mask(volumes, axis, value_range, threshold)
    return mask.reshape(*mask.shape[:2], -1).mean(-1).mean(0)


def sdr_profile(real, fake, *, axis: int = 0, period: int | None = None, n_boot: int = 1000,
                seed: int = 0, min_support: float = 0.25,
                value_range: tuple[float, float] | None = (-1.0, 1.0),
                threshold: float = 0.05) -> dict:
    """Grid-free seam measure: ratio profile ``r(k) = g_bar_fake(k) / g_bar_real(k)``.

    Planes whose mask covers (on average over the real volumes) less than
    ``min_support`` times the coverage of the best-covered plane are left out
    (NaN in the profile): near the ends of the object ``g`` is a mean over a
    handful of voxels and its ratio is noise that would dominate the maximum.
    ``min_support=0`` keeps every plane.

    Returns:
        ``{"value": max_k |r(k) - 1|, "std": its bootstrap std, "spectral":
        amplitude of r's component at ``period`` (default axis length // 8),
        "spectral_std": its bootstrap std, "period": period, "profile": r as a
        list}``. Lower is better for both; compare with the real-vs-real floor.
    """
    gr = plane_gaps(real, axis, value_range=value_range, threshold=threshold)
    gf = plane_gaps(fake, axis, value_range=value_range, threshold=threshold)
    length = gr.shape[1] + 1
    period = max(2, length // 8) if period is None else int(period)
    support = plane_support(real, axis, value_range=value_range, threshold=threshold)
    keep = support >= min_support * support.max() if support.max() > 0 else support > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(keep, _mean_profiles(gf) / _mean_profiles(gr), np.nan)
    rng = np.random.default_rng(seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        rb = (_mean_profiles(gf, _boot_weights(len(gf), n_boot, rng))
              / _mean_profiles(gr, _boot_weights(len(gr), n_boot, rng)))
    rb = np.where(keep, rb, np.nan)
    dev_b = np.nanmax(np.abs(rb - 1.0), axis=1)
    amp_b = _periodic_amplitude(rb, period)
    return {"value": float(np.nanmax(np.abs(r - 1.0))), "std": float(np.nanstd(dev_b)),
            "spectral": float(_periodic_amplitude(r, period)),
            "spectral_std": float(np.nanstd(amp_b)), "period": period,
            "profile": [float(x) if np.isfinite(x) else None for x in r]}
