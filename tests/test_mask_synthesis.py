"""Mask-to-volume synthesis (issue 14): the U-Net and SPADE generators, the PatchGAN, their training step,
paired data (good and bad pairs, demo-chest masks), patch-blended inference against one pass, and the
command line (train, resume, synthesize, the refusals)."""
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_crfgan import cli
from napari_crfgan.data import PairedDataset, SkippedFilesWarning, VolumeDataset
from napari_crfgan.data.demo import CHEST_LABELS, chest_phantom_with_labels, demo_masks_folder, make_chest_phantom
from napari_crfgan.data.label_names import read_label_names
from napari_crfgan.model import build_system, parameter_counts, system_config
from napari_crfgan.model.blending import axis_window, patch_starts
from napari_crfgan.model.maskgan import exact_overlap, synthesize
from napari_crfgan.runtime import Checkpoint, load_checkpoint, save_checkpoint

torch.set_num_threads(1)  # tiny convolutions: one thread is fastest, most of all on a shared machine

MODELS = ("pix2pix", "spade")


def tiny(model, **fields):
    return system_config(model, "tiny-32", **fields)


# ---- networks -------------------------------------------------------------------------------
@pytest.mark.parametrize("model,preset,generator,discriminator", [
    ("pix2pix", "tiny-32", 92_289, 178_025), ("pix2pix", "small-64", 1_544_769, 700_113),
    ("spade", "tiny-32", 122_345, 178_025), ("spade", "small-64", 1_371_585, 700_113),
])
def test_parameter_counts(model, preset, generator, discriminator):
    assert parameter_counts(model, preset) == {"generator": generator, "discriminator": discriminator}


def test_the_seed_layout_at_paper_scale():
    """7 convs down and 7 transposed convs up at 128^3 (the seed's U-Net), a 5-conv PatchGAN."""
    with torch.device("meta"):
        system = build_system("pix2pix", system_config("pix2pix", "paper-128"))
    convs = [m for m in system.generator.modules() if type(m) is torch.nn.Conv3d]
    deconvs = [m for m in system.generator.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert (len(convs), len(deconvs)) == (7, 7)
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 512, 512, 512]
    assert len([m for m in system.discriminator.modules() if isinstance(m, torch.nn.Conv3d)]) == 5
    assert system.cfg.loss == "lsgan" and not system.cfg.d_spectral_norm


@pytest.mark.parametrize("model", MODELS)
def test_shapes_on_a_grid_that_is_not_the_cube(model):
    system = build_system(model, tiny(model, mask_classes=5)).eval()
    x = torch.zeros(1, 5, 16, 24, 40)
    x[:, 0] = 1
    with torch.no_grad():
        assert system.generator(x).shape == (1, 1, 16, 24, 40)
        assert system.discriminator(torch.zeros(2, 6, 32, 32, 32)).shape == (2, 1, 2, 2, 2)


@pytest.mark.parametrize("model", MODELS)
def test_halo_is_the_receptive_field(model):
    """The halo computed from the layer list is the radius autograd finds (every phase of the strides)."""
    g = build_system(model, tiny(model, mask_classes=3)).generator.eval()
    m, halo = g.multiple, g.halo
    n = m * ((2 * halo + 3 * m) // m + 1)
    x = torch.rand(1, 3, n, m, m, requires_grad=True)
    measured = 0
    for o in range(n // 2 - m, n // 2):
        x.grad = None
        g(x)[0, 0, o].sum().backward()
        touched = (x.grad.abs().sum(dim=(0, 1, 3, 4)) > 0).nonzero().flatten()
        measured = max(measured, o - int(touched.min()), int(touched.max()) - o)
    assert measured == halo > 0


@pytest.mark.parametrize("model,fields", [
    ("pix2pix", {}),
    ("spade", {}),
    ("pix2pix", {"mask_noise": True, "augment": "translation,cutout,intensity", "ema_decay": 0.9,
                 "loss": "bce", "r1_gamma": 1.0, "feature_matching": 1.0}),
])
def test_a_train_step_changes_the_weights_with_finite_losses(model, fields):
    torch.manual_seed(0)
    system = build_system(model, tiny(model, mask_classes=3, **fields))
    optimizers = system.make_optimizers()
    before = {k: p.detach().clone() for k, p in system.named_parameters()}
    gen = torch.Generator().manual_seed(1)
    real = torch.cat([torch.rand(2, 1, 32, 32, 32, generator=gen) * 2 - 1,
                      torch.randint(0, 3, (2, 1, 32, 32, 32), generator=gen).float()], dim=1)
    losses = system.train_step(real, None, 0, optimizers)
    assert set(losses) == {"d", "g", "l1", "g_adversarial"} and all(np.isfinite(v) for v in losses.values())
    assert losses["g"] > 100 * losses["l1"] * 0.99  # L1 weighted by pix2pix's 100
    for net in ("generator", "discriminator"):
        moved = [k for k, p in getattr(system, net).named_parameters()
                 if not torch.equal(p, before[f"{net}.{k}"])]
        assert len(moved) == len(list(getattr(system, net).parameters())), net
    if fields.get("ema_decay"):
        live, avg = system.generator.down[0][0].weight, system.ema["generator"].down[0][0].weight
        assert not torch.equal(live, avg) and not torch.equal(avg, before["generator.down.0.0.weight"])


# ---- patch-blended inference ------------------------------------------------------------------
def _blobs(shape, classes, seed=0):
    """A label map of a few overlapping boxes: structure at every scale the generators see."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.int64)
    for k in range(1, classes):
        for _ in range(3):
            lo = [int(rng.integers(0, n - 4)) for n in shape]
            hi = [a + int(rng.integers(4, max(5, n // 2))) for a, n in zip(lo, shape)]
            labels[tuple(slice(a, b) for a, b in zip(lo, hi))] = k
    return torch.from_numpy(labels)


def _trained_norms(system, classes):
    """Running BatchNorm statistics that are not the identity (a few forward passes in training mode)."""
    with torch.no_grad():
        for seed in range(3):
            system.generator(system.generator_input(_blobs((32, 32, 32), classes, seed)[None].float()))
    return system.eval()


@pytest.mark.parametrize("model,fields,patch", [("pix2pix", {}, 64), ("spade", {"mask_depth": 2}, 64)])
def test_blended_patches_equal_one_pass_on_a_grid_that_is_not_the_cube(model, fields, patch):
    torch.manual_seed(0)
    system = _trained_norms(build_system(model, tiny(model, mask_classes=4, **fields)), 4)
    generator = system.generator
    mask = _blobs((70, 66, 75), 4)  # padded to a multiple of the stride; several patches along every axis
    overlap = exact_overlap(generator)
    assert all(len(patch_starts(-(-n // generator.multiple) * generator.multiple, patch, overlap,
                                generator.multiple)) >= 2 for n in mask.shape)
    one = synthesize(system, mask)
    blended = synthesize(system, mask, patch=patch)
    assert one.shape == blended.shape == (1, 1, 70, 66, 75)
    assert float((one - blended).abs().max()) < 1e-4
    assert float(one.std()) > 1e-3  # not a constant output that would match anything
    # the overlap is what makes it exact: 8 voxels (under twice the halo) ramp over inexact voxels
    assert float((one - synthesize(system, mask, patch=24, overlap=8)).abs().max()) > 1e-4


def test_window_is_zero_in_the_halo_and_ramps_smoothly():
    w = axis_window(64, before=50, after=None, halo=21)
    assert torch.all(w[:21] == 0) and torch.all(w[29:] == 1)
    assert torch.all(torch.diff(w[20:30]) > 0)
    up, down = axis_window(64, 50, None, 21)[21:29], axis_window(64, None, 50, 21)[-29:-21]
    torch.testing.assert_close(up + down, torch.ones(8, dtype=torch.float64))  # facing ramps sum to 1


# ---- paired data ------------------------------------------------------------------------------
def _ct(shape, seed):
    """A CT-like volume in HU with a bright box where its mask says 1."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(-700, 30, shape).astype(np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    box = tuple(slice(n // 4, 3 * n // 4) for n in shape)
    vol[box] += 800
    labels[box] = 1
    labels[: shape[0] // 4, : shape[1] // 4] = 2
    return vol, labels


AFFINE = np.diag([1.5, 1.2, 2.0, 1.0])


@pytest.fixture
def paired_folders(tmp_path):
    """Images and masks as NIfTI (one .npy mask), two good pairs and one bad pair of each kind."""
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    shape = (20, 24, 28)  # (x, y, z) as stored
    for i, name in enumerate(["good_a", "good_b", "missing", "shape", "affine", "fraction", "corrupt"]):
        vol, labels = _ct(shape, i)
        nib.save(nib.Nifti1Image(vol, AFFINE), images / f"{name}.nii.gz")
        if name == "missing":
            continue
        if name == "good_b":  # a .npy mask: its (D, H, W) is the image's as the package reads it
            np.save(masks / "good_b.npy", np.ascontiguousarray(labels.transpose(2, 1, 0)))
            continue
        if name == "corrupt":
            (masks / "corrupt.nii.gz").write_bytes(b"not a nifti file")
            continue
        data = labels.astype(np.float32) + (0.5 if name == "fraction" else 0)
        data = data[:-1] if name == "shape" else data
        affine = AFFINE.copy()
        if name == "affine":
            affine[0, 3] = 7.5
        nib.save(nib.Nifti1Image(data, affine), masks / f"{name}.nii.gz")
    return images, masks


def test_paired_dataset_keeps_good_pairs_and_names_each_bad_one(paired_folders):
    images, masks = paired_folders
    with pytest.warns(SkippedFilesWarning) as caught:
        ds = PairedDataset(images, masks, 32, modality="ct")
    message = str(caught[0].message)
    assert "Skipped 5 of 7" in message
    for name, reason in [("missing.nii.gz", "no mask"), ("shape.nii.gz", "voxels"),
                         ("affine.nii.gz", "another affine"), ("fraction.nii.gz", "non-integer"),
                         ("corrupt.nii.gz", "mask corrupt.nii.gz: not a readable NIfTI")]:
        line = next(line for line in message.splitlines() if line.strip().startswith(name))
        assert reason in line, line
    assert ds.files == ["good_a.nii.gz", "good_b.nii.gz"] and ds.mask_files == ["good_a.nii.gz", "good_b.npy"]
    assert ds.mask_classes == 3 and ds.summary()["masks"]["classes"] == 3
    for i in range(2):
        item = ds[i]
        assert item.shape == (2, 32, 32, 32)
        labels, image = item[1], item[0]
        assert torch.equal(labels, labels.round()) and set(labels.unique().tolist()) == {0.0, 1.0, 2.0}
        # resampled with the image: the bright box is where label 1 is
        assert float(image[labels == 1].mean()) > float(image[labels == 0].mean()) + 0.5
    torch.testing.assert_close(ds[0][0], VolumeDataset(images, 32, modality="ct", files=["good_a.nii.gz"])[0][0])


def test_demo_chest_masks_are_aligned_with_their_volumes():
    folder = demo_masks_folder("demo-chest", count=2)
    assert read_label_names(folder) == CHEST_LABELS
    for i in range(2):
        image = nib.load(folder.parent / folder.name.removesuffix("-masks") / f"chest_{i:03d}.nii.gz")
        mask = nib.load(folder / f"chest_{i:03d}.nii.gz")
        assert image.shape == mask.shape and np.allclose(image.affine, mask.affine)
        hu, labels = image.get_fdata(), np.asarray(mask.dataobj)
        assert hu[labels == 10].mean() < -700  # lung: dark
        assert hu[labels == 12].mean() > 0  # heart and aorta: soft tissue
        assert hu[labels == 8].mean() > 300  # vertebra: bone
    ds = PairedDataset("demo-chest", "demo", 32, demo_count=2)
    assert ds.mask_classes == len(CHEST_LABELS) and ds.summary()["masks"]["names"][10] == "lung"
    image, labels = ds[0]
    assert float(image[labels == 10].mean()) < -0.6 < float(image[labels == 12].mean())  # in the cube too


def test_drawing_the_labels_does_not_change_the_phantom():
    kw = dict(seed=5, nodule=True, shape=(24, 32, 32), spacing=(12.0, 10.0, 10.0))
    vol, nodules, labels = chest_phantom_with_labels(**kw)
    same, same_nodules = make_chest_phantom(**kw)
    assert np.array_equal(vol, same) and nodules == same_nodules
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= set(CHEST_LABELS)


# ---- command line -----------------------------------------------------------------------------
def run(capsys, *args):
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


TRAIN = ("train", "--preset", "tiny-32", "--batch-size", "2", "--device", "cpu", "--threads", "1", "--split", "none")


def test_train_resume_synthesize(paired_folders, tmp_path, capsys):
    images, masks = paired_folders
    runs = tmp_path / "runs"
    common = (*TRAIN, "--model", "pix2pix", "--data", images, "--masks", masks, "--modality", "ct")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFilesWarning)
        assert run(capsys, *common, "--iterations", "2", "--out", runs / "a")[0] == 0
        code, _, err = run(capsys, *common, "--iterations", "4", "--out", runs / "a", "--resume")
        assert code == 0, err
        assert run(capsys, *common, "--iterations", "4", "--out", runs / "b")[0] == 0
    resumed, straight = load_checkpoint(runs / "a"), load_checkpoint(runs / "b")
    assert resumed.iteration == straight.iteration == 4 and resumed.config.mask_classes == 3
    for key, value in straight.state.items():  # on CPU a resumed run ends bitwise identical
        assert torch.equal(resumed.state[key], value), key

    mask = masks / "good_a.nii.gz"  # 20 x 24 x 28 voxels of 1.5 x 1.2 x 2 mm: resampled to the 0.88 mm training grid
    out = tmp_path / "synth" / "a.nii.gz"
    out.parent.mkdir()
    code, stdout, err = run(capsys, "synthesize", "--checkpoint", runs / "a", "--mask", mask, "--out", out,
                            "--device", "cpu")
    assert code == 0, err
    written, source = nib.load(out), nib.load(mask)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine, atol=1e-5)
    data = written.get_fdata()
    assert np.isfinite(data).all() and -1024 <= data.min() and data.max() <= 600  # HU of the training window
    code, _, err = run(capsys, "synthesize", "--checkpoint", runs / "a", "--mask", mask, "--out", out)
    assert code == 2 and "--overwrite" in err
    assert run(capsys, "synthesize", "--checkpoint", runs / "a", "--mask", mask, "--out", out, "--overwrite",
               "--patch", "64", "--overlap", "8")[0] == 0
    code, _, err = run(capsys, "sample", "--checkpoint", runs / "a", "--out", tmp_path / "s")
    assert code == 2 and "crfgan synthesize" in err and err.count("\n") == 1


def test_synthesize_refuses_a_latent_model_and_a_label_it_does_not_know(tmp_path, capsys):
    cfg = system_config("crfgan", "tiny-32")
    latent = save_checkpoint(tmp_path / "crfgan.pt", Checkpoint("crfgan", "tiny-32", cfg, 0,
                                                                build_system("crfgan", cfg).state_dict()))
    cfg = system_config("pix2pix", "tiny-32", mask_classes=3)
    masked = save_checkpoint(tmp_path / "pix2pix.pt", Checkpoint("pix2pix", "tiny-32", cfg, 0,
                                                                 build_system("pix2pix", cfg).state_dict()))
    mask = tmp_path / "mask.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 5, dtype=np.uint8), np.eye(4)), mask)
    code, _, err = run(capsys, "synthesize", "--checkpoint", latent, "--mask", mask, "--out", tmp_path / "o.nii.gz")
    assert code == 2 and "crfgan sample" in err and err.count("\n") == 1
    code, _, err = run(capsys, "synthesize", "--checkpoint", masked, "--mask", mask, "--out", tmp_path / "o.nii.gz")
    assert code == 2 and "label 5" in err and "0 .. 2" in err
    assert not (tmp_path / "o.nii.gz").exists()


@pytest.mark.parametrize("args,says", [
    (("--model", "pix2pix", "--data", "demo-chest"), "--masks"),
    (("--model", "crfgan", "--data", "demo-chest", "--masks"), "does not use masks"),
    (("--model", "spade", "--data", "demo-brain", "--masks"), "demo-brain has none"),
    (("--model", "crfgan", "--data", "demo-brain", "--mask-noise"), "has neither"),
    (("--model", "pix2pix", "--data", "demo-chest", "--masks", "--l1-weight", "-1"), "--l1-weight must be >= 0"),
])
def test_train_refuses_models_and_masks_that_do_not_go_together(tmp_path, capsys, args, says):
    code, _, err = run(capsys, *TRAIN, *args, "--demo-count", "2", "--iterations", "1", "--out", tmp_path / "run")
    assert code == 2 and says in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_training_on_demo_chest_masks_reports_a_preview(tmp_path):
    from napari_crfgan.training import TrainOptions, train

    options = TrainOptions(data="demo-chest", masks="demo", demo_count=2, model="spade", preset="tiny-32",
                           iterations=2, batch_size=2, out=tmp_path / "run", device="cpu", split="none",
                           preview_every=2, threads=1, mask_noise=True, l1_weight=10.0)
    reports = list(train(options))
    assert reports[-1].preview.shape == (32, 32, 32) and np.isfinite(reports[-1].preview).all()
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.data["masks"]["classes"] == len(CHEST_LABELS) and ckpt.options["identity"]["masks"] == "demo"
    assert (ckpt.config.mask_noise, ckpt.config.l1_weight, ckpt.config.loss) == (True, 10.0, "lsgan")
