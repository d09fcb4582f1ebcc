"""Generator-only checkpoints and the `pretrained:` scheme: what a shipped demo model is."""
import numpy as np
import pytest
import torch

from napari_crfgan.experiments.pretrain import PretrainOptions, run_pretrain
from napari_crfgan.runtime import CheckpointError, load_checkpoint, save_checkpoint
from napari_crfgan.runtime import pretrained
from napari_crfgan.sampling import Sampler
from napari_crfgan.training import TrainOptions, run_training


def test_pretrain_exports_the_sampled_generator_alone(tmp_path, monkeypatch):
    options = PretrainOptions(name="demo-chest", iterations=2, work=str(tmp_path / "work"), out=str(tmp_path / "w"),
                              device="cpu", preset="tiny-32", demo_count=10)
    summary = run_pretrain(options)
    full = load_checkpoint(tmp_path / "work" / "demo-chest")
    gen = load_checkpoint(summary["file"])
    assert gen.generator_only and not full.generator_only and gen.config.ema_decay > 0  # the recommended recipe
    assert set(gen.state) and all(k.startswith("ema.") for k in gen.state)  # the moving average only
    assert gen.optimizers == {} and gen.rng == {}
    assert (tmp_path / "w" / "demo-chest.pt").stat().st_size < 0.5 * (tmp_path / "work" / "demo-chest" /
                                                                       "checkpoint.pt").stat().st_size
    assert gen.config.num_classes == 2 and gen.data["class_names"] == full.data["class_names"]
    a, b = Sampler(full, device="cpu"), Sampler(gen, device="cpu")
    va, vb = a.sample(2, seed=3, label="nodule"), b.sample(2, seed=3, label="nodule")
    assert all(np.array_equal(x.data, y.data) for x, y in zip(va, vb))  # samples from the EMA in both
    assert a.has_crf and not b.has_crf  # no trained CRF is shipped: no consistency map from it
    # the pretrained: scheme reads the package's folder
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path / "w")
    assert pretrained.available() == ["pretrained:demo-chest"]
    assert load_checkpoint("pretrained:demo-chest").state.keys() == gen.state.keys()
    with pytest.raises(CheckpointError, match="crfgan pretrain --name demo-brain"):
        load_checkpoint("pretrained:demo-brain")
    with pytest.raises(CheckpointError, match="choose one of pretrained:demo-brain, pretrained:demo-chest"):
        load_checkpoint("pretrained:chest")
    # a second call reuses the finished run and exports it again
    assert run_pretrain(options)["iterations"] == 2


def test_a_generator_only_checkpoint_is_refused_for_resume_and_checked_for_fit(tmp_path, checkpoints):
    gen = load_checkpoint(checkpoints["crfgan"]).sampling_only()
    assert {k.split(".")[0] for k in gen.state} == {"trunk", "head"}  # no EMA: the trained G^A + G^H
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoint.pt", gen)
    with pytest.raises(CheckpointError, match="cannot be resumed"):
        run_training(TrainOptions(data="demo-brain", demo_count=4, out=str(run), preset="tiny-32", iterations=4,
                                  resume="yes", device="cpu"))
    gen.state = {k: v for k, v in gen.state.items() if not k.startswith("head.conv2")}
    with pytest.raises(CheckpointError, match="missing key head.conv2"):
        gen.build()
    gen.state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unexpected key extra.weight"):
        gen.build()


@pytest.mark.parametrize("name, label", [("demo-brain", None), ("demo-chest", "nodule")])
def test_the_shipped_generators_sample_from_the_command_line(name, label, tmp_path):
    from napari_crfgan.cli import main
    from napari_crfgan.data import read_nifti

    path = pretrained.pretrained_path(f"pretrained:{name}")
    assert path.parent == pretrained.WEIGHTS_DIR and path.stat().st_size <= 15 * 2**20
    ckpt = load_checkpoint(f"pretrained:{name}")  # weights_only: no code from the file runs
    assert ckpt.generator_only and ckpt.config.size == 64 and ckpt.config.ema_decay > 0
    assert (ckpt.config.num_classes == 2) == (name == "demo-chest")
    argv = ["sample", "--checkpoint", f"pretrained:{name}", "--num", "1", "--out", str(tmp_path), "--device", "cpu"]
    assert main(argv + (["--label", label] if label else [])) == 0
    vol = read_nifti(next(tmp_path.glob("*.nii.gz")))
    assert vol.data.shape == (64, 64, 64) and np.isfinite(vol.data).all() and vol.data.std() > 0
    np.testing.assert_allclose(vol.spacing, ckpt.data["spacing"], rtol=1e-5)
