"""Our MS-SSIM and Frechet distance against MONAI's (the field's library), on the same inputs."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from napari_crfgan.evaluation.frechet import frechet_distance
from napari_crfgan.evaluation.msssim import default_kernel_size, ms_ssim, num_scales

monai_metrics = pytest.importorskip("monai.metrics")


def _smooth_pairs(n: int, side: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    a = gaussian_filter(rng.normal(size=(n, side, side, side)), (0, 2, 2, 2))
    a = (a / np.abs(a).max()).astype(np.float32)
    b = np.clip(a + noise * gaussian_filter(rng.normal(size=a.shape), (0, 1, 1, 1)), -1, 1).astype(np.float32)
    return a, b


@pytest.mark.parametrize("noise", [0.05, 0.3, 1.0])
def test_ms_ssim_equals_monai(noise):
    a, b = _smooth_pairs(3, 64, noise, seed=int(noise * 100))
    k = default_kernel_size(64)
    assert num_scales(64, k) == 5  # MONAI always uses its five weights
    theirs = monai_metrics.regression.compute_ms_ssim(
        torch.from_numpy(b)[:, None], torch.from_numpy(a)[:, None], spatial_dims=3, data_range=2.0,
        kernel_size=k, kernel_sigma=0.75).flatten().numpy()
    # ours normalises the five weights to sum 1 (they sum to 1.0001): a 1e-5 relative difference
    np.testing.assert_allclose(ms_ssim(a, b), theirs, rtol=1e-4)


def test_frechet_distance_equals_monai():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(200, 16)), rng.normal(0.3, 1.2, size=(150, 16))
    theirs = float(monai_metrics.FIDMetric()(torch.from_numpy(fake), torch.from_numpy(real)))
    assert frechet_distance(real, fake) == pytest.approx(theirs, rel=1e-9)
    same = rng.normal(size=(200, 16))
    assert frechet_distance(real, same) == pytest.approx(
        float(monai_metrics.FIDMetric()(torch.from_numpy(same), torch.from_numpy(real))), rel=1e-9)
