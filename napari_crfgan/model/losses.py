"""Adversarial losses and discriminator penalties, selected by `ModelConfig.loss`.

Each loss reads column 0 of the discriminator's output (the real/fake logit or
critic value; the class columns have their own cross-entropy):

- ``bce``: non-saturating BCE with logits (the papers'): D: -log s(r) - log(1 - s(f)), G: -log s(f);
- ``lsgan``: least squares: D: ((r - 1)^2 + f^2) / 2, G: (f - 1)^2 / 2;
- ``wgan-gp``: Wasserstein critic: D: f - r (+ gradient penalty, :func:`gradient_penalty`), G: -f;
- ``hinge``: D: relu(1 - r) + relu(1 + f), G: -f.

One-sided label smoothing (`label_smoothing`) lowers the real target of bce and lsgan.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..distributed import sample_rows
from .presets import ModelConfig


def _col(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, :1].float()


def d_loss(cfg: ModelConfig, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's adversarial loss on its outputs for real and generated inputs."""
    r, f = _col(real), _col(fake)
    target = 1.0 - cfg.label_smoothing
    if cfg.loss == "bce":
        return (F.binary_cross_entropy_with_logits(r, torch.full_like(r, target))
                + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    if cfg.loss == "lsgan":
        return ((r - target).pow(2).mean() + f.pow(2).mean()) / 2
    if cfg.loss == "wgan-gp":
        return f.mean() - r.mean()
    return F.relu(1 - r).mean() + F.relu(1 + f).mean()  # hinge


def g_loss(cfg: ModelConfig, fake: torch.Tensor) -> torch.Tensor:
    """The generator's adversarial loss on the discriminator's output for its volumes."""
    f = _col(fake)
    if cfg.loss == "bce":
        return F.binary_cross_entropy_with_logits(f, torch.ones_like(f))
    if cfg.loss == "lsgan":
        return (f - 1).pow(2).mean() / 2
    return -f.mean()  # wgan-gp and hinge


Critic = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def _input_gradients(critic: Critic, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """|d critic / d inputs|^2 per sample, over every input (with a graph, so the penalty trains D)."""
    inputs = [x.detach().requires_grad_(True) for x in inputs]
    out = _col(critic(inputs)).sum()
    grads = torch.autograd.grad(out, inputs, create_graph=True)
    return sum(g.float().pow(2).flatten(1).sum(1) for g in grads)


def gradient_penalty(critic: Critic, real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """WGAN-GP: E[(|grad critic(x_hat)| - 1)^2] at x_hat between a real and a generated input (one mixing
    weight per sample, shared by all of a sample's inputs)."""
    b = real[0].shape[0]
    alpha = sample_rows(lambda n: torch.rand(n, device=real[0].device), b)
    mixed = [torch.lerp(f.detach().float(), r.detach().float(), alpha.view(b, *([1] * (r.dim() - 1))))
             for r, f in zip(real, fake)]
    return (_input_gradients(critic, mixed).add(1e-12).sqrt() - 1).pow(2).mean()


def r1_penalty(critic: Critic, real: Sequence[torch.Tensor]) -> torch.Tensor:
    """R1: E[|grad critic(real)|^2] (times gamma / 2 by the caller)."""
    return _input_gradients(critic, real).mean()
