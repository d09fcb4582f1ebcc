"""CRF-GAN: trunk G^A + head G^H, sub-volume D^H, half-encoder E^H, patch CRF.

One training iteration (step order D, G, E^H, CRF):
  D:   BCE(D^H(real slab), 1) + BCE(D^H(fake slab), 0) [+ CE(real class)]
  G:   BCE((1 - w) D^H(fake slab) + w CRF(G^A(z), D^H(fake slab)), 1) [+ 0.1 CE(fake class)]
       with w = max(0.5 - 0.5 it / crf_decay_iterations, 0); CRF weights frozen, so
       the CRF's gradient reaches G^A through the whole embedding.
  E^H: L1(G^H(E^H(real slab)), real slab), G frozen.
  CRF: BCE(CRF(fake embedding), 0) + BCE(CRF(E^H(real volume)), 1), only W learns.
"""
from __future__ import annotations

import torch

from .crf import PatchCRF
from .presets import ModelConfig
from .system import GANSystem, bce, frozen


class CRFGAN(GANSystem):
    optimizer_groups = {
        "d": (("d_high",), "lr_d"),
        "g": (("trunk", "head"), "lr_g"),
        "encoder": (("encoder",), "lr_e"),
        "crf": (("crf",), "lr_crf"),
    }

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.crf = PatchCRF(cfg)

    def crf_weight(self, iteration: int) -> float:
        return max(0.5 - 0.5 * iteration / self.cfg.crf_decay_iterations, 0.0)

    def train_step(self, real, labels, iteration, optimizers):
        cfg = self.cfg
        crop = self.draw_crop()
        real_slab = real[:, :, crop:crop + cfg.slab]
        z, fake_labels = self.draw_latent(real.shape[0])
        emb, fake_slab = self.generate_slab(z, crop)

        with self.autocast():
            d_real = self.d_high(real_slab, crop)
            d_fake = self.d_high(fake_slab.detach(), crop)
            loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0) + self.class_loss(d_real, labels)
        loss_d = self.step(optimizers["d"], loss_d)

        w = self.crf_weight(iteration)
        with frozen(self.d_high, self.crf), self.autocast():
            d_gen = self.d_high(fake_slab, crop)
            crf_logit, _ = self.crf(emb, d_gen[:, :1])
            blended = (1 - w) * d_gen[:, :1].float() + w * crf_logit
            loss_g = bce(blended, 1.0) + cfg.class_loss_weight * self.class_loss(d_gen, fake_labels)
        loss_g = self.step(optimizers["g"], loss_g)

        loss_e = self.encoder_loss(real_slab, optimizers)

        with torch.no_grad(), self.autocast():
            real_emb = self.encoder(real)
        fake_logit, _ = self.crf(emb.detach(), d_gen.detach()[:, :1])
        real_logit, _ = self.crf(real_emb, d_real.detach()[:, :1])
        loss_crf = self.step(optimizers["crf"], bce(fake_logit, 0.0) + bce(real_logit, 1.0))

        return {"d": loss_d, "g": loss_g, "encoder": loss_e, "crf": loss_crf, "crf_weight": w}
