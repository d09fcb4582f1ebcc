"""HA-GAN (Sun et al. 2022), the baseline: G^A + G^L + G^H, D^H + D^L, E^H, E^G.

One training iteration (step order D, G, E^H, E^G, one slab position for all).
The discriminator's logit is the mean of D^H on the slab and D^L on the
low-resolution image:
  D:   BCE(D(real), 1) + BCE(D(G(z1)), 0) [+ CE(real class)]
  G:   a fresh z2; BCE(D(G(z2)), 1) [+ 0.1 CE(fake class)]
  E^H: L1(G^H(E^H(real slab)), real slab), G frozen.
  E^G: z_hat = E^G(E^H features of the real volume, computed slab by slab and
       concatenated, as the reference does); (L1(slab of G(z_hat)) + L1(low of G(z_hat))) / 2,
       G frozen.
Fake classes are the real batch's. The fast step (napari-crfgan 0.1) reuses the D
step's fake and graph in the G step, applies E^H to the whole volume at once for E^G
and draws fake classes uniformly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .discriminator import LowResDiscriminator
from .encoder import GlobalEncoder
from .generator import LowResHead
from .presets import ModelConfig
from . import losses
from .system import GANSystem, floats, frozen


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

    def critic(self, inputs, crop, features=False):
        """The mean of D^H on the slab and D^L on the low-resolution image (features: D^H's)."""
        slab, low = inputs
        d_high, d_low = self.net("d_high"), self.net("d_low")
        if not features:
            return (d_high(slab, crop) + d_low(low)) / 2
        logits, feats = d_high(slab, crop, features=True)
        return (logits + d_low(low)) / 2, feats

    def generate_both(self, z, crop):
        emb, slab = self.generate_slab(z, crop)
        with self.autocast():
            return slab, self.net("low_head")(emb)

    def real_embedding(self, real: torch.Tensor) -> torch.Tensor:
        """E^H features of the whole real volume, without gradient: slab by slab (reference step:
        GroupNorm statistics per slab, as the reference computes them) or in one pass (fast step)."""
        with torch.no_grad(), self.autocast():
            if self.cfg.step != "reference":
                return self.encoder(real)
            slab = self.cfg.slab
            return torch.cat([self.encoder(real[:, :, s:s + slab]) for s in range(0, self.cfg.size, slab)], dim=2)

    def train_step(self, real, labels, iteration, optimizers):
        cfg = self.cfg
        reference = cfg.step == "reference"
        crop = self.draw_crop()
        real_slab = real[:, :, crop:crop + cfg.slab]
        real_low = F.interpolate(real, scale_factor=0.25, mode="nearest")
        z, fake_labels = self.draw_latent(real.shape[0], self.fake_labels(labels))
        with torch.no_grad() if reference else torch.enable_grad():  # fast: the G step reuses this graph
            fake_slab, fake_low = self.generate_both(z, crop)

        with self.autocast():
            loss_d, _ = self.discriminator_loss((real_slab, real_low), (fake_slab, fake_low), crop, labels,
                                                iteration)
        out = {"d": self.step(optimizers["d"], loss_d)}

        if reference:
            z, fake_labels = self.draw_latent(real.shape[0], fake_labels)
            fake_slab, fake_low = self.generate_both(z, crop)
        with frozen(self.d_high, self.d_low), self.autocast():
            d_gen, matching = self.generator_critic((fake_slab, fake_low), (real_slab, real_low), crop)
            loss_g = losses.g_loss(cfg, d_gen) + cfg.class_loss_weight * self.class_loss(d_gen, fake_labels)
            if matching is not None:
                loss_g = loss_g + matching
        out["g"] = self.generator_step(optimizers["g"], loss_g, iteration)

        out["encoder"] = self.encoder_loss(real_slab, optimizers)

        real_emb = self.real_embedding(real)
        with frozen(self.trunk, self.low_head, self.head), self.autocast():
            z_hat, _ = self.condition(self.net("global_encoder")(real_emb), labels)
            slab_hat, low_hat = self.generate_both(z_hat, crop)
            loss_eg = (F.l1_loss(slab_hat.float(), real_slab) + F.l1_loss(low_hat.float(), real_low)) / 2
        out["global_encoder"] = self.step(optimizers["global_encoder"], loss_eg)
        return floats(out)
