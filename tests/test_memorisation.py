import numpy as np

from napari_crfgan.evaluation.memorisation import memorisation, nearest_distances


def _sets(seed=0):
    rng = np.random.default_rng(seed)
    def draw(n):
        return np.clip(rng.normal(0, 0.3, (n, 16, 16, 16)), -1, 1).astype(np.float32)
    return draw(20), draw(20), draw(20)


def test_new_samples_are_not_memorised_and_copies_are():
    train, test, fake = _sets()
    fresh = memorisation(train, test, fake)
    assert fresh["value"] <= 0.2 and 0.7 < fresh["median_ratio"] < 1.3
    copies = train[np.arange(20) % 10] + np.float32(0.001)  # near copies of half the training set
    leaked = memorisation(train, test, copies)
    assert leaked["value"] == 1.0 and leaked["median_ratio"] < 0.05
    assert leaked["nearest_train"] == [i % 10 for i in range(20)]


def test_nearest_distances():
    q = np.array([[0.0, 0.0], [3.0, 4.0]])
    r = np.array([[0.0, 1.0], [3.0, 4.0], [10.0, 10.0]])
    d, i = nearest_distances(q, r)
    assert np.allclose(d, [1.0, 0.0]) and list(i) == [0, 1]
