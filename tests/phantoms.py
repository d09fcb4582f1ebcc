"""Synthetic test volumes shared by the metric tests (no files, no torch)."""
import numpy as np
from scipy import ndimage


def make_blobs(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random "anatomy": ellipsoidal body, Gaussian blobs, fine texture; [-1, 1]."""
    rng = np.random.default_rng(seed)
    g = (np.arange(size) + 0.5) / size * 2 - 1
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    out = np.empty((n, size, size, size), np.float32)
    for i in range(n):
        r = rng.uniform(0.55, 0.85, 3)
        c = rng.uniform(-0.1, 0.1, 3)
        body = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        inside = 1.0 / (1.0 + np.exp((body - 1.0) * 12.0))
        tissue = np.zeros_like(z)
        for _ in range(rng.integers(3, 9)):
            p = rng.uniform(-0.5, 0.5, 3)
            s = rng.uniform(0.06, 0.25)
            a = rng.uniform(-0.7, 0.8)
            tissue += a * np.exp(-((z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2)
                                 / (2 * s * s))
        tex = ndimage.gaussian_filter(rng.standard_normal(z.shape), 0.8)
        tissue += 0.25 * tex / tex.std()
        out[i] = np.clip(-1.0 + inside * (1.0 + np.clip(tissue, -0.8, 0.95)), -1.0, 1.0)
    return out
