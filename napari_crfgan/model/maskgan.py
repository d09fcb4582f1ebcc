"""Mask-to-volume systems: G turns a label map into an image on the same grid, a PatchGAN judges the pair.

One training iteration on a batch of (image, label map) pairs, stacked as channels [B, 2, S, S, S]:
  D: the recipe's loss on D(image, mask) as real and D(G(mask), mask) as fake, with its augmentation
     (the mask moves with its image) and penalties;
  G: the recipe's loss on D(G(mask), mask) + l1_weight * L1(G(mask), image), D just updated, the same
     G(mask) as the D step (as pix2pix); then the moving average when the recipe keeps one.
The seed paper's loss is least squares (the systems' default, SYSTEMS' config_defaults); G is
deterministic unless `mask_noise` adds a noise channel to its input.

`synthesize` runs G on a label map of any grid: padded (edge labels repeated) to a multiple of the
generator's stride, in one pass or in blended overlapping patches (model/blending.py), BatchNorm in eval mode.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import sample_rows
from . import losses
from .blending import blend_patches
from .mask_generators import MASK_GENERATORS
from .patch_discriminator import PatchDiscriminator
from .presets import ModelConfig
from .system import GANSystem, floats, frozen


class MaskGAN(GANSystem):
    optimizer_groups = {"d": (("discriminator",), "lr_d"), "g": (("generator",), "lr_g")}
    ema_parts = ("generator",)
    generator_kind = "unet"

    def build_networks(self, cfg: ModelConfig) -> None:
        self.generator = MASK_GENERATORS[self.generator_kind](cfg)
        self.discriminator = PatchDiscriminator(cfg)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Integer label maps [B, D, H, W] (any dtype holding integers) -> [B, mask_classes, D, H, W] floats."""
        return F.one_hot(labels.long(), self.cfg.mask_classes).permute(0, 4, 1, 2, 3).float()

    def generator_input(self, labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """The one-hot mask, and the noise channel when the config has one (drawn here when not given)."""
        onehot = self.one_hot(labels)
        if not self.cfg.mask_noise:
            return onehot
        if noise is None:
            noise = sample_rows(lambda n: torch.randn(n, 1, *labels.shape[1:], device=labels.device), labels.shape[0])
        return torch.cat([onehot, noise.to(onehot.dtype)], dim=1)

    def critic(self, inputs, crop, features=False):
        """D on the image and its one-hot mask, already concatenated (so augmentation moves them together);
        `crop` is the latent systems' slab position, unused here."""
        return self.net("discriminator")(inputs[0], features)

    def train_step(self, real, labels, iteration, optimizers):
        cfg = self.cfg
        image, label_map = real[:, :1], real[:, 1]
        onehot = self.one_hot(label_map)
        with self.autocast():
            fake = self.net("generator")(self.generator_input(label_map))
        real_in = (torch.cat([image, onehot], dim=1),)
        fake_in = (torch.cat([fake.float(), onehot], dim=1),)
        with self.autocast():
            loss_d, _ = self.discriminator_loss(real_in, fake_in, 0, None, iteration)
        out = {"d": self.step(optimizers["d"], loss_d)}

        with frozen(self.discriminator), self.autocast():
            d_gen, matching = self.generator_critic(fake_in, real_in, 0)
            adversarial = losses.g_loss(cfg, d_gen)
            l1 = F.l1_loss(fake.float(), image)
            loss_g = adversarial + cfg.l1_weight * l1 + (matching if matching is not None else 0.0)
        out["g"] = self.generator_step(optimizers["g"], loss_g, iteration)
        out.update(l1=l1.detach(), g_adversarial=adversarial.detach())
        return floats(out)

    def preview_input(self, seed: int, example: torch.Tensor) -> torch.Tensor:
        """The label map of the training item `example` ([image, mask] channels): [1, 1, S, S, S]."""
        return example[1:2][None].to(self.device)

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Volumes [B, 1, D, H, W] in [-1, 1] from label maps [B, 1, D, H, W]; chunk: patch side (None: one pass)."""
        return synthesize(self, labels, patch=chunk)

    def distribute(self) -> None:
        """As every system; on CUDA the BatchNorms become SyncBatchNorm first, so N processes normalise with the
        global batch's statistics as one process does (torch has no SyncBatchNorm on the CPU: there each rank
        normalises its own rows)."""
        if self.device.type == "cuda":
            for name in ("generator", "discriminator"):
                setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self, name)))
        super().distribute()


class Pix2Pix(MaskGAN):
    """The seed paper's patch-based conditional GAN: 3D U-Net G, PatchGAN D."""

    generator_kind = "unet"


class SPADEGAN(MaskGAN):
    """G with spatially-adaptive normalisation (SPADE), the same PatchGAN D."""

    generator_kind = "spade"


# ---- inference on any grid -----------------------------------------------------------------
def exact_overlap(generator: nn.Module) -> int:
    """The smallest patch overlap at which blended patches equal one pass, plus a ramp of one stride."""
    return 2 * generator.halo + generator.multiple


def default_patch(generator: nn.Module, cfg: ModelConfig) -> int:
    """A patch side that keeps memory bounded and the exact overlap at most half the patch."""
    m = generator.multiple
    return m * math.ceil(max(cfg.size, 2 * exact_overlap(generator)) / m)


@contextlib.contextmanager
def _evaluating(module: nn.Module):
    """BatchNorm with its running statistics (what a fully convolutional one pass means), restored after."""
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def check_labels(labels: torch.Tensor, classes: int) -> None:
    """ValueError (one sentence) unless every value is an integer label 0 .. classes - 1."""
    if labels.is_floating_point():
        if not bool(torch.isfinite(labels).all()) or bool((labels != labels.round()).any()):
            raise ValueError("the mask holds values that are not integer labels")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"the mask holds label {bad}, but the model knows labels 0 .. {classes - 1}")


@torch.no_grad()
def synthesize(system: MaskGAN, mask: torch.Tensor, patch: int | None = None, overlap: int | None = None,
               seed: int = 0) -> torch.Tensor:
    """G(mask) [B, 1, D, H, W] in [-1, 1] for integer label maps [B, 1, D, H, W] or [D, H, W] of any grid.

    patch: side of the patches G runs on (None: one pass); overlap: voxels neighbouring patches share
    (default `exact_overlap`: equal to one pass); seed: the noise channel's draw (mask_noise only).
    """
    generator = system.sampling_networks()[0]
    labels = mask if mask.dim() == 5 else mask[None, None]
    check_labels(labels, system.cfg.mask_classes)
    labels = labels.to(device=system.device, dtype=torch.float32)
    m = generator.multiple
    shape = labels.shape[2:]
    pad = [m * math.ceil(n / m) - n for n in shape]
    x = F.pad(labels, (0, pad[2], 0, pad[1], 0, pad[0]), mode="replicate") if any(pad) else labels
    if system.cfg.mask_noise:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], generator=torch.Generator().manual_seed(seed))
        x = torch.cat([x, noise.to(x.device)], dim=1)

    def run(part: torch.Tensor) -> torch.Tensor:
        return generator(system.generator_input(part[:, 0], part[:, 1:] if system.cfg.mask_noise else None))

    with _evaluating(generator):
        if patch is None:
            y = run(x).float()
        else:
            y = blend_patches(run, x, patch, exact_overlap(generator) if overlap is None else overlap,
                              generator.halo, m)
    return y[:, :, :shape[0], :shape[1], :shape[2]]
