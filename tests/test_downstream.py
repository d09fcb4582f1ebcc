"""The augmentation task (paper Table 5) at tiny scale: split, scores, early stopping, end to end."""
import json

import numpy as np
import pytest
import torch

from napari_crfgan import Sampler, TrainOptions, VolumeDataset, train
from napari_crfgan.cli import main
from napari_crfgan.experiments.downstream import (AugmentationSettings, EarlyStopping, augmentation_markdown,
                                                 binary_scores, run_augmentation, split_indices, synthesise,
                                                 write_split_folder)


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
    table = augmentation_markdown(result)
    assert "| real only |" in table and "+ CRF-GAN" in table and "± " in table


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
