"""Is system A better than system B? A paired bootstrap of metric differences.

:func:`paired_bootstrap` compares two generated sets against the same real set and
reports, per metric, ``metric(A vs real) - metric(B vs real)`` with a 95% percentile
interval. The two sets are *paired*: ``fake_a[i]`` and ``fake_b[i]`` come from the
same latent seed, so each bootstrap replicate draws ONE index vector over the samples
and applies it to both sets (and one index vector over the real set, shared by both
comparisons). What the two systems have in common (the same latents, the same real
draw) then cancels in the difference, and the interval says whether they differ,
which the per-metric "±" of :func:`~napari_crfgan.evaluation.evaluate` cannot.

Method:

- Features are extracted once per volume set and (extractor, seed), divided by one
  scalar (RMS of the full real features); every replicate works on rows of these
  matrices (and on kernel / distance matrices precomputed from them), so it costs
  no network pass. Metrics are averaged over extractor seeds inside each replicate.
- FD: :func:`~napari_crfgan.evaluation.frechet.frechet_distance` of the resampled
  rows. Both systems are scored at the same count against the same real rows, so
  the finite-N bias is (to first order) shared and cancels in the difference; the
  values are NOT those of ``evaluate`` (which scores matched half-size chunks).
- KID and MMD: unbiased MMD^2 (cubic kernel on features; Gaussian kernel on voxels
  pooled to 16^3, bandwidth = median distance of the FULL real set, one fixed
  kernel as in ``evaluate``). In a replicate the within-set sums skip every pair of
  copies of the same volume, not only the diagonal, so resampling duplicates do not
  bias the estimator; KID is the full-sample estimate (no subsets).
- PRDC (k = 5, first extractor): copies of the same volume are never each other's
  k-NN (a zero radius would be a resampling artefact); other duplicates count with
  their multiplicity, as in the weighted empirical distribution.

``better`` names the system on the good side of zero when the interval excludes 0
(directions of :data:`~napari_crfgan.evaluation.report.METRIC_INFO`: lower for
FD/KID/MMD, higher for precision/recall/coverage), else ``None``; density ("~1")
has no direction and always gets ``None``.

:func:`seed_spread` summarises one metric over models trained with different seeds.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from . import features as _features
from .frechet import frechet_distance
from .kid import _poly_kernel
from .mmd import gaussian_mmd2, median_bandwidth, pool_volumes
from .prdc import _sq_dists
from .report import INTERVALS, _clean, _info

__all__ = ["paired_bootstrap", "bootstrap_indices", "seed_spread"]

PRDC_KEYS = ("precision", "recall", "density", "coverage")
CONFIDENCE = 0.95
K = 5  # PRDC neighbours, as in evaluate()


def bootstrap_indices(n_real: int, n_fake: int, n_boot: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Resampling indices: ``real [n_boot, n_real]`` and ``fake [n_boot, n_fake]``.

    There is ONE fake index array: row ``b`` is applied to both fake sets in
    replicate ``b``, which is what makes the bootstrap paired.
    """
    rng = np.random.default_rng(seed)
    return (rng.integers(0, n_real, size=(n_boot, n_real)),
            rng.integers(0, n_fake, size=(n_boot, n_fake)))


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """Multiplicity of each original row in each replicate: ``[B, n]``."""
    w = np.zeros((len(idx), n))
    np.add.at(w, (np.arange(len(idx))[:, None], idx), 1.0)
    return w


def _within(k: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mean kernel over ordered pairs of draws of DIFFERENT volumes, per replicate.

    With ``w = 1`` this is the usual unbiased term ``(sum K - trace K) / (n (n - 1))``;
    pairs of copies of one volume (``sum_o w_o^2 K_oo``) are left out like the diagonal.
    """
    n = w.sum(axis=1)
    same = (w * w) @ np.diag(k)
    return (np.einsum("bi,ij,bj->b", w, k, w) - same) / (n * n - (w * w).sum(axis=1))


def _cross(k: np.ndarray, wx: np.ndarray, wy: np.ndarray) -> np.ndarray:
    return np.einsum("bi,ij,bj->b", wx, k, wy) / (wx.sum(axis=1) * wy.sum(axis=1))


def _mmd2(kxx, kyy, kxy, wx, wy) -> np.ndarray:
    """Unbiased MMD^2 for each replicate's weights (``[B]``)."""
    return _within(kxx, wx) + _within(kyy, wy) - 2.0 * _cross(kxy, wx, wy)


def _radii(d: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """k-th nearest-neighbour squared distance of each draw among the other draws,
    copies of itself excluded."""
    sub = d[np.ix_(idx, idx)].copy()
    sub[idx[:, None] == idx[None, :]] = np.inf
    return np.partition(sub, k - 1, axis=1)[:, k - 1]


def _prdc(dxx, dyy, dxy, ir, iy, k: int = K) -> dict:
    """PRDC of fake draws ``iy`` against real draws ``ir`` from precomputed squared
    distances; with identity indices it equals :func:`~napari_crfgan.evaluation.prdc.prdc`."""
    r_real, r_fake = _radii(dxx, ir, k), _radii(dyy, iy, k)
    d = dxy[np.ix_(ir, iy)]
    inside_real = d <= r_real[:, None]
    return {"precision": float(inside_real.any(axis=0).mean()),
            "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
            "density": float(inside_real.sum() / (k * len(iy))),
            "coverage": float((d.min(axis=1) <= r_real).mean())}


def _row_space(*sets: np.ndarray) -> tuple[np.ndarray, ...]:
    """The sets in orthonormal coordinates of the span of all their rows (``<= N + 2M`` dims).

    Means, covariances and distances of any rows live in that span, and FD is invariant
    under the isometry, so the bootstrap FDs are unchanged while each one's SVD works on
    ~88 columns instead of 480-2048.
    """
    stacked = np.concatenate(sets)
    _, sv, vt = np.linalg.svd(stacked, full_matrices=False)
    basis = vt[sv > sv[0] * max(stacked.shape) * np.finfo(np.float64).eps * 10].T
    bounds = np.cumsum([0, *(len(x) for x in sets)])
    z = stacked @ basis
    return tuple(z[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:]))


def _better(key: str, diff: float, excludes_zero: bool) -> str | None:
    direction = _info(key)[0]
    if not excludes_zero or direction not in ("lower", "higher"):
        return None
    a_smaller = diff < 0
    return "a" if a_smaller == (direction == "lower") else "b"


def _check(real, fake_a, fake_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    real, fake_a, fake_b = (_features.as_volumes(v) for v in (real, fake_a, fake_b))
    if fake_a.shape != fake_b.shape:
        raise ValueError(f"paired sets need the same shape (fake_a[i], fake_b[i] from one latent seed), "
                         f"got {fake_a.shape} and {fake_b.shape}: keep the common seeds of both")
    if real.shape[1:] != fake_a.shape[1:]:
        raise ValueError(f"real volumes are {real.shape[1:]}, fake ones {fake_a.shape[1:]}")
    if min(len(real), len(fake_a)) < 3:
        raise ValueError(f"need >= 3 real and fake volumes, got {len(real)} and {len(fake_a)}")
    return real, fake_a, fake_b


# long: one straight sequence (features, point values, replicates, summary)
def paired_bootstrap(real, fake_a, fake_b, *, features: Sequence[str] = ("shallow",),
                     seeds: Sequence[int] = (0,), n_boot: int = 200, seed: int = 0,
                     metrics: Sequence[str] = ("fd", "kid", "mmd", "coverage"),
                     batch_size: int | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Paired-bootstrap differences ``metric(fake_a vs real) - metric(fake_b vs real)``.

    Args:
        real: real volumes ``[N, D, H, W]`` in [-1, 1].
        fake_a, fake_b: generated volumes ``[M, D, H, W]``, row ``i`` of both from the
            same latent seed (equal counts required).
        features: extractors for FD/KID (``"shallow"``, ``"resnet10"``,
            ``"medicalnet:PATH"``); PRDC uses the first.
        seeds: extractor weight seeds; each replicate's value is the mean over them
            (MedicalNet: one fixed network).
        n_boot: bootstrap replicates (>= 1).
        seed: seed of the resampling indices (see :func:`bootstrap_indices`).
        metrics: any of ``"fd"``, ``"kid"`` (one key per extractor: ``fd_shallow``...),
            ``"mmd"``, ``"precision"``, ``"recall"``, ``"density"``, ``"coverage"``.
        batch_size: volumes per forward pass of the extractors.
        progress: optional callable receiving a short message per stage.

    Returns:
        A JSON-able dict: per metric key ``{"diff": a - b on the full sets, "low",
        "high": the 95% percentile interval of the bootstrap differences,
        "excludes_zero": bool, "better": "a" | "b" | None, "a", "b": each system's
        value on the full sets, "n_boot", "interval": the meaning string}``; also
        ``"intervals"`` (key -> meaning, as in ``evaluate``), ``"counts"``
        ``{"real": N, "fake": M}`` and ``"meta"`` with the settings.
    """
    say = progress or (lambda msg: None)
    real, fake_a, fake_b = _check(real, fake_a, fake_b)
    unknown = set(metrics) - {"fd", "kid", "mmd", *PRDC_KEYS}
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}: use fd, kid, mmd, precision, recall, "
                         "density, coverage")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    want_prdc = [k for k in PRDC_KEYS if k in metrics]
    if want_prdc and min(len(real), len(fake_a)) <= K:
        raise ValueError(f"PRDC with k={K} needs more than {K} volumes per set")
    if not features and any(m in metrics for m in ("fd", "kid", *PRDC_KEYS)):
        raise ValueError("no feature extractor selected")
    n, m = len(real), len(fake_a)
    ir, iy = bootstrap_indices(n, m, n_boot, seed)
    wx, wy = _weights(ir, n), _weights(iy, m)
    ones_x, ones_y = np.ones((1, n)), np.ones((1, m))

    # values[key] = (point a, point b, replicates a [B], replicates b [B]); seeds are averaged
    values: dict[str, list] = {}

    def add(key, pa, pb, ba, bb, n_seeds):
        acc = values.setdefault(key, [0.0, 0.0, np.zeros(n_boot), np.zeros(n_boot)])
        for i, v in enumerate((pa, pb, ba, bb)):
            acc[i] = acc[i] + np.asarray(v, np.float64) / n_seeds

    kinds = list(features)
    names = [k.split(":", 1)[0] for k in kinds]
    for j, (kind, name) in enumerate(zip(kinds, names)):
        kind_seeds = (0,) if kind.startswith("medicalnet:") else tuple(seeds)
        for s in kind_seeds:
            say(f"features {name} seed {s}")
            fr, fa, fb = _features.normalise(*(_features.extract(v, kind, s, batch_size)
                                               for v in (real, fake_a, fake_b)))
            say(f"bootstrap {name} seed {s}")
            ns = len(kind_seeds)
            if "fd" in metrics:
                zr, za, zb = _row_space(fr, fa, fb)
                add(f"fd_{name}", frechet_distance(fr, fa), frechet_distance(fr, fb),
                    [frechet_distance(zr[r], za[y]) for r, y in zip(ir, iy)],
                    [frechet_distance(zr[r], zb[y]) for r, y in zip(ir, iy)], ns)
            if "kid" in metrics:
                kxx = _poly_kernel(fr, fr)
                ka = (_poly_kernel(fa, fa), _poly_kernel(fr, fa))
                kb = (_poly_kernel(fb, fb), _poly_kernel(fr, fb))
                add(f"kid_{name}", _mmd2(kxx, *ka, ones_x, ones_y)[0], _mmd2(kxx, *kb, ones_x, ones_y)[0],
                    _mmd2(kxx, *ka, wx, wy), _mmd2(kxx, *kb, wx, wy), ns)
            if want_prdc and j == 0:
                dxx, da, db = _sq_dists(fr, fr), _sq_dists(fa, fa), _sq_dists(fb, fb)
                dxa, dxb = _sq_dists(fr, fa), _sq_dists(fr, fb)
                full_r, full_y = np.arange(n), np.arange(m)
                pa, pb = _prdc(dxx, da, dxa, full_r, full_y), _prdc(dxx, db, dxb, full_r, full_y)
                ba = [_prdc(dxx, da, dxa, r, y) for r, y in zip(ir, iy)]
                bb = [_prdc(dxx, db, dxb, r, y) for r, y in zip(ir, iy)]
                for key in want_prdc:
                    add(key, pa[key], pb[key], [v[key] for v in ba], [v[key] for v in bb], ns)

    bandwidth = None
    if "mmd" in metrics:
        say("MMD")
        x, a, b = (pool_volumes(v) for v in (real, fake_a, fake_b))
        bandwidth = median_bandwidth(x)  # from the real set only: one kernel for both systems
        _, k, _ = gaussian_mmd2(x, np.concatenate([a, b]), bandwidth)  # joint kernel of [x; a; b]
        xs, as_, bs = slice(0, n), slice(n, n + m), slice(n + m, n + 2 * m)
        ka, kb = (k[as_, as_], k[xs, as_]), (k[bs, bs], k[xs, bs])
        kxx = k[xs, xs]
        add("mmd", _mmd2(kxx, *ka, ones_x, ones_y)[0], _mmd2(kxx, *kb, ones_x, ones_y)[0],
            _mmd2(kxx, *ka, wx, wy), _mmd2(kxx, *kb, wx, wy), 1)

    # table order: FD/KID per extractor, MMD, then PRDC
    order = [f"{p}_{nm}" for nm in names for p in ("fd", "kid")] + ["mmd", *PRDC_KEYS]
    meaning = INTERVALS["paired_bootstrap"]
    alpha = (1.0 - CONFIDENCE) / 2
    result: dict = {}
    for key in [k for k in order if k in values]:
        pa, pb, ba, bb = values[key]
        diffs = ba - bb
        finite = diffs[np.isfinite(diffs)]
        low, high = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (math.nan, math.nan))
        diff = float(pa - pb)
        excludes = bool(low > 0 or high < 0)
        result[key] = {"diff": diff, "low": float(low), "high": float(high), "excludes_zero": excludes,
                       "better": _better(key, diff, excludes), "a": float(pa), "b": float(pb),
                       "n_boot": int(len(finite)), "interval": meaning}
    result["intervals"] = {key: meaning for key in result}
    result["counts"] = {"real": int(n), "fake": int(m)}
    result["meta"] = {"features": kinds, "seeds": [int(s) for s in seeds], "n_boot": int(n_boot),
                      "seed": int(seed), "confidence": CONFIDENCE, "prdc_features": names[0] if names else None,
                      "k": K, "mmd_bandwidth": bandwidth}
    return _clean(result)


def seed_spread(values: Sequence[float | None]) -> dict:
    """Mean and std (ddof=1) of one metric over models trained with different seeds.

    ``None`` and non-finite entries (metrics that could not be computed) are
    dropped; ``n`` counts the rest. ``std`` is ``None`` below two values (a spread
    of one run is unknown, not 0).
    """
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))])
    return {"mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "n": int(len(v)), "interval": INTERVALS["training_seeds"]}
