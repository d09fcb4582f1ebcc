"""Frechet distance between two feature sets (FID-style, on any extractor).

Measures the distance between Gaussians fitted to real and generated features:
``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``. Lower is better;
0 means equal means and covariances.

With fewer samples than dimensions the covariances are rank deficient and the
estimate is biased upwards at finite N (Chong & Forsyth 2020): compare models
only at equal sample counts, and beside the real-vs-real floor. FD magnitudes
depend on the extractor: never compare them with published MedicalNet numbers.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

__all__ = ["frechet_distance", "frechet_from_stats", "feature_stats", "trace_sqrt_product"]


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of features ``[N, F]`` (float64)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features [N >= 2, F], got shape {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm_sym(a: np.ndarray) -> np.ndarray:
    """``scipy.linalg.sqrtm`` of a symmetric PSD matrix, real and symmetrised."""
    a = 0.5 * (a + a.T)
    root = linalg.sqrtm(a)
    if isinstance(root, tuple):  # scipy versions returning (root, err)
        root = root[0]
    root = np.real(root)
    if not np.all(np.isfinite(root)):
        # Last resort for pathological input: a tiny diagonal offset.
        eps = 1e-12 * max(float(np.trace(a)) / len(a), 1e-300)
        root = np.real(linalg.sqrtm(a + eps * np.eye(len(a))))
    return 0.5 * (root + root.T)


def _range(sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of sigma's numerical range (rank-revealing)."""
    w, v = np.linalg.eigh(0.5 * (sigma + sigma.T))
    tol = max(float(w[-1]), 0.0) * len(w) * np.finfo(np.float64).eps * 10
    keep = w > tol
    return w[keep], v[:, keep]


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr((S1 S2)^1/2)`` for PSD ``S1``, ``S2``, robust to rank deficiency.

    ``(S1 S2)^1/2`` has the trace of ``(S1^1/2 S2 S1^1/2)^1/2``. Writing
    ``S1 = V L V^T`` on its numerical range (``r`` columns), that trace is the
    trace of ``sqrtm(M)`` with ``M = L^1/2 V^T S2 V L^1/2`` (``r x r``). ``S1`` is
    taken as the lower-rank of the two, so that ``M`` is (generically) of full
    rank and ``sqrtm`` does not amplify round-off in zero eigenvalues, as it
    does on the full ``F x F`` products when N < F.
    """
    w1, v1 = _range(sigma1)
    w2, v2 = _range(sigma2)
    if len(w2) < len(w1):
        (w1, v1), sigma2 = (w2, v2), sigma1
    if len(w1) == 0:
        return 0.0
    half = v1 * np.sqrt(w1)  # F x r, half @ half.T == S1
    m = half.T @ sigma2 @ half
    return float(np.trace(_sqrtm_sym(m)))


def frechet_from_stats(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2); lower is better."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("feature dimensions differ")
    diff = mu1 - mu2
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))
    return max(fd, 0.0)


def _trace_sqrt_from_data(ac: np.ndarray, bc: np.ndarray) -> float:
    """``Tr((S1 S2)^1/2)`` from centred data ``ac [n, F]``, ``bc [m, F]`` with n <= F.

    ``S1 = V diag(s^2 / (n - 1)) V^T`` from the thin SVD of ``ac``, so the
    ``F x F`` covariances are never formed: ``M = H^T S2 H`` with ``H = V s /
    sqrt(n - 1)`` is ``r x r`` and is built as ``(bc H)^T (bc H) / (m - 1)``.
    """
    if len(bc) < len(ac):
        ac, bc = bc, ac
    n, m = len(ac), len(bc)
    _, sv, vt = np.linalg.svd(ac, full_matrices=False)
    keep = sv > (sv[0] if len(sv) else 0.0) * max(ac.shape) * np.finfo(np.float64).eps * 10
    if not np.any(keep):
        return 0.0
    half = vt[keep].T * (sv[keep] / np.sqrt(n - 1))
    proj = bc @ half
    return float(np.trace(_sqrtm_sym(proj.T @ proj / (m - 1))))


def frechet_distance(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """Frechet distance between two feature sets ``[N, F]`` and ``[M, F]``.

    Lower is better (0 = same mean and covariance). Feed features normalised by
    one scalar (see :func:`napari_crfgan.evaluation.features.normalise`). When a
    set has fewer samples than dimensions the covariance root is taken on the
    data's own span (thin SVD, then ``sqrtm`` of a small matrix): exact for rank
    deficient covariances and cheap; otherwise :func:`frechet_from_stats`.
    """
    a = np.asarray(real_features, dtype=np.float64)
    b = np.asarray(fake_features, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need features [N >= 2, F] of equal F, got {a.shape} and {b.shape}")
    if min(len(a), len(b)) > a.shape[1]:
        mu1, s1 = feature_stats(a)
        mu2, s2 = feature_stats(b)
        return frechet_from_stats(mu1, s1, mu2, s2)
    ac, bc = a - a.mean(axis=0), b - b.mean(axis=0)
    diff = a.mean(axis=0) - b.mean(axis=0)
    fd = float(diff @ diff + np.sum(ac * ac) / (len(a) - 1) + np.sum(bc * bc) / (len(b) - 1)
               - 2.0 * _trace_sqrt_from_data(ac, bc))
    return max(fd, 0.0)
