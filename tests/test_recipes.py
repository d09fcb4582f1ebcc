"""The loss family and training tricks: each runs a real step on tiny-32, keeps gradients finite,
is saved in the checkpoint and restored from it; EMA feeds the sampler; DiffAugment hits real and
fake alike; the upsampling options keep chunked decoding exact."""
import dataclasses

import pytest
import torch

from napari_crfgan.model import build_system, get_config
from napari_crfgan.model import losses
from napari_crfgan.model.augment import ADA_INTERVAL, Augment, cutout, translate
from napari_crfgan.model.decoding import decode_embedding
from napari_crfgan.model.layers import blur_reference, minibatch_std, upsample2
from napari_crfgan.model.presets import ModelConfig
from napari_crfgan.model.recipes import RECIPE_FIELDS, RECIPES, recipe_of
from napari_crfgan.runtime import Checkpoint, load_checkpoint, save_checkpoint
from napari_crfgan.sampling import Sampler
from napari_crfgan.training import TrainOptions, run_training

SYSTEMS = ("crfgan", "hagan", "crfgan-nocrf")
#: one entry per loss and trick of the issue, as config overrides
TRICKS = {name: fields for name, fields in RECIPES.items() if name != "paper"}


def _steps(model, cfg, steps=2, batch=2):
    torch.manual_seed(0)
    system = build_system(model, cfg)
    opt = system.make_optimizers()
    real = torch.rand(batch, 1, cfg.size, cfg.size, cfg.size) * 2 - 1
    labels = torch.tensor([0, 1])[:batch] if cfg.num_classes else None
    out = [system.train_step(real, labels, it, opt) for it in range(steps)]
    return system, out


def test_every_recipe_field_is_a_config_field_and_every_recipe_is_valid():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(RECIPE_FIELDS) <= fields
    for name, fields_ in RECIPES.items():
        assert set(fields_) <= set(RECIPE_FIELDS), name
        get_config("tiny-32", **fields_)  # validates
    assert recipe_of(get_config("small-64")) == {}  # the presets train the papers' recipe


@pytest.mark.parametrize("name", sorted(TRICKS))
@pytest.mark.parametrize("model", SYSTEMS)
def test_each_recipe_trains_with_finite_losses_and_gradients(model, name):
    cfg = get_config("tiny-32", **TRICKS[name])
    system, out = _steps(model, cfg)
    for losses_ in out:
        assert all(torch.isfinite(torch.tensor(v)) for k, v in losses_.items()), (name, losses_)
    for pname, p in system.named_parameters():
        assert torch.isfinite(p).all(), pname
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), pname


def test_a_conditional_model_trains_with_a_combined_recipe():
    cfg = get_config("tiny-32", num_classes=2, **RECIPES["style-r1-ada-ema"])
    _, out = _steps("crfgan", cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in out[-1].values())


@pytest.mark.parametrize("name", ["hinge", "style-r1-ada-ema", "wgan-gp"])
def test_the_recipe_is_saved_in_the_checkpoint_and_restored(tmp_path, name):
    options = TrainOptions(data="demo-brain", out=str(tmp_path / "run"), model="crfgan", preset="tiny-32",
                           iterations=4, batch_size=2, demo_count=4, recipe=name, label_smoothing=None,
                           checkpoint_every=2, device="cpu")
    run_training(options)
    ckpt = load_checkpoint(options.checkpoint_path)
    assert recipe_of(ckpt.config) == {k: v for k, v in RECIPES[name].items()
                                      if v != getattr(ModelConfig(), k)}
    assert ckpt.options["recipe"] == name
    system = ckpt.build()  # the weights fit the recorded recipe's networks
    if "ada_target" in RECIPES[name]:
        assert float(system.augment.p) == pytest.approx(float(ckpt.state["augment.p"]))
    # resume continues with the same recipe; another recipe is refused
    run_training(dataclasses.replace(options, iterations=6, resume="yes"))
    assert load_checkpoint(options.checkpoint_path).iteration == 6
    with pytest.raises(Exception, match="config|recipe|differ|fit"):
        run_training(dataclasses.replace(options, iterations=8, resume="yes", loss="lsgan"))


def test_a_flag_overrides_the_named_recipe():
    o = TrainOptions(data="demo-brain", recipe="hinge-diffaugment-ema", ema_decay=0.5, minibatch_std=True)
    f = o.recipe_fields()
    assert f["loss"] == "hinge" and f["ema_decay"] == 0.5 and f["minibatch_std"] is True
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainOptions(data="demo-brain", recipe="nope").validate()
    with pytest.raises(ValueError, match="label smoothing"):
        TrainOptions(data="demo-brain", loss="hinge", label_smoothing=0.1).validate()


# ---- losses ---------------------------------------------------------------------------------------
def _cfg(**kw):
    return get_config("tiny-32", **kw)


def test_losses_have_their_textbook_values():
    r, f = torch.tensor([[2.0], [0.5]]), torch.tensor([[-2.0], [0.0]])
    assert float(losses.d_loss(_cfg(loss="hinge"), r, f)) == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert float(losses.g_loss(_cfg(loss="hinge"), f)) == pytest.approx(1.0)
    assert float(losses.d_loss(_cfg(loss="wgan-gp"), r, f)) == pytest.approx(-1.0 - 1.25)
    assert float(losses.d_loss(_cfg(loss="lsgan"), r, f)) == pytest.approx(((1 + 0.25) / 2 + (4 + 0) / 2) / 2)
    assert float(losses.g_loss(_cfg(loss="lsgan"), f)) == pytest.approx((9 + 1) / 2 / 2)
    sp = torch.nn.functional.softplus
    assert float(losses.d_loss(_cfg(), r, f)) == pytest.approx(float(sp(-r).mean() + sp(f).mean()), rel=1e-6)
    # one-sided smoothing moves only the real target
    smooth = losses.d_loss(_cfg(label_smoothing=0.1), r, f) - losses.d_loss(_cfg(), r, f)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(r, torch.full_like(r, 0.9)) - sp(-r).mean()
    assert float(smooth) == pytest.approx(float(expected), rel=1e-5)


def test_gradient_penalty_and_r1_of_a_linear_critic():
    w = torch.randn(1, 1, 4, 4, 4)
    w = w / w.norm()  # |grad| = 1 everywhere: no gradient penalty; R1 = |w|^2 = 1

    def critic(xs):
        return (xs[0] * w).flatten(1).sum(1, keepdim=True)

    real, fake = [torch.randn(3, 1, 4, 4, 4)], [torch.randn(3, 1, 4, 4, 4)]
    assert float(losses.gradient_penalty(critic, real, fake)) == pytest.approx(0.0, abs=1e-8)
    assert float(losses.r1_penalty(critic, real)) == pytest.approx(1.0, rel=1e-6)

    def steep(xs):
        return 3 * critic(xs)

    assert float(losses.gradient_penalty(steep, real, fake)) == pytest.approx(4.0, rel=1e-5)


def test_lazy_r1_is_added_only_every_r1_every_iterations():
    cfg = get_config("tiny-32", r1_gamma=10.0, r1_every=2)

    def d_loss(config, iteration):
        torch.manual_seed(0)  # the same D weights for both configs
        system = build_system("crfgan", config).eval()  # eval: spectral norm's power iteration stays put
        real, fake = torch.rand(2, 1, 4, 32, 32) * 2 - 1, torch.rand(2, 1, 4, 32, 32) * 2 - 1
        return float(system.discriminator_loss((real,), (fake,), 0, None, iteration)[0].detach())

    plain = d_loss(dataclasses.replace(cfg, r1_gamma=0.0), 0)
    assert d_loss(cfg, 0) > plain + 1e-6  # iteration 0: penalised
    assert d_loss(cfg, 1) == pytest.approx(plain, rel=1e-6)  # iteration 1: skipped


# ---- augmentation ---------------------------------------------------------------------------------
def test_diffaugment_reaches_every_discriminator_input_real_and_fake(monkeypatch):
    """cutout at p = 1 sets a cube of every D input to exactly -1: real volumes (uniform in (-1, 1)) and
    generated ones (tanh) never hold -1 themselves, so each D^H call shows whether it was augmented."""
    cfg = get_config("tiny-32", augment="cutout")
    system = build_system("crfgan", cfg)
    seen = []
    forward = system.d_high.forward

    def spy(slab, crop, features=False):
        seen.append(float((slab == -1.0).float().mean()))
        return forward(slab, crop, features)

    monkeypatch.setattr(system.d_high, "forward", spy)
    opt = system.make_optimizers()
    real = torch.rand(2, 1, 32, 32, 32) * 1.9 - 0.95
    system.train_step(real, None, 0, opt)
    # D step (real, fake) and G step (fake): augmented; the CRF step (fake, real) reads D^H's verdict on the
    # volumes themselves, as the consistency map does at inference: neither augmented
    assert len(seen) == 5
    assert all(s == pytest.approx(1 / 8, abs=0.02) for s in seen[:3]), seen
    assert seen[3:] == [0.0, 0.0]


def test_augmentations_are_differentiable_and_keep_the_shape():
    x = torch.rand(3, 1, 8, 16, 16, requires_grad=True)
    for name in ("translation", "cutout", "intensity"):
        aug = Augment(get_config("tiny-32", augment=name))
        y = aug([x])[0]
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        x.grad = None
    # p = 0 leaves the volume alone
    assert torch.equal(translate(x, 0.0), x) and torch.equal(cutout(x, 0.0), x)


def test_adaptive_probability_rises_when_d_is_sure_of_the_reals_and_falls_otherwise():
    aug = Augment(get_config("tiny-32", augment="translation", ada_target=0.6, ada_images=80))
    assert float(aug.p) == 0.0
    sure = torch.full((4, 1), 3.0)
    for it in range(2 * ADA_INTERVAL):
        aug.observe(sure, it)
    assert float(aug.p) == pytest.approx(2 * 4 * ADA_INTERVAL / 80)
    unsure = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])  # E[sign] = 0 < 0.6
    for it in range(ADA_INTERVAL):
        aug.observe(unsure, it)
    assert float(aug.p) == pytest.approx(4 * ADA_INTERVAL / 80)


# ---- D and G options ------------------------------------------------------------------------------
def test_minibatch_std_is_zero_for_a_collapsed_batch_and_positive_otherwise():
    same = torch.ones(4, 2, 3, 3, 3)
    assert minibatch_std(same)[:, -1].abs().max() < 1e-3
    assert minibatch_std(torch.randn(4, 2, 3, 3, 3))[:, -1].min() > 0.1
    assert minibatch_std(torch.randn(1, 2, 3, 3, 3)).shape == (1, 3, 3, 3, 3)


def test_spectral_norm_can_be_left_out_of_the_discriminators():
    with_sn = build_system("hagan", get_config("tiny-32"))
    without = build_system("hagan", get_config("tiny-32", d_spectral_norm=False))
    assert any("parametrizations" in k for k in with_sn.d_high.state_dict())
    assert not any("parametrizations" in k for k in without.state_dict())


@pytest.mark.parametrize("mode", ["trilinear", "blur"])
def test_smooth_upsampling_leaves_no_block_grid_and_chunked_decoding_stays_exact(mode):
    x = torch.randn(1, 1, 4, 4, 4)
    near, smooth = upsample2(x, "nearest"), upsample2(x, mode)
    assert torch.equal(near[:, :, 0::2], near[:, :, 1::2])  # nearest: pairs of equal planes
    assert not torch.allclose(smooth[:, :, 0::2], smooth[:, :, 1::2])
    assert smooth.mean().item() == pytest.approx(x.mean().item(), abs=0.05)
    system = build_system("crfgan", get_config("tiny-32", upsample=mode)).eval()
    torch.manual_seed(1)
    emb = system.trunk(torch.randn(2, system.cfg.latent_dim))
    whole = decode_embedding(system.head, emb)
    for chunk in (4, 8, 12):
        assert torch.allclose(decode_embedding(system.head, emb, chunk), whole, atol=1e-5)


@pytest.mark.parametrize("norm", ["group", "pixel"])
def test_pixel_norm_decodes_a_training_slab_as_the_whole_volume_does(norm):
    system = build_system("crfgan", get_config("tiny-32", head_norm=norm, upsample="blur")).eval()
    torch.manual_seed(2)
    with torch.no_grad():
        emb = system.trunk(torch.randn(2, system.cfg.latent_dim))
        whole = decode_embedding(system.head, emb)
        part = system.head(emb[:, :, :6])  # what D^H sees in training: G^H on part of the embedding
        for chunk in (4, 8, 12):
            assert torch.allclose(decode_embedding(system.head, emb, chunk), whole, atol=1e-5)
    inside = 4 * (6 - system.head.halo)  # slices whose receptive field lies inside the part
    same = torch.allclose(part[:, :, :inside], whole[:, :, :inside], atol=1e-5)
    assert same == (norm == "pixel")  # GroupNorm's statistics of a part are not the whole volume's


def test_blur_is_nearest_then_the_fixed_filter_which_is_trilinear():
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(upsample2(x, "blur"), blur_reference(x), rtol=0, atol=1e-12)


def test_style_trunk_makes_the_plain_trunks_embedding_and_is_deterministic_in_eval():
    cfg = get_config("tiny-32", trunk="style", num_classes=2)
    system = build_system("hagan", cfg)
    z, _ = system.draw_latent(2)
    plain = build_system("hagan", get_config("tiny-32", num_classes=2))
    assert system.trunk(z).shape == plain.trunk(z).shape
    system.eval()
    assert torch.equal(system.trunk(z), system.trunk(z))  # fixed noise
    system.train()
    with torch.no_grad():
        for block in system.trunk.blocks:
            block.noise_strength.fill_(1.0)
    assert not torch.equal(system.trunk(z), system.trunk(z))  # fresh noise per call


# ---- EMA ------------------------------------------------------------------------------------------
def test_the_sampler_decodes_with_the_moving_average(tmp_path):
    cfg = get_config("tiny-32", ema_decay=0.5)
    system, _ = _steps("crfgan", cfg, steps=3)
    ema = system.ema
    assert not any(p.requires_grad for p in ema.parameters())
    assert "ema" not in system.network_names
    live = dict(system.trunk.named_parameters())
    assert any(not torch.equal(p, live[n]) for n, p in ema["trunk"].named_parameters())  # averaged, not copied
    path = save_checkpoint(tmp_path / "checkpoint.pt", Checkpoint(
        model="crfgan", preset="tiny-32", config=cfg, iteration=3, state=system.state_dict()))
    sampler = Sampler(path, device="cpu")
    z = sampler.latent(5, None)
    s = sampler.system
    expected = decode_embedding(s.ema["head"], s.ema["trunk"](z))
    assert torch.equal(sampler.decode(z), expected)
    assert not torch.allclose(sampler.decode(z), decode_embedding(s.head, s.trunk(z)))


def test_the_moving_average_warms_up_before_its_decay():
    cfg = get_config("tiny-32", ema_decay=0.999)
    system = build_system("crfgan", cfg)
    opt = system.make_optimizers()["g"]
    start = {n: p.clone() for n, p in system.ema["trunk"].named_parameters()}
    with torch.no_grad():
        for p in system.trunk.parameters():
            p.add_(1.0)
    zero = sum((p * 0).sum() for p in system.trunk.parameters())  # no update: the live weights stay put
    system.generator_step(opt, zero, iteration=0)
    for n, p in system.ema["trunk"].named_parameters():  # decay (1 + 0) / (10 + 0) = 0.1, not 0.999
        torch.testing.assert_close(p, start[n] + 0.9)


def test_a_recipes_learning_rate_and_a_flag_on_top():
    from napari_crfgan.training import TrainOptions

    slow = TrainOptions(data="demo-brain", recipe="pixelnorm-blur-ema-slow-d")
    assert slow.config_fields()["lr_d"] == 1e-4 and recipe_of(get_config("small-64", **slow.config_fields())) == {
        "head_norm": "pixel", "upsample": "blur", "ema_decay": 0.999, "lr_d": 1e-4}
    given = TrainOptions(data="demo-brain", recipe="pixelnorm-blur-ema-slow-d", lr_d=2e-4)
    assert given.config_fields()["lr_d"] == 2e-4  # the flag wins over the recipe
