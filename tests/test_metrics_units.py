"""Small exact checks of each metric's definition (fast, no networks)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_crfgan.evaluation.inject import blur, duplicate, slab_seams
from napari_crfgan.evaluation.kid import kid, polynomial_mmd2
from napari_crfgan.evaluation.mmd import median_bandwidth, mmd, pool_volumes
from napari_crfgan.evaluation.msssim import ms_ssim, msssim_diversity, num_scales
from napari_crfgan.evaluation.prdc import prdc
from napari_crfgan.evaluation.report import to_markdown
from napari_crfgan.evaluation.seams import grid_sdr, plane_gaps, sdr, sdr_profile, seam_indices


# ------------------------------------------------------------------ seams
def test_plane_gaps_is_masked_mean_of_absolute_plane_differences():
    rng = np.random.default_rng(0)
    v = rng.uniform(-1, 1, (2, 6, 5, 4)).astype(np.float32)
    v[0, 2] = -1.0  # plane 2 fully below the 5% threshold ...
    v[0, 3] = -1.0  # ... and plane 3: g(2) has an empty mask -> NaN
    g = plane_gaps(v)
    thr = -1 + 0.05 * 2
    for i in range(2):
        for s in range(5):
            a, b = v[i, s], v[i, s + 1]
            m = (a > thr) | (b > thr)
            want = np.abs(b - a)[m].mean() if m.any() else np.nan
            np.testing.assert_allclose(g[i, s], want, rtol=1e-6, equal_nan=True)
    assert np.isnan(g[0, 2])
    # along H the same definition holds on the moved axis
    gh = plane_gaps(v, axis=1)
    assert gh.shape == (2, 4)
    m = (v[1, :, 0] > thr) | (v[1, :, 1] > thr)
    np.testing.assert_allclose(gh[1, 0], np.abs(v[1, :, 1] - v[1, :, 0])[m].mean(), rtol=1e-6)


def test_seam_indices_and_grid_sdr_formula():
    # 32 planes, slabs of 4: borders between planes 3|4, 7|8, ... -> s = 3, 7, ..., 27
    np.testing.assert_array_equal(seam_indices(32, 4), np.arange(3, 28, 4))
    with pytest.raises(ValueError):
        seam_indices(32, 2)
    p = np.ones(31)
    p[seam_indices(32, 4)] = 3.0
    assert grid_sdr(p, seam_indices(32, 4)) == pytest.approx(3.0)
    q = np.arange(1.0, 32.0)  # linear profile: seam value equals its neighbours' mean
    assert grid_sdr(q, seam_indices(32, 4)) == pytest.approx(1.0)
    s = np.array([5])
    r = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    assert grid_sdr(r, s) == pytest.approx(32.0 / np.mean([8.0, 16.0, 64.0, 128.0]))


def test_sdr_sees_a_step_and_reports_interval():
    rng = np.random.default_rng(1)
    real = np.clip(rng.normal(0, 0.1, (12, 24, 8, 8)), -1, 1).astype(np.float32)
    fake = np.clip(rng.normal(0, 0.1, (12, 24, 8, 8)), -1, 1).astype(np.float32)
    stepped = fake.copy()
    for k in range(4):  # alternate slabs of 6 planes are brighter
        stepped[:, k * 6:(k + 1) * 6] += 0.3 * (k % 2)
    out = sdr(real, stepped, period=6, n_boot=200)
    assert out["value"] > 1.5 and out["ci"][0] > 0.3 and out["period"] == 6
    same = sdr(real, fake, period=6, n_boot=200)
    assert same["ci"][0] < same["diff"] < same["ci"][1]
    prof = sdr_profile(real, stepped, period=6, n_boot=50)
    assert len(prof["profile"]) == 23
    assert prof["spectral"] > 3 * sdr_profile(real, fake, period=6, n_boot=50)["spectral"]


# ------------------------------------------------------------------ KID / MMD / PRDC
def test_kid_is_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 8)), rng.standard_normal((40, 8))
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    want = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (40 * 39)
            - 2 * kxy.mean())
    assert polynomial_mmd2(x, y) == pytest.approx(want)
    # equal subset and set sizes: the full-set estimate, no spread
    assert kid(x, y[:30], subset_size=30) == (pytest.approx(polynomial_mmd2(x, y[:30])), 0.0)
    # smaller subsets of y: each is unbiased for the full-set estimate, so their mean converges to it
    mean, std = kid(x, y, subsets=400, subset_size=30)
    assert std > 0 and abs(mean - want) < 4 * std / np.sqrt(400)
    # same distribution: mean over many draws is ~0; a shift makes it clearly positive
    same = np.mean([kid(rng.standard_normal((50, 8)), rng.standard_normal((50, 8)))[0]
                    for _ in range(30)])
    shifted = kid(x, y + 1.0)[0]
    assert abs(same) < 0.1 * shifted


def test_mmd_permutation_p_value():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 0.3, (16, 16, 16, 16)).astype(np.float32)
    b = rng.normal(0, 0.3, (16, 16, 16, 16)).astype(np.float32)
    assert pool_volumes(a).shape == (16, 16 ** 3)
    same = mmd(a, b, permutations=100)
    diff = mmd(a, b + 0.2, permutations=100)
    assert same["p"] > 0.05 and diff["p"] < 0.05
    assert diff["value"] > same["value"]
    assert 1 / 101 <= diff["p"] <= 1


def test_mmd_kernel_comes_from_the_real_set_alone():
    """Two systems scored against one real set get one kernel, whatever they generate."""
    rng = np.random.default_rng(5)
    real = rng.normal(0, 0.3, (12, 16, 16, 16)).astype(np.float32)
    near, far = real + 0.01, real * 3.0
    bw_real = median_bandwidth(pool_volumes(real))
    assert mmd(real, near, permutations=10)["bandwidth"] == mmd(real, far, permutations=10)["bandwidth"] == bw_real
    # a joint-sample median would have stretched the kernel for the far set
    joint = median_bandwidth(np.concatenate([pool_volumes(real), pool_volumes(far)]))
    assert joint > 1.5 * bw_real


def test_prdc_extremes():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6))
    full = prdc(x, x.copy())
    assert full["precision"] == full["recall"] == full["coverage"] == 1.0
    far = prdc(x, x + 100)
    assert far["precision"] == far["coverage"] == far["density"] == 0.0
    collapsed = prdc(x, np.repeat(x[:2], 25, axis=0))
    assert collapsed["coverage"] < 0.3


# ------------------------------------------------------------------ MS-SSIM
def test_ms_ssim_identity_and_order():
    rng = np.random.default_rng(5)
    v = np.clip(rng.normal(0, 0.3, (3, 32, 32, 32)), -1, 1).astype(np.float32)
    assert num_scales(32, 3) == 4 and num_scales(64, 3) == 5 and num_scales(16, 3) == 3
    np.testing.assert_allclose(ms_ssim(v, v), 1.0, atol=1e-5)
    near = ms_ssim(v, v + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
    far = ms_ssim(v, np.roll(v, 1, axis=0))
    assert np.all(near > far)
    mean, std = msssim_diversity(np.concatenate([v, v]), pairs=15)
    assert 0 <= mean <= 1 and std >= 0


# ------------------------------------------------------------------ corruptions
def test_injections_keep_shape_range_and_input():
    rng = np.random.default_rng(6)
    v = np.clip(rng.normal(-0.5, 0.4, (5, 16, 8, 8)), -1, 1).astype(np.float32)
    keep = v.copy()
    for out in (blur(v, 1.0), slab_seams(v, 4, 0.3, shift=1), duplicate(v, 2)):
        assert out.shape == v.shape and out.dtype == np.float32
        assert out.min() >= -1 and out.max() <= 1
    np.testing.assert_array_equal(v, keep)
    assert len({o.tobytes() for o in duplicate(v, 2)}) == 2
    assert blur(v, 1.0).std() < v.std()
    # seams: constant within a slab pair of planes, a jump across the border
    flat = np.zeros((1, 8, 4, 4), np.float32)
    s = slab_seams(flat, 4, 0.3, seed=1)
    assert np.allclose(s[0, 0], s[0, 3]) and not np.allclose(s[0, 3], s[0, 4])


def test_markdown_handles_missing_numbers():
    result = {"fd_shallow": {"value": 1.0, "std": None}, "precision": {"value": None, "std": None},
              "real_vs_real": {"fd_shallow": {"value": 2.0, "std": 0.1}},
              "counts": {"real": 4, "fake": 4, "real_half": 2}}
    md = to_markdown(result)
    assert "| fd_shallow | 1 | 2 ± 0.1 | lower |" in md and "n/a" in md
