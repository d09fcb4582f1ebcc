import pytest
import torch

from napari_crfgan.model import PRESETS, build_system, get_config
from napari_crfgan.model.crf import PatchCRF
from napari_crfgan.model.generator import embedding_slab

# Learnable parameters of the published networks (counted from the reference code of both papers).
PAPER_COUNTS = {
    ("hagan", "paper-256"): 79_744_884,
    ("hagan", "paper-128"): 79_583_972,
    ("crfgan", "paper-256"): 57_244_594,
    ("crfgan", "paper-128"): 57_209_762,
}


@pytest.mark.parametrize("model,preset", list(PAPER_COUNTS))
def test_paper_totals(model, preset):
    counts = build_system(model, get_config(preset)).network_counts()
    assert sum(counts.values()) == PAPER_COUNTS[model, preset]


@pytest.mark.parametrize("preset,d_high,d_low,e_global", [
    ("paper-256", 4_630_833, 2_771_425, 19_663_264),
    ("paper-128", 4_599_073, 2_642_369, 19_663_168),
])
def test_paper_network_counts(preset, d_high, d_low, e_global):
    hagan = build_system("hagan", get_config(preset)).network_counts()
    crfgan = build_system("crfgan", get_config(preset)).network_counts()
    assert crfgan["trunk"] + crfgan["head"] == 52_448_513
    assert hagan["trunk"] + hagan["head"] + hagan["low_head"] == 52_518_210
    assert hagan["d_high"] == crfgan["d_high"] == d_high
    assert hagan["d_low"] == d_low
    assert hagan["global_encoder"] == e_global
    assert hagan["encoder"] == crfgan["encoder"] == 161_152
    assert crfgan["crf"] == get_config(preset).crf_nodes ** 2


@pytest.mark.parametrize("preset", ["tiny-32", "small-64"])
def test_shapes(preset):
    cfg = get_config(preset)
    system = build_system("hagan", cfg)
    e, c = cfg.embedding_size, cfg.embedding_channels
    z, _ = system.draw_latent(1)
    emb = system.trunk(z)
    assert emb.shape == (1, c, e, e, e)
    slab = system.head(embedding_slab(emb, 4, cfg))
    assert slab.shape == (1, 1, cfg.slab, cfg.size, cfg.size)
    assert system.low_head(emb).shape == (1, 1, e, e, e)
    assert system.generate(z).shape == (1, 1, cfg.size, cfg.size, cfg.size)
    assert system.d_high(slab, 4).shape == (1, 1)
    assert system.d_low(system.low_head(emb)).shape == (1, 1)
    assert system.encoder(slab).shape == (1, c, cfg.slab // 4, e, e)
    assert system.global_encoder(system.encoder(system.generate(z))).shape == (1, cfg.latent_dim)


def test_crop_is_aligned_and_in_range():
    system = build_system("crfgan", get_config("small-64"))
    crops = {system.draw_crop() for _ in range(400)}
    assert all(c % 4 == 0 for c in crops)
    assert min(crops) == 0 and max(crops) == system.cfg.max_crop


def test_crop_position_is_normalised_by_config():
    cfg = get_config("tiny-32")
    d = build_system("crfgan", cfg).d_high
    assert d.max_crop == cfg.size - cfg.slab


def test_crf_weight_symmetric_and_zero_initialised():
    crf = PatchCRF(get_config("tiny-32"))
    assert torch.count_nonzero(crf.weight) == 0
    with torch.no_grad():
        crf.weight.normal_()
    w = crf.symmetric_weight()
    assert torch.equal(w, w.t())
    emb = torch.randn(2, 8, 8, 8, 8)
    p = crf.pairwise(emb)
    assert torch.allclose(p, p.transpose(1, 2), atol=1e-6)


def test_crf_nodes_are_spatial_patches():
    cfg = get_config("tiny-32")  # grid 2x2x2 over an 8^3 embedding: 4^3 patches
    crf = PatchCRF(cfg)
    emb = torch.zeros(1, 8, 8, 8, 8)
    emb[:, :, 4:, :4, 4:] = 1.0  # one spatial patch, all channels: node (1, 0, 1) = index 5
    feats = crf.node_features(emb)
    assert feats.shape == (1, 8, 8 * 4**3)
    assert [int(feats[0, n].abs().sum() > 0) for n in range(8)] == [0, 0, 0, 0, 0, 1, 0, 0]


def test_crf_with_zero_weights_returns_unary():
    crf = PatchCRF(get_config("tiny-32"))
    unary = torch.tensor([[0.3], [-1.2]])
    out = crf(torch.randn(2, 8, 8, 8, 8), unary)
    assert torch.allclose(out.logit, unary) and out.node_logits.shape == (2, 8) and out.class_logits is None


def test_crf_gradient_reaches_trunk():
    cfg = get_config("tiny-32")
    system = build_system("crfgan", cfg)
    with torch.no_grad():
        system.crf.weight.normal_()
    z, _ = system.draw_latent(2)
    # unary 0 is a fixed point of mean-field (2 sigmoid(0) - 1 = 0), so use D-like logits
    logit = system.crf(system.trunk(z), torch.tensor([[0.7], [-0.4]])).logit
    logit.sum().backward()
    grad = system.trunk.fc.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert system.crf.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("step", ["reference", "fast"])
@pytest.mark.parametrize("model", ["crfgan", "hagan", "crfgan-nocrf"])
@pytest.mark.parametrize("classes", [0, 2])
def test_train_step_batch_one(model, classes, step):
    torch.manual_seed(0)
    cfg = get_config("tiny-32", num_classes=classes, step=step)
    system = build_system(model, cfg)
    opts = system.make_optimizers()
    before = {k: v.clone() for k, v in system.state_dict().items()}
    real = torch.rand(1, 1, 32, 32, 32) * 2 - 1
    labels = torch.tensor([1]) if classes else None
    losses = system.train_step(real, labels, 0, opts)
    expected = {"d", "g", "encoder"} | {"crfgan": {"crf", "crf_weight", "crf_w_mean", "crf_w_max", "crf_minus_d",
                                                   "crf_residual", "crf_grad_share"},
                                        "hagan": {"global_encoder"}, "crfgan-nocrf": set()}[model]
    assert set(losses) == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = system.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed >= set(system.network_names)  # every network learned something


def test_crf_weight_schedule():
    system = build_system("crfgan", get_config("paper-128"))
    assert system.crf_weight(0) == 0.5
    assert system.crf_weight(30000) == pytest.approx(0.25)
    assert system.crf_weight(60000) == 0.0 and system.crf_weight(80000) == 0.0


def test_presets_derive_sizes():
    for name, cfg in PRESETS.items():
        assert cfg.embedding_size == cfg.size // 4 and cfg.slab == cfg.size // 8, name
    with pytest.raises(ValueError, match="unknown preset"):
        get_config("paper-1024")
