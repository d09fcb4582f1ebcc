"""What every system shares: the recipe's losses, augmentation and penalties, the generator's moving
average, optimiser steps, DDP; and what CRF-GAN and HA-GAN share: latent draws, slab crops, G^A + G^H."""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import sample_rows
from . import losses
from .augment import Augment
from .decoding import decode_embedding
from .generator import SubVolumeHead, Trunk, embedding_slab
from .discriminator import SubVolumeDiscriminator
from .encoder import HalfEncoder
from .layers import count_parameters
from .presets import ModelConfig
from .style import StyleTrunk

#: children that are not networks of their own (no parameter count, no optimiser)
HELPERS = ("augment", "ema")


def floats(values: dict) -> dict[str, float]:
    """Loss tensors and numbers as Python floats (NaN for tensors without data, e.g. on meta)."""
    return {k: float("nan") if isinstance(v, torch.Tensor) and v.is_meta else float(v) for k, v in values.items()}


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """BCE with logits on the real/fake column (the CRF's own training, whatever the recipe's loss)."""
    logits = logits[:, :1].float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


@contextlib.contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """Parameters of `modules` take no gradient inside the block."""
    params = [p for m in modules for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, s in zip(params, saved):
            p.requires_grad_(s)


class GANSystem(nn.Module):
    """Base of every system. Subclasses define `optimizer_groups` and `train_step` (and, for other networks than
    the latent systems' G^A, G^H, D^H and E^H, `build_networks` and `ema_parts`)."""

    # optimiser name -> (network attribute names, learning-rate field of the config)
    optimizer_groups: dict[str, tuple[tuple[str, ...], str]] = {}
    ema_parts: tuple[str, ...] = ("trunk", "head")  # the networks sampling runs (their moving average, if any)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.build_networks(cfg)
        self.autocast_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        # recipe helpers exist only when used, so a paper-recipe state dict is unchanged
        if cfg.augmentations:
            self.augment = Augment(cfg)
        if cfg.ema_decay:  # the generator as sampled: its moving average (no gradient, no optimiser)
            self.ema = nn.ModuleDict({name: copy.deepcopy(getattr(self, name)) for name in self.ema_parts})
            self.ema.requires_grad_(False)

    def build_networks(self, cfg: ModelConfig) -> None:
        """The latent systems' G^A, G^H, D^H and E^H."""
        self.trunk = StyleTrunk(cfg) if cfg.trunk == "style" else Trunk(cfg)
        self.head = SubVolumeHead(cfg)
        self.d_high = SubVolumeDiscriminator(cfg)
        self.encoder = HalfEncoder(cfg)

    # ---- bookkeeping -------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def network_counts(self) -> dict[str, int]:
        return {name: count_parameters(getattr(self, name)) for name in self.network_names}

    @property
    def network_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.named_children() if name not in HELPERS)

    def make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.cfg
        return {
            group: torch.optim.Adam(
                [p for n in nets for p in getattr(self, n).parameters()],
                lr=getattr(cfg, lr_field), betas=cfg.betas, eps=1e-8,
            )
            for group, (nets, lr_field) in self.optimizer_groups.items()
        }

    def set_precision(self, precision: str) -> None:
        """'fp32', or autocast: 'bf16' (CPU and CUDA) or 'fp16' (CUDA, with a gradient scaler)."""
        if precision == "fp32":
            self.autocast_dtype, self.scaler = None, None
            return
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError(f"fp16 autocast needs a CUDA device, not {self.device.type}; use bf16 there")
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{precision} autocast runs on CPU or CUDA, not {self.device.type}")
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None

    def set_activation_checkpointing(self, on: bool) -> None:
        """Recompute the trunk's and the discriminators' activations in backward instead of keeping them:
        less memory for more time, the same numbers (nothing they recompute is random or stateful)."""
        for name in ("trunk", "d_high", "d_low"):
            if hasattr(self, name):
                getattr(self, name).checkpointing = on

    def distribute(self) -> None:
        """Wrap each network in DistributedDataParallel, which averages its gradients over the process group
        in backward. `net` hands out the wrapper where the network trains; elsewhere (frozen, or no gradient)
        the plain module runs, so DDP never waits for gradients that will not come. Buffers are not
        broadcast: every rank updates them alike (spectral norm's vectors follow the shared weights)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self._replicas = {name: DistributedDataParallel(getattr(self, name), device_ids=ids,
                                                        forward_sync_buffers=False)
                          for name in self.network_names}

    def net(self, name: str) -> nn.Module:
        """The network `name` as this step should call it: its DDP wrapper when distributed and it trains."""
        module = getattr(self, name)
        replica = getattr(self, "_replicas", {}).get(name)
        if replica is None or not torch.is_grad_enabled() or not next(module.parameters()).requires_grad:
            return module
        return replica

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
        """Backward and one optimiser step; returns the loss, detached (turned into floats by
        `floats` once per iteration, so a step never waits on the device mid-iteration)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()
        return loss.detach()

    def generator_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, iteration: int) -> torch.Tensor:
        """The G step, then the moving average of G^A + G^H (when the recipe keeps one). The decay warms up
        as (1 + it) / (10 + it) until it reaches the recipe's, so an early average is not mostly the
        initial weights (0.999 ** 1000 would leave them 37% of it at iteration 1000)."""
        out = self.step(optimizer, loss)
        if hasattr(self, "ema"):
            decay = min(self.cfg.ema_decay, (1 + iteration) / (10 + iteration))
            with torch.no_grad():
                for name in self.ema_parts:
                    live, avg = getattr(self, name), self.ema[name]
                    for a, p in zip(avg.parameters(), live.parameters()):
                        a.lerp_(p, 1.0 - decay)
                    for a, b in zip(avg.buffers(), live.buffers()):
                        a.copy_(b)
        return out

    # ---- the recipe: D inputs augmented, the configured loss, penalties ----
    def critic(self, inputs: Sequence[torch.Tensor], crop: int, features: bool = False):
        """The discriminator's logits for its inputs (CRF-GAN: the slab; HA-GAN: slab and low-resolution
        image); with `features`, (logits, D^H's feature vector)."""
        raise NotImplementedError

    def augmented(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return self.augment(inputs) if hasattr(self, "augment") else list(inputs)

    def discriminator_loss(self, real_in: Sequence[torch.Tensor], fake_in: Sequence[torch.Tensor], crop: int,
                           labels: torch.Tensor | None, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """D's loss on real and (detached) generated inputs, both augmented alike, with the recipe's penalties;
        returns (loss, D's output on the real inputs)."""
        cfg = self.cfg
        real_in = self.augmented(real_in)
        fake_in = self.augmented([x.detach() for x in fake_in])
        d_real = self.critic(real_in, crop)
        d_fake = self.critic(fake_in, crop)
        loss = losses.d_loss(cfg, d_real, d_fake) + self.class_loss(d_real, labels)

        def critic(xs):
            return self.critic(xs, crop)

        if cfg.loss == "wgan-gp":
            loss = loss + cfg.gp_weight * losses.gradient_penalty(critic, real_in, fake_in)
        if cfg.r1_gamma and iteration % cfg.r1_every == 0:  # lazy: scaled by the interval
            loss = loss + cfg.r1_gamma / 2 * cfg.r1_every * losses.r1_penalty(critic, real_in)
        if hasattr(self, "augment"):
            self.augment.observe(d_real, iteration)
        return loss, d_real

    def generator_critic(self, fake_in: Sequence[torch.Tensor], real_in: Sequence[torch.Tensor],
                         crop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """D's output on generated inputs (augmented as D's are) and the feature-matching loss (None when off)."""
        fake_in = self.augmented(fake_in)
        if not self.cfg.feature_matching:
            return self.critic(fake_in, crop), None
        d_gen, f_fake = self.critic(fake_in, crop, features=True)
        with torch.no_grad():
            _, f_real = self.critic(self.augmented(real_in), crop, features=True)
        return d_gen, self.cfg.feature_matching * F.mse_loss(f_fake.float().mean(0), f_real.float().mean(0))

    # ---- random draws (all from torch's global RNG, so a seed fixes a run) --
    def draw_crop(self) -> int:
        """Slab start, a multiple of 4 so the image slab and embedding slab align."""
        return 4 * int(torch.randint(0, self.cfg.max_crop // 4 + 1, (), device="cpu"))  # the CPU generator always

    def draw_latent(self, batch: int, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """z ~ N(0, I), with a one-hot class appended for conditional models.

        Fake classes are `labels` when given (the reference step generates the real
        batch's classes), else drawn uniformly (the fast step).
        """
        z = sample_rows(lambda n: torch.randn(n, self.cfg.latent_dim, device=self.device), batch)
        return self.condition(z, labels)

    def condition(self, z: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        k = self.cfg.num_classes
        if k == 0:
            return z, None
        if labels is None:
            labels = sample_rows(lambda n: torch.randint(0, k, (n,), device=z.device), z.shape[0])
        return torch.cat([z, F.one_hot(labels, k).to(z.dtype)], dim=1), labels

    def class_loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None or self.cfg.num_classes == 0:
            return logits.new_zeros(())
        return F.cross_entropy(logits[:, 1:].float(), labels)

    def fake_labels(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """The classes to generate: the real batch's in the reference step, uniform draws in the fast one."""
        return labels if self.cfg.step == "reference" else None

    def encoder_loss(self, real_slab: torch.Tensor, optimizers: dict) -> torch.Tensor:
        """E^H learns to invert G^H on real slabs (G frozen): L1 reconstruction."""
        with frozen(self.head), self.autocast():
            rec = self.head(self.net("encoder")(real_slab))
            loss = F.l1_loss(rec.float(), real_slab)
        return self.step(optimizers["encoder"], loss)

    # ---- generation --------------------------------------------------------
    def embed(self, z: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.net("trunk")(z)

    def generate_slab(self, z: torch.Tensor, crop_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(embedding of the whole volume, image slab at crop_idx)."""
        emb = self.embed(z)
        with self.autocast():
            return emb, self.net("head")(embedding_slab(emb, crop_idx, self.cfg))

    def sampling_networks(self) -> tuple[nn.Module, ...]:
        """The generator as sampled ((G^A, G^H) here): the moving average when the recipe keeps one, else the
        trained networks."""
        if hasattr(self, "ema"):
            return tuple(self.ema[name] for name in self.ema_parts)
        return tuple(getattr(self, name) for name in self.ema_parts)

    def preview_input(self, seed: int, example: torch.Tensor) -> torch.Tensor:
        """What `generate` turns into the trainer's preview volume: the latent code of `seed` (class 0 when
        conditional); `example` is a training item, which mask systems take their mask from."""
        gen = torch.Generator().manual_seed(seed + 7919)
        z = torch.randn(1, self.cfg.latent_dim, generator=gen).to(self.device)
        labels = torch.zeros(1, dtype=torch.long, device=self.device) if self.cfg.num_classes else None
        return self.condition(z, labels)[0]

    @torch.no_grad()
    def generate(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Full-resolution volumes [B, 1, S, S, S] in [-1, 1]: G^H decodes the whole embedding,
        `chunk` image slices at a time (None: one pass; see decoding.decode_embedding)."""
        trunk, head = self.sampling_networks()
        return decode_embedding(head, trunk(z), chunk)

    def train_step(self, real: torch.Tensor, labels: torch.Tensor | None, iteration: int,
                   optimizers: dict) -> dict[str, float]:
        raise NotImplementedError
