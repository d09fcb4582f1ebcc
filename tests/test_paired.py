"""The paired bootstrap of metric differences, and the intervals vocabulary of evaluate().

Volumes are small synthetic blobs (32^3); the "worse" system is the clean fake set
with additive noise, which every metric of the bootstrap sees at these counts.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_crfgan.evaluation import (
    INTERVALS,
    evaluate,
    interval_meanings,
    metric_keys,
    paired_bootstrap,
    seed_spread,
    to_markdown,
)
from napari_crfgan.evaluation import paired as paired_mod
from napari_crfgan.evaluation.features import extract, normalise
from napari_crfgan.evaluation.frechet import frechet_distance
from napari_crfgan.evaluation.inject import noise
from napari_crfgan.evaluation.kid import _poly_kernel, polynomial_mmd2
from napari_crfgan.evaluation.mmd import median_bandwidth, mmd, pool_volumes
from napari_crfgan.evaluation.prdc import prdc
from phantoms import make_blobs

torch.set_num_threads(1)
SIZE = 32
N = 16
KEYS = ("fd_shallow", "kid_shallow", "mmd", "coverage")
N_BOOT = 100


def blobs(n: int, seed: int) -> np.ndarray:
    return make_blobs(n, SIZE, seed)


@pytest.fixture(scope="module")
def sets():
    clean = blobs(N, seed=1)
    return {"real": blobs(N, seed=0), "clean": clean, "noisy": noise(clean, 0.3, seed=2),
            "close": noise(clean, 0.02, seed=3)}


def _run(real, a, b, **kw):
    return paired_bootstrap(real, a, b, n_boot=N_BOOT, **kw)


# ------------------------------------------------------------------ resampling
def test_bootstrap_indices_are_one_vector_per_replicate_and_seeded():
    real_idx, fake_idx = paired_mod.bootstrap_indices(10, 7, 50, seed=3)
    assert real_idx.shape == (50, 10) and fake_idx.shape == (50, 7)
    assert real_idx.min() >= 0 and real_idx.max() < 10 and fake_idx.max() < 7
    again = paired_mod.bootstrap_indices(10, 7, 50, seed=3)
    np.testing.assert_array_equal(real_idx, again[0])
    np.testing.assert_array_equal(fake_idx, again[1])
    assert not np.array_equal(fake_idx, paired_mod.bootstrap_indices(10, 7, 50, seed=4)[1])
    # resampling with replacement: duplicates occur, rows differ between replicates
    assert any(len(set(r)) < 7 for r in fake_idx) and len({tuple(r) for r in fake_idx}) > 40


def test_paired_bootstrap_applies_the_same_fake_indices_to_both_sets(sets, monkeypatch):
    """Spy on the index generator: paired_bootstrap draws once and feeds that one fake index
    array to both systems (identical inputs then give identical replicates)."""
    calls = []
    original = paired_mod.bootstrap_indices

    def spy(*args, **kw):
        calls.append(original(*args, **kw))
        return calls[-1]

    monkeypatch.setattr(paired_mod, "bootstrap_indices", spy)
    r = _run(sets["real"], sets["clean"], sets["clean"].copy())
    assert len(calls) == 1 and calls[0][1].shape == (N_BOOT, N)
    for key in KEYS:
        assert r[key]["low"] == r[key]["high"] == 0.0, key


def test_weighted_estimators_skip_copies_of_one_volume(sets):
    """KID/MMD replicates equal the U-statistic over pairs of draws of different volumes,
    PRDC on identity indices equals prdc(), and FD is unchanged in the row-space basis."""
    fr, fa = normalise(extract(sets["real"], "shallow", 0), extract(sets["clean"], "shallow", 0))
    rng = np.random.default_rng(0)
    ir, iy = rng.integers(0, N, N), rng.integers(0, N, N)
    x, y = fr[ir], fa[iy]

    def u_within(k, idx):
        keep = idx[:, None] != idx[None, :]
        return k[keep].mean()

    explicit = (u_within(_poly_kernel(x, x), ir) + u_within(_poly_kernel(y, y), iy)
                - 2 * _poly_kernel(x, y).mean())
    wx, wy = paired_mod._weights(ir[None], N), paired_mod._weights(iy[None], N)
    kxx, kyy, kxy = _poly_kernel(fr, fr), _poly_kernel(fa, fa), _poly_kernel(fr, fa)
    assert paired_mod._mmd2(kxx, kyy, kxy, wx, wy)[0] == pytest.approx(explicit, rel=1e-10)
    ones = np.ones((1, N))
    assert paired_mod._mmd2(kxx, kyy, kxy, ones, ones)[0] == pytest.approx(polynomial_mmd2(fr, fa), rel=1e-10)

    d = paired_mod._sq_dists
    full = np.arange(N)
    assert paired_mod._prdc(d(fr, fr), d(fa, fa), d(fr, fa), full, full) == prdc(fr, fa)
    # a resampled real set never gets a zero radius from its own copies
    assert np.all(paired_mod._radii(d(fr, fr), ir, 5) > 0)

    zr, za = paired_mod._row_space(fr, fa)
    assert zr.shape[1] <= 2 * N
    assert frechet_distance(zr[ir], za[iy]) == pytest.approx(frechet_distance(x, y), rel=1e-6)


# ------------------------------------------------------------------ decisions
def test_identical_sets_differ_by_exactly_zero(sets):
    r = _run(sets["real"], sets["clean"], sets["clean"].copy())
    json.dumps(r, allow_nan=False)
    assert metric_keys(r) == list(KEYS)
    for key in KEYS:
        e = r[key]
        assert e["diff"] == 0.0 and e["low"] <= 0.0 <= e["high"], key
        assert e["excludes_zero"] is False and e["better"] is None, key
        assert e["n_boot"] == N_BOOT and e["interval"] == INTERVALS["paired_bootstrap"], key
        assert r["intervals"][key] == INTERVALS["paired_bootstrap"]
    assert r["counts"] == {"real": N, "fake": N}


def test_point_values_are_the_metric_functions_on_the_full_sets(sets):
    r = _run(sets["real"], sets["clean"], sets["noisy"], metrics=("fd", "kid", "mmd", "coverage", "density"))
    fr, fa, fb = normalise(*(extract(sets[k], "shallow", 0) for k in ("real", "clean", "noisy")))
    assert r["fd_shallow"]["a"] == pytest.approx(frechet_distance(fr, fa), rel=1e-9)
    assert r["kid_shallow"]["b"] == pytest.approx(polynomial_mmd2(fr, fb), rel=1e-9, abs=1e-12)
    bw = median_bandwidth(pool_volumes(sets["real"]))
    assert r["mmd"]["a"] == pytest.approx(mmd(sets["real"], sets["clean"], bandwidth=bw)["value"], abs=1e-12)
    assert r["meta"]["mmd_bandwidth"] == pytest.approx(bw)
    assert r["coverage"]["b"] == prdc(fr, fb)["coverage"]
    assert r["density"]["better"] is None  # "~1" has no direction


def test_a_worse_set_is_detected_with_the_right_sign(sets):
    r = _run(sets["real"], sets["clean"], sets["noisy"])
    for key in ("fd_shallow", "kid_shallow", "mmd"):  # lower is better: a - b < 0
        assert r[key]["high"] < 0 and r[key]["diff"] < 0, key
    assert r["coverage"]["low"] > 0  # higher is better: a - b > 0
    for key in KEYS:
        assert r[key]["excludes_zero"] is True and r[key]["better"] == "a", key
        assert r[key]["low"] <= r[key]["diff"] <= r[key]["high"], key
    # the same comparison the other way round names b
    s = _run(sets["real"], sets["noisy"], sets["clean"])
    for key in KEYS:
        assert s[key]["better"] == "b", key
        assert s[key]["diff"] == pytest.approx(-r[key]["diff"], rel=1e-9, abs=1e-12), key
        assert s[key]["low"] == pytest.approx(-r[key]["high"], rel=1e-9, abs=1e-12), key


def test_pairing_narrows_the_interval_but_not_the_point_difference(sets):
    """Breaking the pairing (shuffling b's rows) leaves set-level values alone but, for a
    b that is a slight perturbation of a, widens the interval: the paired resampling is
    what cancels the shared latent draw."""
    real, a, b = sets["real"], sets["clean"], sets["close"]
    paired = _run(real, a, b)
    shuffled = _run(real, a, b[np.random.default_rng(5).permutation(N)])
    for key in KEYS:
        assert shuffled[key]["diff"] == pytest.approx(paired[key]["diff"], rel=1e-6, abs=1e-9), key
    for key in ("fd_shallow", "kid_shallow", "mmd"):
        width = paired[key]["high"] - paired[key]["low"]
        assert width < 0.5 * (shuffled[key]["high"] - shuffled[key]["low"]), key


def test_paired_bootstrap_refuses_unpaired_or_unknown_input(sets):
    with pytest.raises(ValueError, match="same shape"):
        paired_bootstrap(sets["real"], sets["clean"], sets["clean"][:-1], n_boot=2)
    with pytest.raises(ValueError, match="unknown metrics"):
        paired_bootstrap(sets["real"], sets["clean"], sets["clean"], metrics=("fid",), n_boot=2)


def test_seed_spread():
    s = seed_spread([1.0, 2.0, 3.0, None])
    assert s["mean"] == 2.0 and s["std"] == pytest.approx(1.0) and s["n"] == 3
    assert s["interval"] == INTERVALS["training_seeds"]
    one = seed_spread([0.5])
    assert one == {"mean": 0.5, "std": None, "n": 1, "interval": INTERVALS["training_seeds"]}


# ------------------------------------------------------------ evaluate() intervals
def test_every_evaluate_metric_says_what_its_spread_is(sets):
    r = evaluate(sets["real"][:12], sets["clean"][:12], features=("shallow",), seeds=(0, 1),
                 msssim_pairs=10, n_boot=50, mmd_permutations=20, kid_subsets=5)
    keys = metric_keys(r)
    assert "intervals" not in keys and set(r["intervals"]) == set(keys)
    assert set(r["intervals"].values()) <= set(INTERVALS.values())
    expected = {"fd_shallow": "extractor_seeds", "kid_shallow": "extractor_seeds",
                "coverage": "extractor_seeds", "mmd": "permutation_null",
                "msssim_diversity": "sample_pairs", "sdr_d": "bootstrap_ci", "sdr_free_d": "bootstrap",
                "seams": "none", "grid": "none"}
    for key, code in expected.items():
        assert r["intervals"][key] == INTERVALS[code], key
    md = to_markdown(r)
    for key in keys:
        row = next(line for line in md.splitlines() if line.startswith(f"| {key} |"))
        assert row.endswith(f"| {r['intervals'][key]} |"), row
    # one extractor seed: there is no spread, and the vocabulary says so
    one = evaluate(sets["real"][:8], sets["clean"][:8], features=("shallow",), seeds=(0,),
                   msssim_pairs=10, n_boot=20, mmd_permutations=10, kid_subsets=5)
    assert one["intervals"]["fd_shallow"] == INTERVALS["fixed"]
    # a result without the field (older JSON, metrics added later) still gets a meaning per row
    legacy = {k: v for k, v in one.items() if k != "intervals"}
    legacy["memorisation"] = {"value": 0.0}
    meanings = interval_meanings(legacy)
    assert meanings["fd_shallow"] == INTERVALS["fixed"] and meanings["memorisation"] == INTERVALS["none"]
    assert f"| memorisation | 0 | n/a | ~0.05 | {INTERVALS['none']} |" in to_markdown(legacy)
