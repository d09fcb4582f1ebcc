"""The augmentation task (paper Table 5) at tiny scale: split, scores, early stopping, the classifier's
blob filter, class fidelity, combining splits, end to end."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from napari_crfgan import Sampler, TrainOptions, VolumeDataset, train
from napari_crfgan.cli import main
from napari_crfgan.experiments.downstream import (AugmentationSettings, BlobEnhance, EarlyStopping, NoduleClassifier,
                                                 augmentation_markdown, binary_scores, class_fidelity,
                                                 combine_augmentation, predict, run_augmentation, split_indices,
                                                 synthesise, train_classifier, write_split_folder)


def test_split_is_stratified_disjoint_and_deterministic():
    labels = [0] * 10 + [1] * 7
    a = split_indices(labels, (0.5, 0.25, 0.25), seed=3)
    assert a == split_indices(labels, (0.5, 0.25, 0.25), seed=3)
    assert a != split_indices(labels, (0.5, 0.25, 0.25), seed=4)
    parts = [set(a[k]) for k in ("train", "val", "test")]
    assert set().union(*parts) == set(range(17)) and sum(map(len, parts)) == 17
    lab = np.asarray(labels)
    for k in ("train", "val", "test"):
        assert set(lab[a[k]]) == {0, 1}, k  # both classes in every part
    assert len(a["train"]) > len(a["val"]) and len(a["train"]) > len(a["test"])
    with pytest.raises(ValueError, match="at least 3"):
        split_indices([0, 0, 1, 1, 1], seed=0)


def test_binary_scores():
    s = binary_scores(np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1]))
    assert (s["tp"], s["fp"], s["fn"], s["tn"]) == (2, 1, 1, 1)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 / 3) and s["accuracy"] == pytest.approx(3 / 5)
    none = binary_scores(np.zeros(4), np.array([1, 0, 1, 0]))  # no positive predicted
    assert none["precision"] == 0 and none["recall"] == 0 and none["f1"] == 0


def test_early_stopping_stops_after_patience_and_keeps_the_best():
    model = torch.nn.Linear(2, 1)
    stop = EarlyStopping(patience=2)
    losses = [1.0, 0.8, 0.9, 0.85, 0.7]
    stopped_at = None
    for epoch, loss in enumerate(losses, 1):
        with torch.no_grad():
            model.bias.fill_(epoch)
        if stop.step(epoch, loss, model):
            stopped_at = epoch
            break
    assert stopped_at == 4 and stop.best_epoch == 2 and stop.best == 0.8
    assert float(stop.best_state["bias"]) == 2.0  # the weights of the best epoch


# ---------------------------------------------------------------- the classifier on toy volumes

@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # many tiny ops: on a busy machine extra torch threads make them ~100x slower, not faster
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _toy_volume(rng, ball: bool, size: int = 24) -> np.ndarray:
    """Lung-like background (-0.8, noisy) crossed by soft-tissue tubes (+0.3, 2 voxels across, the
    "vessels"); with `ball`, also one soft-tissue ball 5 voxels across (the "nodule")."""
    g = np.arange(size, dtype=np.float32)
    d, h, w = np.meshgrid(g, g, g, indexing="ij")
    v = np.full((size,) * 3, -0.8, dtype=np.float32)
    for _ in range(3):
        axis, (a, b) = rng.integers(3), rng.uniform(5, size - 5, 2)
        u, t = [(h, w), (d, w), (d, h)][axis]
        v[(u - a) ** 2 + (t - b) ** 2 <= 1.0] = 0.3
    if ball:
        c = rng.uniform(6, size - 6, 3)
        v[(d - c[0]) ** 2 + (h - c[1]) ** 2 + (w - c[2]) ** 2 <= 2.5 ** 2] = 0.3
    return v + rng.normal(0, 0.03, v.shape).astype(np.float32)


def _toy_set(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    return torch.from_numpy(np.stack([_toy_volume(rng, bool(k)) for k in y]))[:, None], torch.tensor(y).float()


def test_blob_filter_answers_balls_not_tubes_and_commutes_with_flips():
    size = 24
    g = np.arange(size, dtype=np.float32)
    d, h, w = np.meshgrid(g, g, g, indexing="ij")
    ball = np.where((d - 12) ** 2 + (h - 12) ** 2 + (w - 12) ** 2 <= 2.5 ** 2, 0.3, -0.8)
    tube = np.where((h - 12) ** 2 + (w - 12) ** 2 <= 1.0, 0.3, -0.8)  # as bright, 2 voxels across
    flat = np.full((size,) * 3, 0.3)
    x = torch.tensor(np.stack([ball, tube, flat]), dtype=torch.float32)[:, None]
    enhance = BlobEnhance(sigma=1.0)
    r = enhance(x)
    assert r.shape == (3, 1, 12, 12, 12) and float(r.min()) >= 0
    peak = r.flatten(1).amax(1)
    assert peak[0] > 0.1 and peak[1] < 0.1 * peak[0] and peak[2] < 1e-6
    noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    for axis in (2, 3, 4):  # what lets train_classifier flip the filter's output instead of the volume
        assert torch.allclose(enhance(noisy.flip(axis)), enhance(noisy).flip(axis), atol=1e-5)
    # a bone-bright ball in soft tissue: clipped at the ceiling (0.4), it barely stands out
    bone = torch.tensor(np.where(ball > 0, 1.0, 0.3), dtype=torch.float32)[None, None]
    assert float(enhance(bone).max()) < 0.1 * peak[0]
    assert torch.equal(enhance.all(noisy, batch=2), enhance(noisy))


@pytest.fixture(scope="module")
def toy_classifier():
    train_x, train_y = _toy_set(16, seed=1)
    val_x, val_y = _toy_set(8, seed=2)
    settings = AugmentationSettings(max_epochs=25, patience=5)
    model, hist = train_classifier(train_x, train_y, val_x, val_y, seed=0, settings=settings)
    return model, hist, settings


def test_classifier_tells_balls_from_tubes(toy_classifier):
    model, hist, settings = toy_classifier
    assert isinstance(model, NoduleClassifier) and 1 <= hist["best_epoch"] <= hist["epochs_run"] <= 25
    test_x, test_y = _toy_set(16, seed=3)
    pred = predict(model, test_x)
    assert binary_scores(pred, test_y.numpy())["accuracy"] >= 0.85
    # the fixed filter's output through the head gives the same answer as the volume through the model
    assert np.array_equal(predict(model, model.enhance.all(test_x), enhanced=True), pred)
    # the best weights are kept: the returned model's validation loss is the lowest seen
    val_x, val_y = _toy_set(8, seed=2)
    with torch.no_grad():
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(val_x), val_y)
    assert float(loss) == pytest.approx(hist["best_val_loss"], rel=1e-4, abs=1e-5)


class _ToySampler:
    """Stands in for a conditional Sampler: class 1 = a ball among tubes; `swap` draws the other class."""

    def __init__(self, swap: bool = False):
        self.swap = swap
        self.cfg = SimpleNamespace(num_classes=2, size=24)
        self.class_names = ["no-nodule", "nodule"]

    def sample(self, num, seed=0, label=None):
        rng = np.random.default_rng(seed)
        ball = bool(label) != self.swap
        return [SimpleNamespace(model_units=_toy_volume(rng, ball)) for _ in range(num)]


def test_class_fidelity_scores_faithful_generators_high_and_swapped_labels_low(toy_classifier):
    model, _, _ = toy_classifier
    counts = {0: 6, 1: 6}
    faithful = class_fidelity([model, model], _ToySampler(), counts=counts, class_names=["no-nodule", "nodule"])
    swapped = class_fidelity([model, model], _ToySampler(swap=True), counts=counts)
    assert faithful["mean"] >= 0.8 and swapped["mean"] <= 0.2
    assert faithful["runs"] == [faithful["mean"]] * 2 and faithful["std"] == 0
    assert faithful["count"] == {"no-nodule": 6, "nodule": 6} and set(swapped["per_class"]) == {"0", "1"}
    assert faithful["mean"] == pytest.approx(np.mean(list(faithful["per_class"].values())))
    # volumes with labels work as well, and the swapped labels are the complement
    x, lab = synthesise(_ToySampler(), counts)
    direct = class_fidelity(model, x, lab)
    assert direct["mean"] == pytest.approx(faithful["mean"])
    assert class_fidelity(model, x, 1 - lab)["mean"] == pytest.approx(1 - direct["mean"])
    # any classifier module works (no blob filter): one that always says "nodule" gets the nodule half right
    class Always(torch.nn.Module):
        def forward(self, v):
            return torch.full((len(v),), 5.0)
    always = class_fidelity(Always(), x, lab)
    assert always["mean"] == pytest.approx(0.5) and always["per_class"] == {"0": 0.0, "1": 1.0}
    with pytest.raises(ValueError, match="labels"):
        class_fidelity(model, x)


# ---------------------------------------------------------------- combining splits

def _result(split_seed, f1s, fidelity, test, accuracy=None):
    """A hand-made run_augmentation result: arms "real only" and "+ G", one run per value."""
    accuracy = accuracy or [0.5] * len(f1s)

    def runs(values):
        return [{"seed": i, "precision": v, "recall": v, "f1": v, "accuracy": a, "epochs_run": 10, "best_epoch": 4}
                for i, (v, a) in enumerate(zip(values, accuracy))]

    def arm(values, synthetic):
        return {"synthetic": synthetic, "runs": runs(values),
                **{k: {"mean": float(np.mean(values)), "std": 0.0} for k in ("precision", "recall", "f1")},
                "accuracy": {"mean": float(np.mean(accuracy)), "std": 0.0},
                "epochs_run": {"mean": 10.0, "std": 0.0}, "best_epoch": {"mean": 4.0, "std": 0.0}}

    gen = arm([v + 0.1 for v in f1s], 6)
    gen["class_fidelity"] = {"mean": float(np.mean(fidelity)), "std": 0.0, "runs": fidelity,
                             "per_class": {"no-nodule": fidelity[0], "nodule": fidelity[-1]}}
    return {"positive": "nodule", "class_names": ["no-nodule", "nodule"], "size": 32, "voxel_mm": 10.0,
            "seeds": list(range(len(f1s))), "settings": AugmentationSettings().__dict__ | {"split": [0.5, 0.25, 0.25]},
            "split": {"train": [0, 1], "val": [2], "test": test, "counts": {"train": 6, "val": 3, "test": 3},
                      "positives": {"train": 3, "val": 1, "test": 1}},
            "arms": {"real only": arm(f1s, 0), "+ G": gen},
            "real_only_accuracy": {"mean": float(np.mean(accuracy)), "std": 0.0, "runs": accuracy},
            "seconds": 1.0, "split_seed": split_seed}


def test_combine_augmentation_pools_runs_and_spreads_split_means():
    results = [_result(0, [0.2, 0.4], [0.6, 0.8], [5], accuracy=[0.5, 0.7]),
               _result(1, [0.6, 0.8], [0.9, 0.7], [6], accuracy=[0.9, 0.9]),
               _result(1, [0.7, 0.9], [1.0, 0.8], [6], accuracy=[0.8, 1.0])]  # split 1, another generator seed
    c = combine_augmentation(results)
    f1 = c["arms"]["real only"]["f1"]
    values = [0.2, 0.4, 0.6, 0.8, 0.7, 0.9]
    assert f1["mean"] == pytest.approx(np.mean(values)) and f1["std"] == pytest.approx(np.std(values, ddof=1))
    assert f1["n"] == 6 and len(c["splits"]) == 2 and c["n_results"] == 3
    # split means 0.3 and 0.75: their std (ddof=1), not that of the three results' means
    assert f1["split_std"] == pytest.approx(np.std([0.3, 0.75], ddof=1))
    g = c["arms"]["+ G"]
    assert g["f1"]["mean"] == pytest.approx(np.mean(values) + 0.1) and g["synthetic"] == 6
    fid = [0.6, 0.8, 0.9, 0.7, 1.0, 0.8]
    assert g["class_fidelity"]["mean"] == pytest.approx(np.mean(fid))
    assert g["class_fidelity"]["std"] == pytest.approx(np.std(fid, ddof=1))
    assert g["class_fidelity"]["split_std"] == pytest.approx(np.std([0.7, 0.85], ddof=1))
    assert "class_fidelity" not in c["arms"]["real only"]
    acc = [0.5, 0.7, 0.9, 0.9, 0.8, 1.0]
    assert c["real_only_accuracy"]["mean"] == pytest.approx(np.mean(acc))
    assert c["real_only_accuracy"]["split_std"] == pytest.approx(np.std([0.6, 0.9], ddof=1))
    assert [r["split"] for r in c["arms"]["+ G"]["runs"]] == [0, 0, 1, 1, 1, 1]
    single = combine_augmentation(results[:1])
    assert single["arms"]["real only"]["f1"]["split_std"] == 0
    assert single["arms"]["real only"]["f1"]["mean"] == pytest.approx(0.3)
    # without split_seed, results of the same test volumes are one split
    unnamed = [{k: v for k, v in r.items() if k != "split_seed"} for r in results]
    assert combine_augmentation(unnamed)["arms"]["real only"]["f1"]["split_std"] == pytest.approx(f1["split_std"])
    table = augmentation_markdown(c)
    assert "class fidelity (%)" in table and "2 stratified splits" in table and "per-split means" in table
    assert f"{100 * np.mean(fid):.2f} ± {100 * np.std(fid, ddof=1):.2f}" in table
    assert f"{100 * np.mean(acc):.2f} ± " in table
    with pytest.raises(ValueError, match="different arms"):
        combine_augmentation([results[0], {**results[1], "arms": {"real only": results[1]["arms"]["real only"]}}])
    with pytest.raises(ValueError):
        combine_augmentation([])


@pytest.fixture(scope="module")
def chest_and_generators(tmp_path_factory):
    root = tmp_path_factory.mktemp("downstream")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, most of all on a shared machine
    chest = VolumeDataset("demo-chest", size=32, conditional=True, demo_count=12)
    settings = AugmentationSettings(max_epochs=12, patience=2, batch_size=4)
    split = split_indices(chest.labels, settings.split, settings.split_seed)
    folder = write_split_folder(chest, split["train"], root / "train-split")
    train_set = VolumeDataset(str(folder), size=32, modality="ct", conditional=True)
    samplers = {}
    for model in ("crfgan", "hagan"):
        out = root / model
        list(train(TrainOptions(data=str(folder), out=out, model=model, preset="tiny-32", iterations=2,
                                batch_size=2, device="cpu", conditional=True, modality="ct"), train_set))
        samplers[model] = Sampler(out / "checkpoint.pt", device="cpu")
        samplers[model].path = out / "checkpoint.pt"
    yield chest, train_set, split, settings, samplers
    torch.set_num_threads(threads)


def test_generators_see_only_the_training_split(chest_and_generators):
    chest, train_set, split, _, samplers = chest_and_generators
    assert len(train_set) == len(split["train"]) and train_set.class_names == chest.class_names
    for i in split["val"] + split["test"]:
        assert all(not f.endswith(chest.files[i]) for f in train_set.files)
    assert samplers["crfgan"].checkpoint.data["count"] == len(split["train"])


def test_synthetic_volumes_are_balanced_and_labelled(chest_and_generators):
    _, _, _, _, samplers = chest_and_generators
    x, y = synthesise(samplers["crfgan"], {0: 2, 1: 3})
    assert x.shape == (5, 1, 32, 32, 32) and y.tolist() == [0, 0, 1, 1, 1]
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    x2, _ = synthesise(samplers["crfgan"], {0: 2, 1: 3})
    assert torch.equal(x, x2)  # fixed latent seeds


def test_augmentation_end_to_end(chest_and_generators):
    chest, _, split, settings, samplers = chest_and_generators
    seeds = [0, 1, 2]
    result = run_augmentation(chest, {"real only": None, "+ CRF-GAN": samplers["crfgan"],
                                      "+ HA-GAN": samplers["hagan"]}, seeds=seeds, settings=settings, split=split)
    assert result["positive"] == "nodule" and result["seeds"] == seeds
    n_train = result["split"]["counts"]["train"]
    assert n_train == len(split["train"]) and result["split"]["test"] == split["test"]
    stopped_early = []
    for name, arm in result["arms"].items():
        assert arm["synthetic"] == (0 if name == "real only" else n_train)  # "50%": as many as real
        assert len(arm["runs"]) == len(seeds)
        for key in ("precision", "recall", "f1"):
            values = [r[key] for r in arm["runs"]]
            assert all(0 <= v <= 1 for v in values)
            assert 0 <= arm[key]["mean"] <= 1
            assert arm[key]["mean"] == pytest.approx(np.mean(values))
            assert arm[key]["std"] == pytest.approx(np.std(values, ddof=1))
        for r in arm["runs"]:
            assert 1 <= r["best_epoch"] <= r["epochs_run"] <= settings.max_epochs
            assert len(r["val_losses"]) == r["epochs_run"]
            assert r["tp"] + r["fp"] + r["fn"] + r["tn"] == len(split["test"])
            if r["early_stopped"]:
                # stopped exactly `patience` epochs after the lowest validation loss
                assert r["epochs_run"] == r["best_epoch"] + settings.patience < settings.max_epochs
                assert min(r["val_losses"]) == pytest.approx(r["val_losses"][r["best_epoch"] - 1])
                stopped_early.append(r["epochs_run"])
    assert stopped_early, "early stopping never stopped a run"
    # class fidelity: the real-only classifiers (one per seed) on each generator's synthetic volumes
    real_acc = [r["accuracy"] for r in result["arms"]["real only"]["runs"]]
    assert result["real_only_accuracy"]["runs"] == real_acc
    assert result["real_only_accuracy"]["mean"] == pytest.approx(np.mean(real_acc))
    assert "class_fidelity" not in result["arms"]["real only"]
    for name in ("+ CRF-GAN", "+ HA-GAN"):
        fid = result["arms"][name]["class_fidelity"]
        assert len(fid["runs"]) == len(seeds) and all(0 <= v <= 1 for v in fid["runs"])
        assert fid["mean"] == pytest.approx(np.mean(fid["runs"]))
        assert fid["std"] == pytest.approx(np.std(fid["runs"], ddof=1))
        assert sum(fid["count"].values()) == n_train and set(fid["per_class"]) == set(chest.class_names)
    table = augmentation_markdown(result)
    assert "| real only |" in table and "+ CRF-GAN" in table and "± " in table and "class fidelity" in table
    combined = combine_augmentation([result, {**result, "split_seed": 7}])
    assert combined["arms"]["+ CRF-GAN"]["f1"]["mean"] == pytest.approx(result["arms"]["+ CRF-GAN"]["f1"]["mean"])
    assert combined["arms"]["+ CRF-GAN"]["f1"]["split_std"] == pytest.approx(0.0, abs=1e-12)


def test_augmentation_needs_conditional_generators(chest_and_generators, tmp_path):
    chest, _, split, settings, _ = chest_and_generators
    list(train(TrainOptions(data="demo-chest", out=tmp_path / "u", model="crfgan", preset="tiny-32", iterations=1,
                            batch_size=2, device="cpu", demo_count=12)))
    with pytest.raises(ValueError, match="class-conditional"):
        run_augmentation(chest, {"+ uncond": Sampler(tmp_path / "u" / "checkpoint.pt", device="cpu")}, seeds=[0],
                         settings=settings, split=split)



def test_downstream_cli(chest_and_generators, capsys):
    chest, _, split, _, samplers = chest_and_generators
    ckpt = samplers["crfgan"].path
    code = main(["downstream", "--demo-count", "12", "--seeds", "2", "--max-epochs", "3", "--patience", "1",
                 "--threads", "1", "--device", "cpu", "--checkpoint", f"CRF-GAN={ckpt}", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)
    assert list(result["arms"]) == ["real only", "+ CRF-GAN"] and result["size"] == chest.size
    assert result["split"]["test"] == split["test"] and result["arms"]["+ CRF-GAN"]["synthetic"] == len(split["train"])
    assert all(r["epochs_run"] <= 3 for arm in result["arms"].values() for r in arm["runs"])
