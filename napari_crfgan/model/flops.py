"""Multiply-accumulates (MACs) per network and per training step, as torch's FlopCounterMode counts them.

Counted on the meta device (shapes only: no memory, no time), so they are exact for
every preset and comparable with the reference code layer by layer. One MAC = two
FLOPs in FlopCounterMode's convention (it counts convolutions and matrix products).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .presets import ModelConfig
from .registry import build_system, uses_masks


def count_macs(fn) -> int:
    """MACs of the convolutions and matrix products `fn()` runs (forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops()) // 2


def _inputs(system, cfg: ModelConfig, batch: int) -> dict:
    """Each network's forward arguments at training shapes (the head: one embedding slab)."""
    c, e = cfg.embedding_channels, cfg.embedding_size
    emb = torch.zeros(batch, c, e, e, e)
    slab = torch.zeros(batch, 1, cfg.slab, cfg.size, cfg.size)
    cube = (cfg.size,) * 3
    args = {
        "generator": (torch.zeros(batch, cfg.mask_classes + cfg.mask_noise, *cube),),
        "discriminator": (torch.zeros(batch, 1 + cfg.mask_classes, *cube),),
        "trunk": (torch.zeros(batch, cfg.latent_dim + cfg.num_classes),),
        "head": (torch.zeros(batch, c, cfg.slab // 4, e, e),),
        "d_high": (slab, 0),
        "encoder": (slab,),
        "low_head": (emb,),
        "d_low": (torch.zeros(batch, 1, e, e, e),),
        "global_encoder": (emb,),
        "crf": (emb, torch.zeros(batch, 1)),
    }
    return {name: args[name] for name in system.network_names}


class _NoStep:
    """An optimiser stand-in: the step's arithmetic is not a convolution or product."""

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def network_macs(model: str, cfg: ModelConfig, batch: int = 1) -> dict[str, int]:
    """Forward MACs per network at training shapes, plus G^H decoding the whole embedding."""
    with torch.device("meta"):
        system = build_system(model, cfg)
        out = {name: count_macs(lambda n=name, a=a: getattr(system, n)(*a))
               for name, a in _inputs(system, cfg, batch).items()}
        if hasattr(system, "head"):
            full = torch.zeros(batch, cfg.embedding_channels, *(cfg.embedding_size,) * 3)
            out["head_full_volume"] = count_macs(lambda: system.head(full))
    return out


def step_macs(model: str, cfg: ModelConfig, batch: int = 1) -> int:
    """MACs of one whole training iteration (every step, forward and backward) at `batch`."""
    with torch.device("meta"):
        system = build_system(model, cfg)
        real = torch.zeros(batch, 2 if uses_masks(model) else 1, cfg.size, cfg.size, cfg.size)  # (image, mask)
        labels = torch.zeros(batch, dtype=torch.long) if cfg.num_classes else None
        optimizers = {name: _NoStep() for name in system.optimizer_groups}
        return count_macs(lambda: system.train_step(real, labels, 0, optimizers))
