"""Full-resolution sampling from a checkpoint, latent walks, CRF consistency maps.

Decoding itself (one pass or chunked, with whole-volume GroupNorm statistics) is
`model.decoding.decode_embedding`, shared with the trainer's preview.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import from_modality_units, to_modality_units, write_nifti
from .model import display_name, uses_masks
from .runtime import Checkpoint, load_checkpoint, resolve_device


def sample_path(folder: str | Path, seed: int) -> Path:
    """Where `crfgan sample` and the demo write the volume of latent seed `seed`."""
    return Path(folder) / f"sample_seed{seed:04d}.nii.gz"


def refuse_existing(paths: list[Path], overwrite: bool) -> list[Path]:
    """`paths`, after refusing (FileExistsError) to replace existing files unless `overwrite`."""
    taken = [p for p in paths if p.exists()]
    if taken and not overwrite:
        which = f"{taken[0]} and {len(taken) - 1} more files exist" if len(taken) > 1 else f"{taken[0]} exists"
        raise FileExistsError(f"{which} already; pass --overwrite to replace them, or choose another output folder")
    return paths


def training_orientation(data: dict) -> tuple[str, tuple | None]:
    """(voxel order axis codes, 3x3 direction of the (D, H, W) axes in world (z, y, x)) recorded for
    the training data (VolumeDataset.summary: "orientation", "direction"); ("RAS", None) when absent."""
    codes = data.get("orientation")
    codes = codes if isinstance(codes, str) and len(codes) == 3 and set(codes) <= set("LRAPSI") else "RAS"
    try:
        direction = np.asarray(data.get("direction"), dtype=np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        return codes, None
    if not np.isfinite(direction).all() or abs(np.linalg.det(direction)) < 1e-3:
        return codes, None
    return codes, tuple(tuple(float(v) for v in row) for row in direction)


@dataclass
class GeneratedVolume:
    data: np.ndarray  # (D, H, W) float32 in the modality's units (HU for CT)
    spacing: tuple[float, float, float]  # mm
    seed: int
    label: int | None
    modality: str
    model_units: np.ndarray = field(repr=False)  # the same volume in [-1, 1]
    orientation: str = "RAS"  # voxel order of the training files, written on disk
    direction: tuple | None = None  # (D, H, W) axis directions in world (z, y, x) of the training data

    def save(self, path: str | Path) -> Path:
        """NIfTI at the volume's spacing, with the training data's direction and voxel order (origin 0)."""
        write_nifti(path, self.data, self.spacing, direction=self.direction, orientation=self.orientation)
        return Path(path)


@dataclass
class ConsistencyMap:
    """The trained CRF's view of a volume, one value per embedding patch.

    verdicts: sigmoid of the CRF's per-patch logits after mean field. The unary is
      D^H's real/fake logit of the slabs a patch spans; the pairwise terms re-weight it
      by the patch's similarity to the others under the learned W. So a value is D^H's
      verdict on that part of the volume, smoothed by the CRF: near 1 the CRF, like
      D^H, takes it for real, near 0 for generated, 0.5 where D^H is undecided (the
      update is odd in the unary). It is not a calibrated probability of consistency.
    agreement: mean pairwise potential cos(f_i, f_j) * W_sym[i, j] between each patch and
      its face neighbours: how strongly the learned weights tie it to its neighbours.
    scale / translate: napari layer geometry (mm) placing each patch over the voxels it covers.
    """

    verdicts: np.ndarray  # [gD, gH, gW]
    agreement: np.ndarray  # [gD, gH, gW]
    scale: tuple[float, float, float]
    translate: tuple[float, float, float]


class Sampler:
    """A trained generator loaded from a checkpoint, ready to sample on one device."""

    def __init__(self, checkpoint: str | Path | Checkpoint, device: str = "auto") -> None:
        self.checkpoint = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if uses_masks(self.checkpoint.model):
            raise ValueError(f"{self.checkpoint.describe()} is a {display_name(self.checkpoint.model)} model, which "
                             "makes volumes from label masks, not latent codes: use crfgan synthesize --mask")
        self.device = resolve_device(device)
        self.system = self.checkpoint.build(self.device)
        self.cfg = self.checkpoint.config
        data = self.checkpoint.data
        self.modality: str = data.get("modality", "mri")
        self.spacing = tuple(float(s) for s in data.get("spacing", (1.0, 1.0, 1.0)))
        self.class_names: list[str] = list(data.get("class_names") or [])
        self.orientation, self.direction = training_orientation(data)

    @property
    def has_crf(self) -> bool:
        """A trained CRF to compute consistency maps with (a generator-only checkpoint has none)."""
        return not self.checkpoint.generator_only and getattr(self.system, "crf", None) is not None

    def no_crf_reason(self) -> str:
        if self.checkpoint.generator_only:
            return "a generator-only (pretrained) checkpoint holds no CRF, encoder or discriminator weights"
        return f"a {display_name(self.checkpoint.model)} model has no CRF"

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
        return self.system.generate(z, chunk)

    def _volume(self, model_units: torch.Tensor, seed: int, label: int | None) -> GeneratedVolume:
        arr = model_units.cpu().numpy().astype(np.float32)
        return GeneratedVolume(data=to_modality_units(arr, self.modality), spacing=self.spacing,
                               seed=seed, label=label, modality=self.modality, model_units=arr,
                               orientation=self.orientation, direction=self.direction)

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

    def write_samples(self, out: str | Path, num: int, seed: int = 0, label: int | str | None = None,
                      chunk: int | None = None, progress=None, overwrite: bool = False) -> list[Path]:
        """Write volumes seed .. seed + num - 1 as `out/sample_seedNNNN.nii.gz`, one at a time (bounded memory).

        Files of those names already in `out` are refused before anything is written, unless `overwrite`."""
        paths = refuse_existing([sample_path(out, seed + i) for i in range(num)], overwrite)
        for i, path in enumerate(paths):
            (vol,) = self.sample(1, seed=seed + i, label=label, chunk=chunk)
            vol.save(path)
            if progress is not None:
                progress(i + 1, num)
        return paths

    def write_walk(self, out: str | Path, seed_a: int, seed_b: int, steps: int, label: int | str | None = None,
                   chunk: int | None = None, overwrite: bool = False) -> list[Path]:
        """Write a latent walk as `out/walk_A_B_II.nii.gz`, frame by frame (existing names refused as above)."""
        paths = refuse_existing([Path(out) / f"walk_{seed_a}_{seed_b}_{i:02d}.nii.gz" for i in range(steps)],
                                overwrite)
        walk = self.interpolate(seed_a, seed_b, steps=steps, label=label, chunk=chunk)
        return [write_nifti(path, frame, self.spacing, direction=self.direction, orientation=self.orientation)
                for path, frame in zip(paths, walk)]

    @torch.no_grad()
    def consistency(self, volume: np.ndarray, model_units: bool = False) -> ConsistencyMap:
        """The CRF's per-patch verdicts and neighbour agreement for a (D, H, W) volume.

        The volume (generated or loaded, already at the model's size) is embedded by
        the half-encoder E^H; each patch's unary is the D^H logit of the slabs it spans.
        """
        if not self.has_crf:
            raise ValueError(f"{self.no_crf_reason()}; consistency maps need a CRF-GAN training checkpoint")
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
        logits = system.crf(emb, unary).node_logits
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
            verdicts=torch.sigmoid(logits[0]).view(gd, gh, gw).cpu().numpy(),
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
