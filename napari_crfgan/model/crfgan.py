"""CRF-GAN: trunk G^A + head G^H, sub-volume D^H, half-encoder E^H, patch CRF.

The reference step (`cfg.step == "reference"`, the default; the authors' train.py)
runs, per iteration, with one slab position shared by all steps:
  D:   BCE(D^H(real slab), 1) + BCE(D^H(G(z1) slab), 0) [+ CE(real class)]
  G:   a fresh z2; BCE((1 - w) D^H(slab) + w CRF(G^A(z2), D^H(slab)), 1) [+ 0.1 CE(class)]
       with w = max(0.5 - 0.5 it / crf_decay_iterations, 0); conditional models use the
       authors' conditional branch instead: w = 0.5 fixed and D^H's class logits also
       pass through the CRF and are blended the same way. The CRF weights are frozen,
       so the CRF's gradient reaches G^A through the whole embedding.
  CRF: a fresh z3, G^A + G^H again and D^H (after its update) on that fake and on the
       real slab; BCE(CRF(G^A(z3)), 0) + BCE(CRF(E^H(real volume)), 1) [+ CE(real class
       through the CRF)]; only the CRF learns.
  E^H: L1(G^H(E^H(real slab)), real slab), G frozen.
Fake classes are the real batch's. The fast step (napari-crfgan 0.1) reuses the D
step's fake and graph in the G step and the G step's embedding and D^H outputs in
the CRF step, runs E^H before the CRF, draws fake classes uniformly and keeps the
plain CRF for conditional models.

`NoCRFGAN` is the ablation: the same networks and steps without the CRF (w = 0).
"""
from __future__ import annotations

import torch

from .crf import PatchCRF
from .presets import ModelConfig
from . import losses
from .system import GANSystem, bce, floats, frozen


class CRFGAN(GANSystem):
    optimizer_groups = {
        "d": (("d_high",), "lr_d"),
        "g": (("trunk", "head"), "lr_g"),
        "encoder": (("encoder",), "lr_e"),
        "crf": (("crf",), "lr_crf"),
    }
    uses_crf = True

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        if self.uses_crf:
            self.crf = PatchCRF(cfg)

    def critic(self, inputs, crop, features=False):
        return self.net("d_high")(inputs[0], crop, features)

    def crf_weight(self, iteration: int) -> float:
        if not self.uses_crf:
            return 0.0
        if self.cfg.num_classes and self.cfg.step == "reference":
            return 0.5  # the conditional branch blends (d + crf) / 2 throughout
        return max(0.5 - 0.5 * iteration / self.cfg.crf_decay_iterations, 0.0)

    def train_step(self, real, labels, iteration, optimizers):
        cfg = self.cfg
        reference = cfg.step == "reference"
        crop = self.draw_crop()
        real_slab = real[:, :, crop:crop + cfg.slab]
        fake_labels = self.fake_labels(labels)

        z, fake_labels = self.draw_latent(real.shape[0], fake_labels)
        with torch.no_grad() if reference else torch.enable_grad():  # fast: the G step reuses this graph
            emb, fake_slab = self.generate_slab(z, crop)
        with self.autocast():
            loss_d, d_real = self.discriminator_loss((real_slab,), (fake_slab,), crop, labels, iteration)
        out = {"d": self.step(optimizers["d"], loss_d)}

        if reference:
            z, fake_labels = self.draw_latent(real.shape[0], fake_labels)
            emb, fake_slab = self.generate_slab(z, crop)
        w = self.crf_weight(iteration)
        loss_g, d_gen, diagnostics = self._generator_loss(emb, fake_slab, real_slab, crop, fake_labels, w)
        out["g"] = self.generator_step(optimizers["g"], loss_g, iteration)
        out.update(diagnostics() if diagnostics else {})

        if reference:
            if self.uses_crf:
                out["crf"] = self._crf_step_reference(real, real_slab, crop, labels, fake_labels, optimizers)
            out["encoder"] = self.encoder_loss(real_slab, optimizers)
        else:
            out["encoder"] = self.encoder_loss(real_slab, optimizers)
            if self.uses_crf:
                with torch.no_grad(), self.autocast():
                    real_emb = self.encoder(real)
                crf = self.net("crf")
                fake_logit = crf(emb.detach(), d_gen.detach()[:, :1]).logit
                real_logit = crf(real_emb, d_real.detach()[:, :1]).logit
                out["crf"] = self.step(optimizers["crf"], bce(fake_logit, 0.0) + bce(real_logit, 1.0))
        if self.uses_crf:
            out["crf_weight"] = w
        return floats(out)

    def _generator_loss(self, emb, fake_slab, real_slab, crop, fake_labels, w):
        """G's loss on D^H and the CRF, D^H's output, and a callable giving the CRF diagnostics
        (read after the backward pass, which fills the gradients they need)."""
        cfg = self.cfg
        conditional_crf = bool(cfg.num_classes) and cfg.step == "reference"
        frozen_nets = (self.d_high, self.crf) if self.uses_crf else (self.d_high,)
        with frozen(*frozen_nets), self.autocast():
            d_gen, matching = self.generator_critic((fake_slab,), (real_slab,), crop)
            if not self.uses_crf:
                loss = losses.g_loss(cfg, d_gen) + cfg.class_loss_weight * self.class_loss(d_gen, fake_labels)
                return (loss if matching is None else loss + matching), d_gen, None
            # the CRF reads the embedding through its own autograd node, so the gradient entering
            # G^A through the CRF's node features (the consistency signal D^H alone does not give;
            # the CRF's unary is D^H's logit, whose gradient takes the slab's path) can be told apart
            crf_in = emb.view_as(emb)
            grads: dict[str, torch.Tensor] = {}
            if emb.requires_grad:
                emb.register_hook(lambda g: grads.__setitem__("total", g.detach()))
                crf_in.register_hook(lambda g: grads.__setitem__("crf", g.detach()))
            crf = self.crf(crf_in, d_gen[:, :1], d_gen[:, 1:] if conditional_crf else None)
            blended = (1 - w) * d_gen[:, :1].float() + w * crf.logit
            class_logits = d_gen
            if crf.class_logits is not None:
                class_logits = torch.cat([blended, (1 - w) * d_gen[:, 1:].float() + w * crf.class_logits], dim=1)
            loss = losses.g_loss(cfg, blended) + cfg.class_loss_weight * self.class_loss(class_logits, fake_labels)
            if matching is not None:
                loss = loss + matching

        def diagnostics() -> dict:
            with torch.no_grad():
                weights = self.crf.symmetric_weight().abs()
                out = {"crf_w_mean": weights.mean(), "crf_w_max": weights.max(),
                       "crf_minus_d": (crf.logit - d_gen[:, :1].float()).mean(), "crf_residual": crf.residual}
                if "total" in grads:
                    share = grads["crf"].norm() / grads["total"].norm().clamp_min(1e-30)
                    out["crf_grad_share"] = share
            return out

        return loss, d_gen, diagnostics

    def _crf_step_reference(self, real, real_slab, crop, labels, fake_labels, optimizers) -> torch.Tensor:
        """Only W learns: a fresh fake (G^A + G^H), D^H after its update on it and on the real slab (neither
        augmented: the CRF learns D^H's verdict on volumes as they are, which is what its map shows)."""
        conditional = self.crf.class_weight is not None
        with torch.no_grad(), self.autocast():
            z, _ = self.draw_latent(real.shape[0], fake_labels)
            emb, fake_slab = self.generate_slab(z, crop)
            d_fake = self.d_high(fake_slab, crop)
            d_real = self.d_high(real_slab, crop)
            real_emb = self.encoder(real)
        crf = self.net("crf")
        fake = crf(emb, d_fake[:, :1], d_fake[:, 1:] if conditional else None)
        real_out = crf(real_emb, d_real[:, :1], d_real[:, 1:] if conditional else None)
        loss = bce(fake.logit, 0.0) + bce(real_out.logit, 1.0)
        if conditional and labels is not None:
            loss = loss + torch.nn.functional.cross_entropy(real_out.class_logits, labels)
        return self.step(optimizers["crf"], loss)


class NoCRFGAN(CRFGAN):
    """CRF-GAN without its CRF: G^A + G^H, D^H and E^H trained exactly as CRF-GAN, w = 0."""

    optimizer_groups = {k: v for k, v in CRFGAN.optimizer_groups.items() if k != "crf"}
    uses_crf = False
