"""Full-resolution decoding of an embedding by G^H, in one pass or in chunks.

The one decoder of the package: the sampler and the trainer's preview both use it.
`decode_embedding` decodes the whole embedding at once or a few embedding slices at
a time: each chunk carries a halo of `head.halo` embedding slices (the receptive
field of G^H's two upsampled 3x3x3 convs), and the GroupNorm between them uses statistics of
the whole volume, gathered in a first pass. Both ways normalise with the same
float64 statistics, so chunked output equals one-pass output (up to float rounding
of the convs) at a fraction of the peak memory, on any CPU: torch's float32
GroupNorm kernel is up to 1e-4 off on large channels-last inputs, which alone would
exceed the 1e-5 the two ways are held to.

Within a chunk, G^H's last upsampling and conv run on a quarter of it at a time: their
input (the hidden channels at full resolution) and the CPU conv's working copies of it
take about 4x the memory per image slice of the first conv (80 against 20 MB at 512^2),
so whole chunks would put 3 of the 4 GB a 32-slice chunk needs at paper-512 there.
"""
from __future__ import annotations

import torch

from .generator import SubVolumeHead

STATS_SLICES = 8  # slices converted to float64 at a time while summing statistics


class _GroupMoments:
    """Per (sample, group) sums of G^H's pre-norm activations, accumulated in float64."""

    def __init__(self, head: SubVolumeHead, batch: int, device: torch.device) -> None:
        self.norm = head.norm
        self.total = torch.zeros(batch, self.norm.num_groups, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros_like(self.total)
        self.count = 0

    def add(self, x: torch.Tensor) -> None:
        """Adds activations [B, C, d, h, w], a few slices at a time (no float64 copy of all of x)."""
        b, groups = x.shape[0], self.norm.num_groups
        for a in range(0, x.shape[2], STATS_SLICES):
            part = x[:, :, a:a + STATS_SLICES].double().reshape(b, groups, -1)
            self.total += part.sum(-1)
            self.total_sq += (part * part).sum(-1)
        self.count += x[0].numel() // groups

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """GroupNorm with its weight and bias as one per-channel (scale, shift), each [B, C, 1, 1, 1]."""
        norm = self.norm
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp_min(0)
        per_group = norm.num_channels // norm.num_groups
        inv_std = torch.rsqrt(var + norm.eps).repeat_interleave(per_group, dim=1)
        scale = inv_std * norm.weight.double()
        shift = norm.bias.double() - mean.repeat_interleave(per_group, dim=1) * scale
        return scale.float()[..., None, None, None], shift.float()[..., None, None, None]


@torch.no_grad()
def decode_embedding(head: SubVolumeHead, emb: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """G^H(emb) [B, 1, 4e, 4E, 4E], about `chunk` image slices (chunk // 4 embedding slices) at a time
    (None: one pass)."""
    b, e = emb.shape[0], emb.shape[2]
    step = e if chunk is None else max(1, chunk // 4)
    if not isinstance(head.norm, torch.nn.GroupNorm):  # a voxel-wise norm: chunks need no statistics pass
        return head(emb) if step >= e else _in_chunks(head, emb, step, head.norm)
    moments = _GroupMoments(head, b, emb.device)
    if step >= e:
        hidden = [head.hidden(emb)]
        moments.add(hidden[0])
        scale, shift = moments.affine()
        # pop: finish() holds the only reference, so it frees the activations before its
        # last conv (the peak); a local here would add their size (256 MiB at paper-256) to it
        return head.finish(hidden.pop().mul_(scale).add_(shift))
    for a in range(0, e, step):  # first pass: statistics of the whole volume
        z = min(a + step, e)
        lo, hi = max(a - 1, 0), min(z + 1, e)  # one slice of halo is enough for conv1 (any upsampling)
        moments.add(head.hidden(emb[:, :, lo:hi])[:, :, 2 * (a - lo):2 * (z - lo)])
    scale, shift = moments.affine()
    return _in_chunks(head, emb, step, lambda hidden: hidden.mul_(scale).add_(shift))


def _in_chunks(head: SubVolumeHead, emb: torch.Tensor, step: int, norm) -> torch.Tensor:
    """G^H, with `norm` as its normalisation, applied `step` embedding slices at a time, each with `head.halo`
    slices of context either side, the context's output cropped away."""
    e = emb.shape[2]
    out = torch.empty(emb.shape[0], 1, 4 * e, 4 * emb.shape[3], 4 * emb.shape[4], dtype=torch.float32,
                      device=emb.device)
    for a in range(0, e, step):
        z = min(a + step, e)
        lo, hi = max(a - head.halo, 0), min(z + head.halo, e)
        _finish(head, norm(head.hidden(emb[:, :, lo:hi])), 2 * (a - lo), 2 * (z - lo), max(1, step // 2),
                out[:, :, 4 * a:4 * z])
    return out


def _finish(head: SubVolumeHead, hidden: torch.Tensor, start: int, stop: int, piece: int,
            out: torch.Tensor) -> None:
    """Writes G^H's finish of hidden slices start:stop into `out`, `piece` slices (a quarter of the chunk's
    image slices: module doc) at a time. One slice of halo is enough for its conv, as for conv1 in the
    statistics pass; the chunk's halo makes those slices exact."""
    for u in range(start, stop, piece):
        v = min(u + piece, stop)
        lo, hi = max(u - 1, 0), min(v + 1, hidden.shape[2])
        out[:, :, 2 * (u - start):2 * (v - start)] = head.finish(hidden[:, :, lo:hi])[:, :, 2 * (u - lo):2 * (v - lo)]
