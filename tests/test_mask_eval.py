"""The evaluation of mask-to-volume synthesis (issue 14): Dice, per-structure HU agreement, the painted-nodule
measure on hand-made volumes whose answers are known, the segmenter on an easy task, and Table 6 of the tiny
budget (real training steps) with all its columns."""
import math
import re

import numpy as np
import pytest
import torch

from napari_crfgan.experiments.mask_eval import STRUCTURES, _acceptance, _intensity
from napari_crfgan.experiments.mask_measures import (dice, dice_per_structure, paint_sphere, painted_contrast,
                                                     seed_interval, structure_means)
from napari_crfgan.experiments.mask_report import DICE_COLUMNS, TITLE, put_section
from napari_crfgan.experiments.segmentation import SegmenterSettings, predict, train_segmenter


def _cube(shape=(20, 20, 20), lo=5, hi=15, shift=0):
    m = np.zeros(shape, bool)
    m[lo + shift:hi + shift, lo:hi, lo:hi] = True
    return m


def test_dice_of_a_perfect_and_a_shifted_prediction():
    truth = _cube()
    assert dice(truth, truth) == 1.0
    # shifted by 2 voxels along one axis: 8 of 10 planes overlap, 2 * 800 / (1000 + 1000)
    assert dice(_cube(shift=2), truth) == pytest.approx(0.8)
    assert dice(np.zeros_like(truth), truth) == 0.0
    assert math.isnan(dice(np.zeros_like(truth), np.zeros_like(truth)))  # nothing there, nothing found
    pred = np.where(_cube(shift=2), 2, 0)
    true = np.where(truth, 1, 0)
    scores = dice_per_structure(pred, true, {"one": (1,), "two": (2,), "either": (1, 2)})
    assert scores["one"] == 0.0 and scores["two"] == 0.0 and scores["either"] == pytest.approx(0.8)


def _phantom():
    """Labels 1 (lung, -850 HU) in a big box, 2 (fat, -100 HU) around it, 0 outside (-1000 HU)."""
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[2:22, 2:22, 2:22] = 2
    labels[4:20, 4:20, 4:20] = 1
    volume = np.choose(labels, [-1000.0, -850.0, -100.0]).astype(np.float32)
    return labels, volume


def test_intensity_agreement_on_a_hand_made_volume():
    labels, real = _phantom()
    assert structure_means(real, labels, {"lung": (1,), "fat": (2,), "none": (7,)}) == {
        "lung": -850.0, "fat": -100.0, "none": None}
    fake = real + np.where(labels == 2, 30.0, 0.0) + np.where(labels == 1, -12.0, 0.0)
    names = {0: "outside the field of view", 1: "lung", 2: "fat"}
    out = _intensity([real, real], [fake, fake], [labels, labels], names)
    assert out["labels"]["lung"]["diff"] == pytest.approx(-12.0) and out["labels"]["fat"]["diff"] == pytest.approx(30)
    assert out["structures"]["lung"]["real"] == pytest.approx(-850.0)  # "lung" groups lung, vessels and airways
    assert out["structures"]["soft tissue"]["synthetic"] == pytest.approx(-70.0)
    assert out["structures"]["soft tissue"]["cases"] == 2 and out["structures"]["soft tissue"]["diff_std"] == 0
    assert "bone" not in out["structures"]  # no voxel of it: no row


def test_painted_nodule_measure_on_a_hand_made_volume():
    labels, _ = _phantom()
    painted = paint_sphere(labels, region=1, paint=14, radius=4, shell=2)
    new, ball, shell = painted
    assert ball.sum() == np.sum(new == 14) > 4 ** 3 * 4  # a ball of radius 4 (about 4/3 pi r^3 voxels)
    assert np.all(labels[ball] == 1) and np.all(labels[shell] == 1)  # painted inside the lung; the shell is lung
    assert not (ball & shell).any() and shell.sum() > ball.sum()
    assert np.all(new[~ball] == labels[~ball])
    volume = np.where(labels == 1, -850.0, -100.0)
    volume[ball] = 40.0
    assert painted_contrast(volume, ball, shell) == pytest.approx(890.0)
    assert paint_sphere(labels, region=1, paint=14, radius=9, shell=2) is None  # no ball of 9 fits in 16 voxels
    assert paint_sphere(labels, region=5, paint=14, radius=1, shell=1) is None  # no such region


def test_seed_interval():
    r = seed_interval([0.8, 0.9, 1.0, None, float("nan")], (0.0, 1.0))
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2) * std / sqrt(n)
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.9) and r["std"] == pytest.approx(0.1)
    assert r["low"] == pytest.approx(0.9 - half) and r["high"] == 1.0  # cut to the range of a Dice
    assert seed_interval([0.5])["low"] is None and seed_interval([])["mean"] is None


def test_acceptance_reads_each_criterion():
    def entry(mean, low):
        return {"mean": mean, "low": low}

    result = {"intensity": {"structures": {"lung": {"diff": 49.0}, "soft tissue": {"diff": -20.0}}},
              "painted": {"mean": 310.0},
              "segmentation": {"real only": {"dice": {"lung": entry(0.9, 0.85), "nodule": entry(None, None)}},
                               "real + synthetic": {"dice": {"lung": entry(0.86, 0.8), "nodule": entry(0.1, 0.0)}}}}
    acc = _acceptance(result)
    assert acc["hu"]["holds"] and acc["nodule"]["holds"] and acc["dice"]["holds"]
    result["intensity"]["structures"]["lung"]["diff"] = -51.0
    result["painted"]["mean"] = 299.0
    result["segmentation"]["real + synthetic"]["dice"]["lung"] = entry(0.84, 0.8)
    acc = _acceptance(result)
    assert not (acc["hu"]["holds"] or acc["nodule"]["holds"] or acc["dice"]["holds"])


def test_the_segmenter_learns_an_easy_task():
    """Bright blobs on a dark background, with noise: 40 steps find them (real training on CPU)."""
    gen = torch.Generator().manual_seed(0)
    blobs = torch.nn.functional.avg_pool3d(torch.randn(4, 1, 12, 12, 12, generator=gen), 5, 1, 2)
    y = (blobs[:, 0] > 0.1).long()
    x = (2 * y[:, None].float() - 1) + 0.3 * torch.randn(4, 1, 12, 12, 12, generator=gen)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_segmenter(x[:3], y[:3], 2, seed=0, settings=SegmenterSettings(steps=40, width=4, lr=1e-2))
    finally:
        torch.set_num_threads(threads)
    pred = predict(model, x[3:])
    assert pred.shape == (1, 12, 12, 12)
    assert dice(pred[0].numpy() == 1, y[3].numpy() == 1) > 0.9


def test_put_section_replaces_table_6_before_the_closing_sections(tmp_path):
    path = tmp_path / "results.md"
    path.write_text("# R\n\n## Table 5: x\n\nfive\n\n## Where this run differs from the paper\n\nd\n\n## Timings\n")
    put_section(path, f"{TITLE}\n\nfirst\n")
    put_section(path, f"{TITLE}\n\nsecond\n")
    text = path.read_text()
    assert text.count(TITLE) == 1 and "second" in text and "first" not in text
    assert text.index("five") < text.index(TITLE) < text.index("## Where this run differs")
    other = tmp_path / "new.md"
    put_section(other, f"{TITLE}\n\nalone\n")
    assert other.read_text() == f"{TITLE}\n\nalone\n"


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory):
    from napari_crfgan.experiments.paper_tables import run_mask_table

    root = tmp_path_factory.mktemp("mask-eval")
    threads = torch.get_num_threads()
    try:
        result = run_mask_table("tiny", out=root / "docs", work=root / "work", command="crfgan mask-eval --budget tiny")
    finally:
        torch.set_num_threads(threads)
    return root, result


def test_the_tiny_table_renders_with_all_its_columns(tiny_table):
    root, result = tiny_table
    md = (root / "docs" / "results.md").read_text()
    assert md == result["markdown"] and md.startswith(TITLE) and "`crfgan mask-eval --budget tiny`" in md
    header = next(line for line in md.splitlines() if line.startswith("| segmenter trained on |"))
    assert all(f"Dice {c}" in header for c in DICE_COLUMNS) and set(DICE_COLUMNS) == {*STRUCTURES, "body"}
    for arm in ("real only (floor)", "real + synthetic", "synthetic only"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {arm} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(DICE_COLUMNS) + 2
        assert all(re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]|n/a", c) for c in cells[2:]), row
        assert re.search(r"\d\.\d{3} \[", row)  # two seeds: an interval
    assert re.search(r"FD \d[\d.]* ± [\d.e+-]+ \(real vs real floor [\d.e+-]+\), KID", md)
    for name in ("lung", "soft tissue"):
        assert re.search(rf"^\| {name} \| -?\d+ \| -?\d+ \| [+-]\d+ ± \d+ \| 4 \|$", md, flags=re.M)
    assert re.search(r"\d+ cases.*: mean contrast -?\d+ HU", md)
    assert len(re.findall(r"\*\*(does not hold|holds)\*\*", md)) == 3
    counts, seg = result["counts"], result["segmentation"]
    # the segmenter's test pairs were never seen: the GAN trained on the train list only
    assert counts == {"train": 4, "val": 4, "test": 4} and result["gan"]["iterations"] == 4
    assert [seg[a]["pairs"] for a in seg] == [4, 8, 4] and all(len(seg[a]["runs"]) == 2 for a in seg)
