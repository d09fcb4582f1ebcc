"""HA-GAN (Sun et al. 2022), the baseline: G^A + G^L + G^H, D^H + D^L, E^H, E^G.

One training iteration (step order D, G, E^H, E^G). The discriminator's logit is
the mean of D^H on the slab and D^L on the low-resolution image:
  D:   BCE(D(real), 1) + BCE(D(fake), 0) [+ CE(real class)]
  G:   BCE(D(fake), 1) [+ 0.1 CE(fake class)]
  E^H: L1(G^H(E^H(real slab)), real slab), G frozen.
  E^G: z_hat = E^G(E^H(real volume)); (L1(slab of G(z_hat)) + L1(low of G(z_hat))) / 2, G frozen.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .discriminator import LowResDiscriminator
from .encoder import GlobalEncoder
from .generator import LowResHead
from .presets import ModelConfig
from .system import GANSystem, bce, frozen


class HAGAN(GANSystem):
    optimizer_groups = {
        "d": (("d_high", "d_low"), "lr_d"),
        "g": (("trunk", "low_head", "head"), "lr_g"),
        "encoder": (("encoder",), "lr_e"),
        "global_encoder": (("global_encoder",), "lr_e"),
    }

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.low_head = LowResHead(cfg)
        self.d_low = LowResDiscriminator(cfg)
        self.global_encoder = GlobalEncoder(cfg)

    def discriminate(self, slab, low, crop):
        return (self.d_high(slab, crop) + self.d_low(low)) / 2

    def generate_both(self, z, crop):
        emb, slab = self.generate_slab(z, crop)
        with self.autocast():
            return slab, self.low_head(emb)

    def train_step(self, real, labels, iteration, optimizers):
        cfg = self.cfg
        crop = self.draw_crop()
        real_slab = real[:, :, crop:crop + cfg.slab]
        real_low = F.interpolate(real, scale_factor=0.25, mode="nearest")
        z, fake_labels = self.draw_latent(real.shape[0])
        fake_slab, fake_low = self.generate_both(z, crop)

        with self.autocast():
            d_real = self.discriminate(real_slab, real_low, crop)
            d_fake = self.discriminate(fake_slab.detach(), fake_low.detach(), crop)
            loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0) + self.class_loss(d_real, labels)
        loss_d = self.step(optimizers["d"], loss_d)

        with frozen(self.d_high, self.d_low), self.autocast():
            d_gen = self.discriminate(fake_slab, fake_low, crop)
            loss_g = bce(d_gen, 1.0) + cfg.class_loss_weight * self.class_loss(d_gen, fake_labels)
        loss_g = self.step(optimizers["g"], loss_g)

        loss_e = self.encoder_loss(real_slab, optimizers)

        with torch.no_grad(), self.autocast():
            real_emb = self.encoder(real)
        with frozen(self.trunk, self.low_head, self.head), self.autocast():
            z_hat, _ = self.condition(self.global_encoder(real_emb), labels)
            slab_hat, low_hat = self.generate_both(z_hat, crop)
            loss_eg = (F.l1_loss(slab_hat.float(), real_slab) + F.l1_loss(low_hat.float(), real_low)) / 2
        loss_eg = self.step(optimizers["global_encoder"], loss_eg)

        return {"d": loss_d, "g": loss_g, "encoder": loss_e, "global_encoder": loss_eg}
