"""DiffAugment in 3D and its adaptive probability (StyleGAN2-ADA).

Differentiable augmentations applied to every input of the discriminator, real and
generated alike (in the D step and in the G step), so D cannot tell them apart by
the augmentation and G's gradient flows through it:

- ``translation``: shift by up to 1/8 of each side, background (-1) filled in;
- ``cutout``: a cube of half the side set to background at a random place;
- ``intensity``: brightness + U(-0.5, 0.5) and contrast x U(0.5, 1.5) about the volume's mean.

A D input may carry more channels than the image (mask systems: the one-hot mask after it): the shifts and
the cutout move every channel alike, so the mask stays on its image; intensity changes the image only.

Each operation hits a volume with probability p. With `ada_target` > 0 p adapts: every
few iterations, r = E[sign D(real)] (how sure D is of the real volumes; it rises as D
overfits) moves p up when above the target and down when below, by as much as
batch x interval / `ada_images` each time.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import sample_rows, sum_over_ranks
from .presets import ModelConfig

BACKGROUND = -1.0  # volumes are in [-1, 1]; -1 is air / background after preprocessing
ADA_INTERVAL = 4  # iterations between adjustments of the adaptive probability


def _per_sample(x: torch.Tensor, p: float) -> torch.Tensor:
    """A [B, 1, 1, 1, 1] mask: 1 where an operation applies (probability p)."""
    return (_rand(x, x.shape[0], 1, 1, 1, 1) < p).to(x.dtype)


def _rand(x: torch.Tensor, b: int, *shape: int, dtype=None) -> torch.Tensor:
    """U(0, 1) per sample (this rank's rows of the global batch's draw; see runtime/distributed.py)."""
    return sample_rows(lambda n: torch.rand(n, *shape, device=x.device, dtype=dtype), b)


def _randint(x: torch.Tensor, low: int, high: int, b: int) -> torch.Tensor:
    return sample_rows(lambda n: torch.randint(low, high, (n,), device=x.device), b)


def translate(x: torch.Tensor, p: float, ratio: float = 0.125) -> torch.Tensor:
    b = x.shape[0]
    sizes = x.shape[2:]
    shifts = [_randint(x, -int(s * ratio), int(s * ratio) + 1, b) for s in sizes]
    hit = _per_sample(x, p).view(b).bool()
    pad = [int(s * ratio) for s in sizes]
    padded = F.pad(x, (pad[2], pad[2], pad[1], pad[1], pad[0], pad[0]), value=BACKGROUND)
    out = []
    for i in range(b):
        if not hit[i]:
            out.append(x[i])
            continue
        d, h, w = (pad[k] - int(shifts[k][i]) for k in range(3))
        out.append(padded[i, :, d:d + sizes[0], h:h + sizes[1], w:w + sizes[2]])
    return torch.stack(out)


def cutout(x: torch.Tensor, p: float, ratio: float = 0.5) -> torch.Tensor:
    b = x.shape[0]
    sizes = x.shape[2:]
    cut = [max(1, int(s * ratio)) for s in sizes]
    grids = torch.meshgrid(*(torch.arange(s, device=x.device) for s in sizes), indexing="ij")
    inside = torch.ones(b, *sizes, dtype=torch.bool, device=x.device)
    for k in range(3):
        lo = _randint(x, 0, sizes[k] - cut[k] + 1, b).view(b, 1, 1, 1)
        inside &= (grids[k][None] >= lo) & (grids[k][None] < lo + cut[k])
    mask = (inside[:, None].to(x.dtype) * _per_sample(x, p))
    return x * (1 - mask) + BACKGROUND * mask


def intensity(x: torch.Tensor, p: float) -> torch.Tensor:
    """Channel 0, the image; further channels (a mask) are not intensities and stay."""
    b = x.shape[0]
    hit = _per_sample(x, p)
    brightness = (_rand(x, b, 1, 1, 1, 1, dtype=x.dtype) - 0.5) * hit
    contrast = 1 + (_rand(x, b, 1, 1, 1, 1, dtype=x.dtype) - 0.5) * hit
    image = x[:, :1]
    mean = image.mean(dim=(1, 2, 3, 4), keepdim=True)
    image = (image - mean) * contrast + mean + brightness
    return image if x.shape[1] == 1 else torch.cat([image, x[:, 1:]], dim=1)


OPERATIONS = {"translation": translate, "cutout": cutout, "intensity": intensity}


class Augment(nn.Module):
    """The configured operations at probability `p` (a buffer, so a resumed run continues with it)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.operations = cfg.augmentations
        self.target = cfg.ada_target
        self.images = cfg.ada_images
        self.register_buffer("p", torch.tensor(float(cfg.augment_p if not cfg.ada_target else 0.0)))
        # sum and count of sign(D(real)) since the last adjustment: buffers, so a resume continues exactly
        self.register_buffer("sign_sum", torch.zeros(()))
        self.register_buffer("sign_count", torch.zeros(()))

    def forward(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        p = float(self.p)
        out = []
        for x in inputs:
            for name in self.operations:
                x = OPERATIONS[name](x, p)
            out.append(x)
        return out

    @torch.no_grad()
    def observe(self, d_real: torch.Tensor, iteration: int) -> None:
        """Adaptive p: collect sign(D(real)); every ADA_INTERVAL iterations step p towards the target."""
        if not self.target:
            return
        signs = torch.sign(d_real[:, 0].float()).reshape(d_real.shape[0], -1)
        self.sign_sum += signs.mean(dim=1).sum()  # a patch discriminator: the mean over its patches per volume
        self.sign_count += d_real.shape[0]
        if (iteration + 1) % ADA_INTERVAL:
            return
        total, count = sum_over_ranks(torch.stack([self.sign_sum, self.sign_count])).tolist()  # every rank's
        r = total / max(count, 1.0)
        step = count / self.images
        self.p.copy_((self.p + (step if r > self.target else -step)).clamp(0.0, 1.0))
        self.sign_sum.zero_()
        self.sign_count.zero_()
