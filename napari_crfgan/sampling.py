"""Full-resolution sampling from a checkpoint, chunked decoding, CRF consistency maps.

At inference G^H decodes the whole embedding. `decode_embedding` does it in one
pass or a few embedding slices at a time: each chunk carries a halo of 2 embedding
slices (the receptive field of G^H's two upsampled 3x3x3 convs), and the GroupNorm
between them uses statistics of the whole volume, gathered in a first pass. Both
ways normalise with the same float64 statistics, so chunked output equals one-pass
output (up to float rounding of the convs) at a fraction of the peak memory, on any
CPU: torch's float32 GroupNorm kernel is up to 1e-4 off on large channels-last
inputs, which alone would exceed the 1e-5 the two ways are held to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import from_modality_units, to_modality_units, write_nifti
from .model.generator import SubVolumeHead
from .training.checkpoint import Checkpoint, load_checkpoint
from .training.devices import resolve_device

HALO = 2  # embedding slices each side of a chunk that G^H's output depends on
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
    moments = _GroupMoments(head, b, emb.device)
    step = e if chunk is None else max(1, chunk // 4)
    if step >= e:
        hidden = [head.hidden(emb)]
        moments.add(hidden[0])
        scale, shift = moments.affine()
        # pop: finish() holds the only reference, so it frees the activations before its
        # last conv (the peak); a local here would add their size (256 MiB at paper-256) to it
        return head.finish(hidden.pop().mul_(scale).add_(shift))
    for a in range(0, e, step):  # first pass: statistics of the whole volume
        z = min(a + step, e)
        lo, hi = max(a - 1, 0), min(z + 1, e)  # one slice of halo is enough for conv1
        moments.add(head.hidden(emb[:, :, lo:hi])[:, :, 2 * (a - lo):2 * (z - lo)])
    scale, shift = moments.affine()
    out = torch.empty(b, 1, 4 * e, 4 * emb.shape[3], 4 * emb.shape[4], dtype=torch.float32, device=emb.device)
    for a in range(0, e, step):
        z = min(a + step, e)
        lo, hi = max(a - HALO, 0), min(z + HALO, e)
        y = head.finish(head.hidden(emb[:, :, lo:hi]).mul_(scale).add_(shift))
        out[:, :, 4 * a:4 * z] = y[:, :, 4 * (a - lo):4 * (z - lo)]
    return out


@dataclass
class GeneratedVolume:
    data: np.ndarray  # (D, H, W) float32 in the modality's units (HU for CT)
    spacing: tuple[float, float, float]  # mm
    seed: int
    label: int | None
    modality: str
    model_units: np.ndarray = field(repr=False)  # the same volume in [-1, 1]

    def save(self, path: str | Path) -> Path:
        write_nifti(path, self.data, self.spacing)
        return Path(path)


@dataclass
class ConsistencyMap:
    """The trained CRF's view of a volume, one value per embedding patch.

    marginals: sigmoid of the CRF's per-patch logits after mean-field: the
      probability the CRF gives each patch of belonging to a real, consistent volume.
    agreement: mean pairwise potential cos(f_i, f_j) * W_sym[i, j] between each patch and
      its face neighbours: how strongly the learned weights tie it to its neighbours.
    scale / translate: napari layer geometry (mm) placing each patch over the voxels it covers.
    """

    marginals: np.ndarray  # [gD, gH, gW]
    agreement: np.ndarray  # [gD, gH, gW]
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]


class Sampler:
    """A trained generator loaded from a checkpoint, ready to sample on one device."""

    def __init__(self, checkpoint: str | Path | Checkpoint, device: str = "auto") -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        self.device = resolve_device(device)
        self.system = self.checkpoint.build(self.device)
        self.cfg = self.checkpoint.config
        data = self.checkpoint.data
        self.modality: str = data.get("modality", "mri")
        self.spacing = tuple(float(s) for s in data.get("spacing", (1.0, 1.0, 1.0)))
        self.class_names: list[str] = list(data.get("class_names") or [])

    @property
    def has_crf(self) -> bool:
        return hasattr(self.system, "crf")

    def info(self) -> dict:
        c = self.checkpoint
        return {"model": c.model, "preset": c.preset, "iteration": c.iteration, "size": self.cfg.size,
                "num_classes": self.cfg.num_classes, "class_names": self.class_names,
                "modality": self.modality, "spacing": self.spacing, "data": c.data, "metrics": c.metrics,
                "parameters": self.system.network_counts()}

    def _label(self, label: int | str | None) -> int | None:
        k = self.cfg.num_classes
        if k == 0:
            if label is not None:
                raise ValueError("this model is not class-conditional; leave the label out")
            return None
        if label is None:
            raise ValueError(f"this model is class-conditional; give a label: {self._label_choices()}")
        if isinstance(label, str) and not label.isdigit():
            if label not in self.class_names:
                raise ValueError(f"unknown label {label!r}; choose {self._label_choices()}")
            return self.class_names.index(label)
        index = int(label)
        if not 0 <= index < k:
            raise ValueError(f"label must be in 0..{k - 1}: {self._label_choices()}")
        return index

    def _label_choices(self) -> str:
        names = self.class_names or [str(i) for i in range(self.cfg.num_classes)]
        return ", ".join(f"{i} ({n})" for i, n in enumerate(names))

    def latent(self, seed: int, label: int | None) -> torch.Tensor:
        """The latent code of `seed` (independent of device and batch)."""
        z = torch.randn(1, self.cfg.latent_dim, generator=torch.Generator().manual_seed(seed))
        labels = None if label is None else torch.tensor([label])
        return self.system.condition(z, labels)[0].to(self.device)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Full volumes [B, 1, S, S, S] in [-1, 1]; chunk = image slices per chunk (None: one pass)."""
        emb = self.system.trunk(z)
        return decode_embedding(self.system.head, emb, chunk)

    def _volume(self, model_units: torch.Tensor, seed: int, label: int | None) -> GeneratedVolume:
        arr = model_units.cpu().numpy().astype(np.float32)
        return GeneratedVolume(data=to_modality_units(arr, self.modality), spacing=self.spacing,
                               seed=seed, label=label, modality=self.modality, model_units=arr)

    def sample(self, num: int = 1, seed: int = 0, label: int | str | None = None,
               chunk: int | None = None) -> list[GeneratedVolume]:
        """`num` volumes; volume i uses latent seed `seed + i`, so each is reproducible alone."""
        index = self._label(label)
        return [self._volume(self.decode(self.latent(seed + i, index), chunk)[0, 0], seed + i, index)
                for i in range(num)]

    def interpolate(self, seed_a: int, seed_b: int, steps: int = 8, label: int | str | None = None,
                    chunk: int | None = None) -> np.ndarray:
        """A latent walk [steps, D, H, W] (modality units), spherical interpolation between two seeds."""
        index = self._label(label)
        za = torch.randn(1, self.cfg.latent_dim, generator=torch.Generator().manual_seed(seed_a))
        zb = torch.randn(1, self.cfg.latent_dim, generator=torch.Generator().manual_seed(seed_b))
        frames = []
        for t in np.linspace(0.0, 1.0, steps):
            z = _slerp(za, zb, float(t))
            z = self.system.condition(z, None if index is None else torch.tensor([index]))[0].to(self.device)
            frames.append(to_modality_units(self.decode(z, chunk)[0, 0].cpu().numpy(), self.modality))
        return np.stack(frames).astype(np.float32)

    @torch.no_grad()
    def consistency(self, volume: np.ndarray, model_units: bool = False) -> ConsistencyMap:
        """The CRF's per-patch marginals and neighbour agreement for a (D, H, W) volume.

        The volume (generated or loaded, already at the model's size) is embedded by
        the half-encoder E^H; each patch's unary is the D^H logit of the slabs it spans.
        """
        if not self.has_crf:
            raise ValueError(f"a {self.checkpoint.model} model has no CRF; consistency maps need a CRF-GAN checkpoint")
        cfg, system = self.cfg, self.system
        if volume.shape != (cfg.size,) * 3:
            raise ValueError(f"volume shape {volume.shape} is not the model's {(cfg.size,) * 3}")
        v = volume if model_units else from_modality_units(volume, self.modality)
        x = torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32, device=self.device)[None, None]
        emb = system.encoder(x)
        slab_logits = torch.cat([system.d_high(x[:, :, s:s + cfg.slab], s)[:, :1]
                                 for s in range(0, cfg.size, cfg.slab)], dim=1)[0]  # [size / slab]
        gd, gh, gw = cfg.crf_grid
        per_node_slabs = slab_logits.view(gd, -1).mean(dim=1)  # patches along D span whole slabs
        unary = per_node_slabs.repeat_interleave(gh * gw)[None]
        _, logits = system.crf(emb, unary)
        pairwise = system.crf.pairwise(emb)[0]
        agreement = torch.zeros(cfg.crf_nodes, device=self.device)
        degree = torch.zeros(cfg.crf_nodes, device=self.device)
        for i, j in system.crf.neighbours():
            agreement[i] += pairwise[i, j]
            agreement[j] += pairwise[i, j]
            degree[i] += 1
            degree[j] += 1
        agreement = agreement / degree.clamp_min(1)
        patch = np.array([cfg.size // g for g in cfg.crf_grid], dtype=float)
        spacing = np.array(self.spacing, dtype=float)
        return ConsistencyMap(
            marginals=torch.sigmoid(logits[0]).view(gd, gh, gw).cpu().numpy(),
            agreement=agreement.view(gd, gh, gw).cpu().numpy(),
            scale=tuple(patch * spacing),
            translate=tuple((patch - 1) / 2 * spacing),
        )


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    cos = F.cosine_similarity(a, b).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(cos)
    if float(omega) < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)
