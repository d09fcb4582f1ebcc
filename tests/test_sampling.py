import copy

import numpy as np
import pytest
import torch

from napari_crfgan.data import read_nifti
from napari_crfgan.model import build_system, get_config
from napari_crfgan.model.decoding import decode_embedding
from napari_crfgan.sampling import Sampler


def _head_and_embedding(preset: str):
    torch.manual_seed(1)
    system = build_system("crfgan", get_config(preset)).eval()
    with torch.no_grad():
        for p in system.head.parameters():  # move GroupNorm off its identity init
            p.add_(torch.randn_like(p) * 0.1)
        emb = system.trunk(torch.randn(2, system.cfg.latent_dim)) * 3 + 0.5
    return system.head, emb


@pytest.mark.parametrize("preset", ["tiny-32", "small-64"])
@pytest.mark.parametrize("chunk", [None, 4, 8, 12, 20, 3])  # image slices; 3 rounds up to one embedding slice
def test_decoding_equals_the_network_and_its_float64_reference(preset, chunk):
    head, emb = _head_and_embedding(preset)
    with torch.no_grad():
        network = head(emb)
        exact = copy.deepcopy(head).double()(emb.double())
    out = decode_embedding(head, emb, chunk)
    assert out.shape == network.shape and out.dtype == torch.float32
    assert (out - network).abs().max().item() <= 1e-5
    assert (out.double() - exact).abs().max().item() <= 1e-5


@pytest.mark.parametrize("chunk", [None, 12])
def test_decoding_does_not_depend_on_memory_format(chunk):
    head, emb = _head_and_embedding("small-64")
    plain = decode_embedding(head, emb, chunk)
    channels_last = decode_embedding(head, emb.contiguous(memory_format=torch.channels_last_3d), chunk)
    assert (plain - channels_last).abs().max().item() <= 1e-5


def test_sample_writes_nifti_with_spacing(checkpoints, tmp_path):
    sampler = Sampler(checkpoints["crfgan"], device="cpu")
    volumes = sampler.sample(2, seed=5)
    assert [v.seed for v in volumes] == [5, 6]
    v = volumes[0]
    assert v.data.shape == (32, 32, 32) and v.data.dtype == np.float32 and np.isfinite(v.data).all()
    assert sampler.spacing[0] > 1  # 40 mm of data in 32 voxels
    back = read_nifti(v.save(tmp_path / "s.nii.gz"))
    np.testing.assert_allclose(back.data, v.data, atol=1e-6)
    np.testing.assert_allclose(back.spacing, sampler.spacing, rtol=1e-5)
    # seeded: the same seed gives the same volume, alone or in a batch, chunked or not
    again = sampler.sample(1, seed=6, chunk=8)[0]
    np.testing.assert_allclose(again.data, volumes[1].data, atol=1e-4)


def test_conditional_needs_a_valid_label(checkpoints):
    sampler = Sampler(checkpoints["cond"], device="cpu")
    with pytest.raises(ValueError, match="give a label: 0 \\(no\\), 1 \\(yes\\)"):
        sampler.sample(1)
    a = sampler.sample(1, seed=0, label="yes")[0]
    b = sampler.sample(1, seed=0, label=1)[0]
    assert a.label == 1 and np.array_equal(a.data, b.data)
    with pytest.raises(ValueError, match="unknown label"):
        sampler.sample(1, label="maybe")
    with pytest.raises(ValueError, match="not class-conditional"):
        Sampler(checkpoints["crfgan"], device="cpu").sample(1, label=1)


def test_interpolation_walks_between_seeds(checkpoints):
    sampler = Sampler(checkpoints["crfgan"], device="cpu")
    walk = sampler.interpolate(1, 2, steps=4)
    assert walk.shape == (4, 32, 32, 32)
    np.testing.assert_allclose(walk[0], sampler.sample(1, seed=1)[0].data, atol=1e-5)
    np.testing.assert_allclose(walk[-1], sampler.sample(1, seed=2)[0].data, atol=1e-5)


def test_consistency_map_from_trained_crf(checkpoints):
    sampler = Sampler(checkpoints["crfgan"], device="cpu")
    vol = sampler.sample(1, seed=0)[0]
    cmap = sampler.consistency(vol.data)
    assert cmap.verdicts.shape == cmap.agreement.shape == sampler.cfg.crf_grid
    assert ((cmap.verdicts > 0) & (cmap.verdicts < 1)).all()
    # patches tile exactly the volume's extent
    extent = np.array(sampler.spacing) * 32
    np.testing.assert_allclose(np.array(cmap.scale) * np.array(sampler.cfg.crf_grid), extent)
    assert sampler.consistency(vol.model_units, model_units=True).verdicts == pytest.approx(cmap.verdicts, abs=1e-4)
    with pytest.raises(ValueError, match="has no CRF"):
        Sampler(checkpoints["hagan"], device="cpu").consistency(vol.data)
