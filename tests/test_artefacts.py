"""The seam and grid tests: each reacts to its own artefact and stays at its null for the others."""
import numpy as np
import pytest

from napari_crfgan.evaluation import evaluate
from napari_crfgan.evaluation.artefacts import artefact_tests, folded_profiles, squared_gaps
from napari_crfgan.evaluation.inject import nearest_grid, noise, slab_seams
from napari_crfgan.experiments.validation import artefact_matrix, matrix_markdown


@pytest.fixture(scope="module")
def matrix():
    return artefact_matrix(num=12, permutations=200)


def test_the_validation_matrix_holds(matrix):
    table = matrix_markdown(matrix, 12, 64)
    wrong = [r["case"] for r in matrix if not all(r[t]["as_expected"] for t in ("seams", "grid"))]
    assert not wrong, table
    assert table.count("| yes |") == len(matrix) == 12


def test_seams_are_found_at_their_phase(matrix):
    assert {r["case"]: r["seams"]["p"] < 0.05 for r in matrix}["seams shifted by 4 planes"]
    v = np.zeros((6, 64, 64, 64), np.float32) - 0.5
    v += np.random.default_rng(0).normal(0, 0.05, v.shape).astype(np.float32)
    shifted = slab_seams(v, 8, 0.4, phase=3, kind="offset")
    r = artefact_tests(v, shifted, permutations=100)
    assert r["seams"]["phase"] == 3 and r["seams"]["p"] < 0.05 and r["seams"]["period"] == 8


def test_squared_gaps_ignore_additive_noise_in_expectation():
    rng = np.random.default_rng(1)
    v = np.clip(rng.normal(0, 0.2, (4, 32, 32, 32)), -0.9, 0.9).astype(np.float32)
    clean = folded_profiles(squared_gaps(v), 4).mean(0)
    noisy = folded_profiles(squared_gaps(noise(v, 0.1, seed=2)), 4).mean(0)
    shift = noisy - clean  # every phase gains 2 sigma^2 alike
    assert shift == pytest.approx(np.full(4, 2 * 0.1 ** 2), rel=0.05)


def test_nearest_grid_is_blockwise_constant():
    v = np.random.default_rng(3).normal(size=(1, 8, 8, 8)).astype(np.float32)
    g = nearest_grid(v, 4, 1.0)
    assert np.allclose(g[0, :4, :4, :4], v[0, :4, :4, :4].mean())


def test_evaluate_reports_the_tests_with_p_values():
    rng = np.random.default_rng(4)
    real = np.clip(rng.normal(0, 0.3, (8, 32, 32, 32)), -1, 1).astype(np.float32)
    fake = slab_seams(np.clip(rng.normal(0, 0.3, (8, 32, 32, 32)), -1, 1).astype(np.float32), 4, 0.5)
    r = evaluate(real, fake, features=("shallow",), seeds=(0,), kid_subsets=5, mmd_permutations=50,
                 msssim_pairs=4, n_boot=20)
    for key in ("seams", "grid"):
        assert 0 < r[key]["p"] <= 1 and key in r["real_vs_real"]
    assert r["seams"]["p"] < 0.05 <= r["real_vs_real"]["seams"]["p"]
