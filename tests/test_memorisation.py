import numpy as np
import torch

from napari_crfgan.evaluation.memorisation import memorisation, nearest_distances, nearest_training
from napari_crfgan.evaluation.mmd import pool_volumes


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


def test_nearest_training_finds_the_copied_scan_and_compares_it_with_held_out_scans():
    train, test, fake = _sets(1)
    copy = nearest_training(train[7] + np.float32(0.001), train, test)
    assert copy["index"] == 7 and np.isclose(copy["distance"], 0.001 * 16 ** 1.5)  # 0.001 on 16³ pooled voxels
    d_test = memorisation(train, test, fake)["test_to_train"]
    assert np.isclose(copy["test_threshold"], np.quantile(d_test, 0.05)) and copy["closer_than_test"] is True
    # a new volume is as far from the training set as new scans are: not flagged
    fresh = nearest_training(fake[0], train, test)
    assert fresh["closer_than_test"] is False and fresh["distance"] > fresh["test_threshold"]
    expected_d, expected_i = nearest_distances(pool_volumes(fake[:1], 16), pool_volumes(train, 16))
    assert fresh["index"] == int(expected_i[0]) and np.isclose(fresh["distance"], expected_d[0])
    # a sequence of [1, D, H, W] items (a VolumeDataset) gives the same answer; no test set: no verdict
    items = [torch.from_numpy(v)[None] for v in train]
    alone = nearest_training(torch.from_numpy(fake[0]), items)
    assert (alone["index"], alone["test_threshold"], alone["closer_than_test"]) == (fresh["index"], None, None)
    assert np.isclose(alone["distance"], fresh["distance"])
