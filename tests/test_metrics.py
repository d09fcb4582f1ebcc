"""Sanity tests of the offline metrics: each moves the right way under injected
blur, slab seams and duplication, and stays at the floor for real vs real.

The "real" population is synthetic: smooth random blobs in an ellipsoidal body
with fine texture, 40 volumes at 32^3, seeded; the "clean fake" set is 40 more
from the same distribution (another seed), and the corruptions are applied to
it, so every comparison is at equal counts against the same real set.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_crfgan.evaluation import INTERVALS, evaluate, metric_keys, to_markdown

import phantoms
from napari_crfgan.evaluation.features import (
    extract,
    load_medicalnet_state_dict,
    medicalnet_resnet50,
    normalise,
)
from napari_crfgan.evaluation.frechet import feature_stats, frechet_distance, frechet_from_stats
from napari_crfgan.evaluation.inject import blur, duplicate, slab_seams
from napari_crfgan.evaluation.kid import kid
from napari_crfgan.evaluation.mmd import mmd
from napari_crfgan.evaluation.msssim import msssim_diversity
from napari_crfgan.evaluation.prdc import prdc
from napari_crfgan.evaluation.seams import sdr

SIZE = 32
N = 40
SEEDS = (0, 1)  # evaluate() defaults to three; two keep the tests fast
KINDS = ("shallow", "resnet10")
#: which corrupted sets each extractor is run on (ResNet-10 is the slow one)
SETS_PER_KIND = {"shallow": ("real", "clean", "blur", "seams", "dup"),
                 "resnet10": ("real", "clean", "blur")}
SEAM_PERIOD = SIZE // 8  # the CRF-GAN slab thickness
SEAM_STRENGTH = 0.2
BLUR_SIGMA = 1.0
#: SDR may move this much under a uniform blur (floor noise is ~0.03-0.05).
SDR_BLUR_TOL = 0.05


def make_blobs(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return phantoms.make_blobs(n, size, seed)


@pytest.fixture(scope="module")
def sets():
    real = make_blobs(N, seed=0)
    clean = make_blobs(N, seed=1)
    return {
        "real": real,
        "clean": clean,
        "blur": blur(clean, BLUR_SIGMA),
        "seams": slab_seams(clean, SEAM_PERIOD, SEAM_STRENGTH, seed=3),
        "dup": duplicate(clean, 4, seed=3),
    }


@pytest.fixture(scope="module")
def feats(sets):
    """feats[kind][seed][set] -> features normalised by the real RMS."""
    out = {}
    for kind in KINDS:
        out[kind] = {}
        names = SETS_PER_KIND[kind]
        for seed in SEEDS:
            raw = [extract(sets[name], kind, seed) for name in names]
            out[kind][seed] = dict(zip(names, normalise(*raw)))  # raw[0] is "real"
    return out


def _mean_over_seeds(feats, kind, fn, name):
    return float(np.mean([fn(feats[kind][s]["real"], feats[kind][s][name]) for s in SEEDS]))


def _fd(feats, kind, name):
    return _mean_over_seeds(feats, kind, frechet_distance, name)


def _kid(feats, kind, name):
    return _mean_over_seeds(feats, kind, lambda a, b: kid(a, b)[0], name)


@pytest.fixture(scope="module")
def report(sets):
    return evaluate(sets["real"], sets["clean"], seeds=SEEDS)


# ------------------------------------------------------------- Frechet distance
def _fd_independent(a: np.ndarray, b: np.ndarray) -> float:
    """FD via the nuclear norm: Tr((S1 S2)^1/2) = sum of singular values of
    Ac Bc^T / sqrt((n-1)(m-1)) (Ac, Bc: centred data). No covariance matrix,
    no matrix square root."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ac, bc = a - a.mean(0), b - b.mean(0)
    n, m = len(a), len(b)
    tr_cross = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt((n - 1) * (m - 1))
    d = a.mean(0) - b.mean(0)
    return float(d @ d + (ac ** 2).sum() / (n - 1) + (bc ** 2).sum() / (m - 1) - 2 * tr_cross)


def _fd_eigen(a: np.ndarray, b: np.ndarray) -> float:
    """FD via eigenvalues of sqrt(S1) S2 sqrt(S1), sqrt(S1) from eigh."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)
    d = a.mean(0) - b.mean(0)
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(lam).sum())


@pytest.mark.parametrize("n,m,dim", [(20, 25, 480), (25, 20, 512), (60, 10, 480), (300, 200, 64)])
def test_frechet_equals_independent_computation(n, m, dim):
    rng = np.random.default_rng(n + m + dim)
    a = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) / np.sqrt(dim)
    b = 1.2 * rng.standard_normal((m, dim)) + 0.1
    a, b = normalise(a, b)
    fd = frechet_distance(a, b)
    assert fd == pytest.approx(_fd_independent(a, b), abs=1e-6)
    # the covariance route (used when only statistics are at hand) agrees too
    fd_stats = frechet_from_stats(*feature_stats(a), *feature_stats(b))
    assert fd_stats == pytest.approx(_fd_independent(a, b), abs=1e-6)
    if n > dim:  # full rank: the eigenvalue route is exact as well
        assert fd == pytest.approx(_fd_eigen(a, b), abs=1e-6)


def test_frechet_on_real_features_matches_and_is_zero_on_itself(feats):
    a, b = feats["resnet10"][0]["real"], feats["resnet10"][0]["blur"]
    assert frechet_distance(a, b) == pytest.approx(_fd_independent(a, b), abs=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------- feature extractors
def test_extractors_are_fixed_by_seed_only():
    v = make_blobs(3, seed=7)
    for kind, dim in (("shallow", 480), ("resnet10", 512)):
        f0 = extract(v, kind, seed=0)
        torch.manual_seed(123)  # torch's own RNG must not matter
        from napari_crfgan.evaluation import features as fmod
        fmod._CACHE.clear()
        f0b = extract(v, kind, seed=0, batch_size=2)
        f1 = extract(v, kind, seed=1)
        assert f0.shape == (3, dim)
        np.testing.assert_allclose(f0, f0b, rtol=1e-4, atol=1e-5 * np.abs(f0).max())
        assert not np.allclose(f0, f1)
        assert np.all(np.isfinite(f0))


def test_medicalnet_loads_from_local_file(tmp_path):
    torch.manual_seed(0)
    net = medicalnet_resnet50().eval()
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    sd["module.conv_seg.0.weight"] = torch.randn(32, 2048, 3, 3, 3)  # segmentation head
    sd["module.conv_seg.1.weight"] = torch.randn(32)
    path = tmp_path / "resnet_50.pth"
    torch.save({"state_dict": sd}, path)

    v = make_blobs(2, seed=5)
    f = extract(v, f"medicalnet:{path}")
    assert f.shape == (2, 2048) and np.all(np.isfinite(f))
    # the loaded weights are exactly the saved ones: same as running the saved net
    x = torch.from_numpy(v).unsqueeze(1)
    x = (x - x.mean(dim=(1, 2, 3, 4), keepdim=True)) / x.std(dim=(1, 2, 3, 4), keepdim=True)
    with torch.no_grad():
        ref = net(x).double().numpy()
    np.testing.assert_allclose(f, ref, rtol=1e-4, atol=1e-6)

    # a bare state dict without the prefix loads as well; a wrong layout is refused
    bare = tmp_path / "bare.pth"
    torch.save(net.state_dict(), bare)
    load_medicalnet_state_dict(bare)
    broken = dict(net.state_dict())
    broken.pop("layer4.2.conv3.weight")
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": broken}, bad)
    with pytest.raises(KeyError):
        load_medicalnet_state_dict(bad)


# ------------------------------------------------------------------- blur
def test_blur_raises_fd_and_kid(feats):
    assert _fd(feats, "resnet10", "blur") > 1.2 * _fd(feats, "resnet10", "clean")
    for kind in KINDS:
        assert _kid(feats, kind, "blur") > _kid(feats, kind, "clean") + 0.002, kind


def test_stronger_blur_raises_shallow_fd(sets, feats):
    strong = blur(sets["clean"], 2.0)
    fds = []
    for s in SEEDS:
        fr, fb = normalise(extract(sets["real"], "shallow", s), extract(strong, "shallow", s))
        fds.append(frechet_distance(fr, fb))
    assert np.mean(fds) > 1.2 * _fd(feats, "shallow", "clean")


def test_uniform_blur_leaves_sdr_unchanged(sets):
    clean = sdr(sets["real"], sets["clean"], period=SEAM_PERIOD)
    blurred = sdr(sets["real"], sets["blur"], period=SEAM_PERIOD)
    assert abs(blurred["value"] - clean["value"]) < SDR_BLUR_TOL
    assert blurred["ci"][0] < 0 < blurred["ci"][1]


# ------------------------------------------------------------------- seams
def test_slab_seams_raise_sdr_above_real_floor(sets):
    s = sdr(sets["real"], sets["seams"], period=SEAM_PERIOD)
    clean = sdr(sets["real"], sets["clean"], period=SEAM_PERIOD)
    assert s["value"] > s["real"] + 0.2
    assert s["ci"][0] > 0.1  # the whole interval is clearly above the real SDR
    assert clean["ci"][0] < 0 < clean["ci"][1]
    # seams along D do not show along H or W
    for axis in (1, 2):
        assert abs(sdr(sets["real"], sets["seams"], axis=axis)["diff"]) < 0.1


def test_slab_seams_raise_shallow_kid(feats):
    assert _kid(feats, "shallow", "seams") > _kid(feats, "shallow", "clean") + 0.002


# ------------------------------------------------------------- duplication
def test_duplication_drops_coverage_and_raises_msssim(sets, feats):
    def cov(name):
        return np.mean([prdc(feats["shallow"][s]["real"], feats["shallow"][s][name])["coverage"]
                        for s in SEEDS])
    assert cov("clean") > 0.9
    assert cov("dup") < cov("clean") - 0.2
    div_clean = msssim_diversity(sets["clean"])[0]
    div_dup = msssim_diversity(sets["dup"])[0]
    div_real = msssim_diversity(sets["real"])[0]
    assert abs(div_clean - div_real) < 0.03
    assert div_dup > div_clean + 0.04
    assert mmd(sets["real"], sets["dup"])["p"] < 0.05


# ------------------------------------------------------------- real vs real
def test_real_vs_real_stays_at_floor(report):
    floor = report["real_vs_real"]
    for kind in KINDS:
        assert abs(floor[f"kid_{kind}"]["value"]) < 0.005
        # a fake set from the same distribution sits at the floor too
        assert report[f"kid_{kind}"]["value"] < floor[f"kid_{kind}"]["value"] + 0.005
        assert report[f"fd_{kind}"]["value"] < 1.25 * floor[f"fd_{kind}"]["value"]
    assert floor["mmd"]["p"] > 0.05
    assert report["mmd"]["p"] > 0.05
    for axis in "dhw":
        assert abs(floor[f"sdr_{axis}"]["diff"]) < 0.15
        assert abs(report[f"sdr_{axis}"]["diff"]) < 0.15
    assert floor["coverage"]["value"] > 0.8
    div = floor["msssim_diversity"]
    assert abs(div["value"] - div["real"]) < 0.05


def test_evaluate_result_shape_and_markdown(report):
    keys = ["fd_shallow", "kid_shallow", "fd_resnet10", "kid_resnet10", "mmd", "precision",
            "recall", "density", "coverage", "msssim_diversity", "sdr_d", "sdr_h", "sdr_w",
            "sdr_free_d"]
    json.dumps(report, allow_nan=False)
    for k in keys:
        assert isinstance(report[k]["value"], float), k
        assert isinstance(report[k]["std"], float), k
        assert set(report[k]) == set(report["real_vs_real"][k]), k
    assert 0.0 < report["mmd"]["p"] <= 1.0
    assert report["counts"] == {"real": N, "fake": N, "real_half": N // 2, "fake_chunks": 2}
    md = to_markdown(report)
    assert "real vs real" in md
    for k in keys:
        assert f"| {k} |" in md
    # every metric says what its "±" is, in the one vocabulary, on its own table row
    assert set(report["intervals"]) == set(metric_keys(report)) >= set(keys)
    for k in keys:
        assert report["intervals"][k] in INTERVALS.values(), k
        assert f"| {report['intervals'][k]} |" in next(line for line in md.splitlines() if line.startswith(f"| {k} |"))
    assert report["intervals"]["fd_resnet10"] == INTERVALS["extractor_seeds"]
    assert report["intervals"]["mmd"] == INTERVALS["permutation_null"]
    assert report["intervals"]["sdr_h"] == INTERVALS["bootstrap_ci"]


def test_evaluate_sees_seams_at_small_n(sets):
    r = evaluate(sets["real"][:16], sets["seams"][:16], features=("shallow",), seeds=(0,),
                 msssim_pairs=20, n_boot=200, mmd_permutations=50)
    assert r["sdr_d"]["diff"] > r["real_vs_real"]["sdr_d"]["diff"] + 0.2
    assert r["sdr_free_d"]["spectral"] > 3 * r["real_vs_real"]["sdr_free_d"]["spectral"]
    assert "precision" in r and r["counts"]["fake_chunks"] == 2
