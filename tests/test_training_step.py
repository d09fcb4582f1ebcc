"""The training step against the reference code: trunk layout, fresh latents, the CRF step,
slab-wise E^H for E^G, the conditional CRF, damping and the CRF diagnostics."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_crfgan.model import build_system, get_config, parameter_counts
from napari_crfgan.model.crf import PatchCRF
from napari_crfgan.model.flops import count_macs, network_macs


def reference_trunk(cfg):
    """G^A as the reference code writes it: conv1 at 4^3, then an upsampling before each
    following conv until the embedding size is reached, the remaining convs at that size."""
    ch = cfg.trunk_channels
    layers, cin, side = [], ch[0], 4
    for i, cout in enumerate(ch):
        if i > 0 and side < cfg.embedding_size:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            side *= 2
        layers += [nn.Conv3d(cin, cout, 3, 1, 1), nn.GroupNorm(cfg.groups, cout), nn.ReLU()]
        cin = cout
    fc = nn.Linear(cfg.latent_dim, ch[0] * 64)
    body = nn.Sequential(*layers)
    return lambda z: body(fc(z).view(z.shape[0], ch[0], 4, 4, 4)), sum(
        p.numel() for m in (fc, body) for p in m.parameters())


@pytest.mark.parametrize("preset", ["paper-64", "paper-128", "paper-256"])
def test_trunk_macs_and_parameters_equal_the_reference_layout(preset):
    cfg = get_config(preset)
    with torch.device("meta"):
        forward, params = reference_trunk(cfg)
        ref = count_macs(lambda: forward(torch.zeros(1, cfg.latent_dim)))
    assert network_macs("crfgan", cfg)["trunk"] == ref
    assert parameter_counts("crfgan", cfg)["trunk"] == params
    late = network_macs("crfgan", dataclasses.replace(cfg, trunk_upsampling="late"))["trunk"]
    assert (late < ref) if preset != "paper-256" else (late == ref)  # the layouts differ below 256^3


class Recorder:
    """The trunk's inputs and D^H's weights at every call during one train_step."""

    def __init__(self, system):
        self.latents, self.d_weights = [], []
        system.trunk.register_forward_pre_hook(lambda m, a: self.latents.append(a[0].detach().clone()))
        first = system.d_high.convs[0]
        system.d_high.register_forward_pre_hook(
            lambda m, a: self.d_weights.append(first.parametrizations.weight.original.detach().clone()))


@pytest.mark.parametrize("model", ["crfgan", "hagan", "crfgan-nocrf"])
def test_the_g_step_draws_a_new_latent(model):
    torch.manual_seed(0)
    system = build_system(model, get_config("tiny-32"))
    rec = Recorder(system)
    system.train_step(torch.rand(2, 1, 32, 32, 32) * 2 - 1, None, 0, system.make_optimizers())
    d_step, g_step = rec.latents[:2]
    assert not torch.equal(d_step, g_step)
    if model == "crfgan":  # the CRF step draws a third
        assert len(rec.latents) == 3 and not torch.equal(rec.latents[2], g_step)


def test_the_crf_step_sees_the_updated_discriminator():
    torch.manual_seed(0)
    system = build_system("crfgan", get_config("tiny-32"))
    rec = Recorder(system)
    system.train_step(torch.rand(2, 1, 32, 32, 32) * 2 - 1, None, 0, system.make_optimizers())
    # D step: real and fake (before the update); G step: one call; CRF step: fake and real
    assert len(rec.d_weights) == 5
    before, after = rec.d_weights[0], rec.d_weights[2]
    assert not torch.equal(before, after)
    assert all(torch.equal(w, after) for w in rec.d_weights[2:])


def test_the_fast_step_reuses_the_d_step_fake():
    torch.manual_seed(0)
    system = build_system("crfgan", get_config("tiny-32", step="fast"))
    rec = Recorder(system)
    system.train_step(torch.rand(2, 1, 32, 32, 32) * 2 - 1, None, 0, system.make_optimizers())
    assert len(rec.latents) == 1


def test_e_global_reads_slabwise_half_encoder_features():
    torch.manual_seed(0)
    cfg = get_config("tiny-32")
    system = build_system("hagan", cfg)
    real = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    slabwise = system.real_embedding(real)
    with torch.no_grad():
        expected = torch.cat([system.encoder(real[:, :, s:s + cfg.slab]) for s in range(0, 32, cfg.slab)], dim=2)
        whole = system.encoder(real)
    assert torch.equal(slabwise, expected) and slabwise.shape == whole.shape
    assert not torch.allclose(slabwise, whole, atol=1e-4)  # GroupNorm statistics differ per slab
    fast = build_system("hagan", get_config("tiny-32", step="fast"))
    fast.load_state_dict(system.state_dict())
    assert torch.equal(fast.real_embedding(real), whole)


def test_the_no_crf_ablation_is_crf_gan_without_w():
    for preset in ("paper-128", "tiny-32"):
        cfg = get_config(preset)
        with_crf, without = parameter_counts("crfgan", cfg), parameter_counts("crfgan-nocrf", cfg)
        assert with_crf.pop("crf") == cfg.crf_nodes ** 2 and with_crf == without
    system = build_system("crfgan-nocrf", get_config("tiny-32"))
    assert not hasattr(system, "crf") and system.crf_weight(0) == 0.0


def test_conditional_crf_gan_follows_the_authors_branch():
    torch.manual_seed(0)
    cfg = get_config("tiny-32", num_classes=2)
    system = build_system("crfgan", cfg)
    assert system.crf_weight(0) == system.crf_weight(10**6) == 0.5  # (d + crf) / 2 throughout
    assert system.crf.class_weight.shape == (2, cfg.crf_nodes, cfg.crf_nodes)
    out = system.crf(torch.randn(2, 8, 8, 8, 8), torch.tensor([[0.5], [-1.0]]), torch.tensor([[2.0, -1.0],
                                                                                               [0.0, 1.0]]))
    assert out.class_logits.shape == (2, 2)
    assert torch.allclose(out.class_logits, torch.tensor([[2.0, -1.0], [0.0, 1.0]]))  # W_class = 0: the unary
    before = system.crf.class_weight.detach().clone()
    system.train_step(torch.rand(2, 1, 32, 32, 32) * 2 - 1, torch.tensor([0, 1]), 0, system.make_optimizers())
    assert not torch.equal(before, system.crf.class_weight)  # the CRF step learns the class weights
    fast = build_system("crfgan", get_config("tiny-32", num_classes=2, step="fast"))
    assert fast.crf.class_weight is None and fast.crf_weight(0) == 0.5 and fast.crf_weight(1000) == 0.0


def test_damping_stops_the_period_two_oscillation():
    cfg = get_config("tiny-32")
    emb = torch.ones(1, 8, 8, 8, 8)  # every pair of nodes fully similar: cos = 1
    unary = torch.tensor([[0.5]])
    plain = PatchCRF(cfg)
    damped = PatchCRF(dataclasses.replace(cfg, crf_damping=0.5))
    for crf in (plain, damped):
        with torch.no_grad():
            crf.weight.fill_(-0.5)  # repulsion: the update's slope at the fixed point is -2, beyond -1
    out_plain, out_damped = plain(emb, unary), damped(emb, unary)
    assert out_plain.residual > 1  # still jumping between two states after 10 updates
    assert out_damped.residual < 0.01 * out_plain.residual
    # the damped fixed point solves logit = u + sum_j P_ij (2 sigmoid(logit_j) - 1)
    x = out_damped.node_logits
    p = plain.pairwise(emb)
    fixed = unary + torch.bmm(p, (2 * torch.sigmoid(x) - 1).unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(x, fixed, atol=0.01)


def test_crf_diagnostics():
    torch.manual_seed(0)
    system = build_system("crfgan", get_config("tiny-32"))
    opt = system.make_optimizers()
    real = torch.rand(2, 1, 32, 32, 32) * 2 - 1
    first = system.train_step(real, None, 0, opt)
    assert first["crf_w_mean"] == first["crf_w_max"] == 0.0  # W starts at zero
    later = system.train_step(real, None, 1, opt)
    assert 0 < later["crf_w_mean"] <= later["crf_w_max"]
    assert 0 < later["crf_grad_share"] < 1  # w = 0.5: the CRF carries part of G^A's gradient
    done = system.train_step(real, None, system.cfg.crf_decay_iterations, opt)
    assert done["crf_weight"] == 0.0 and done["crf_grad_share"] == 0.0
    assert all(torch.isfinite(torch.tensor(v)) for v in later.values())


def test_crf_grad_share_is_the_pairwise_path_of_the_embedding_gradient():
    """The share the hooks measure equals one computed with two separate inputs: the gradient that
    enters G^A's embedding through the CRF's node features, over the embedding's whole gradient."""
    torch.manual_seed(0)
    system = build_system("crfgan", get_config("tiny-32")).eval()  # eval: D^H's power iteration stays put
    with torch.no_grad():
        system.crf.weight.normal_()
    z, _ = system.draw_latent(2)
    emb, slab = system.generate_slab(z, 8)
    loss, _, diagnostics = system._generator_loss(emb, slab, slab.detach(), 8, None, 0.5)
    loss.backward(retain_graph=True)
    share = float(diagnostics()["crf_grad_share"])

    features = emb.detach().requires_grad_()  # the CRF's node features as their own input
    d = system.d_high(slab, 8)[:, :1]
    blended = 0.5 * d + 0.5 * system.crf(features, d).logit
    target = torch.ones_like(blended)
    g_slab, g_features = torch.autograd.grad(F.binary_cross_entropy_with_logits(blended, target), [emb, features])
    assert share == pytest.approx(float(g_features.norm() / (g_slab + g_features).norm()), rel=1e-4)
