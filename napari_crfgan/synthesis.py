"""Volumes from label masks: a trained mask-to-volume checkpoint (pix2pix, spade) over a mask of any grid.

`Synthesizer(checkpoint)` loads one (a run folder, a checkpoint file); `volume(labels, spacing)` makes the
volume of a (D, H, W) label map in the modality's units (HU for CT); `write(mask, out)` reads a NIfTI
(or .npy) mask and writes the volume as NIfTI with the mask's affine and voxel order.

Spacing: the generator learned anatomy at the training data's voxel size (the checkpoint's, isotropic).
A mask of another spacing is resampled to it nearest-neighbour (labels stay labels), the volume made on
that grid and resampled back to the mask's grid (trilinear), so the output always has the mask's shape
and affine; `resample=False` (and a .npy mask, which has no spacing) uses the mask's grid as it is.

Memory: the generator runs on overlapping patches (model/blending.py), so it holds one patch's
activations and the output whatever the grid; the default overlap makes the blend equal one pass.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import read_nifti, to_modality_units
from .data.nifti import VolumeError, make_geometry, write_nifti_volume
from .data.paired import as_labels, read_labels
from .model import display_name, uses_masks
from .model.maskgan import default_patch, exact_overlap, synthesize
from .runtime import Checkpoint, load_checkpoint, resolve_device
from .sampling import refuse_existing

#: spacings closer than this (relative) to the training spacing are used without resampling
SAME_SPACING = 0.01


class Synthesizer:
    """A trained mask-to-volume generator loaded from a checkpoint, on one device."""

    def __init__(self, checkpoint: str | Path | Checkpoint, device: str = "auto") -> None:
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if not uses_masks(ckpt.model):
            raise ValueError(f"{ckpt.describe()} is a {display_name(ckpt.model)} model, which generates volumes from "
                             "latent codes, not from masks: use crfgan sample")
        self.checkpoint = ckpt
        self.system = ckpt.build(resolve_device(device))
        self.cfg = ckpt.config
        data = ckpt.data
        self.modality: str = data.get("modality", "ct")
        self.spacing = tuple(float(s) for s in data.get("spacing", (1.0, 1.0, 1.0)))
        masks = data.get("masks") if isinstance(data.get("masks"), dict) else {}
        names = masks.get("names") if isinstance(masks.get("names"), list) else []
        self.label_names: list[str] = [str(n) for n in names] or [str(k) for k in range(self.cfg.mask_classes)]

    @property
    def generator(self) -> torch.nn.Module:
        return self.system.sampling_networks()[0]

    def patching(self, patch: int | None = None, overlap: int | None = None) -> tuple[int, int]:
        """(patch side, overlap): the defaults bound memory and equal one pass (model.maskgan)."""
        return (default_patch(self.generator, self.cfg) if patch is None else int(patch),
                exact_overlap(self.generator) if overlap is None else int(overlap))

    def volume(self, labels: np.ndarray, spacing=None, patch: int | None = None, overlap: int | None = None,
               seed: int = 0, resample: bool = True) -> np.ndarray:
        """The volume (D, H, W) float32 in modality units of an integer label map (D, H, W) of voxel size
        `spacing` (mm, (D, H, W); None: the training spacing)."""
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"a mask is a 3D (D, H, W) label map, not an array of shape {labels.shape}")
        grid = tuple(labels.shape)
        x = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[None, None]
        target = self._training_grid(grid, spacing) if resample else grid
        if target != grid:
            x = F.interpolate(x, size=target, mode="nearest-exact")
        patch, overlap = self.patching(patch, overlap)
        y = synthesize(self.system, x, patch=patch, overlap=overlap, seed=seed).cpu()
        if target != grid:
            y = F.interpolate(y, size=grid, mode="trilinear", align_corners=False)
        return np.asarray(to_modality_units(y[0, 0].numpy(), self.modality), dtype=np.float32)

    def _training_grid(self, grid: tuple[int, ...], spacing) -> tuple[int, ...]:
        if spacing is None:
            return grid
        ratio = np.asarray(spacing, dtype=np.float64) / np.asarray(self.spacing, dtype=np.float64)
        if np.all(np.abs(ratio - 1) <= SAME_SPACING):
            return grid
        return tuple(max(1, int(round(n * r))) for n, r in zip(grid, ratio))

    def write(self, mask: str | Path, out: str | Path, overwrite: bool = False, patch: int | None = None,
              overlap: int | None = None, seed: int = 0, resample: bool = True) -> Path:
        """Synthesize the volume of the mask file `mask` and write it to `out` (.nii or .nii.gz), on the mask's
        grid with its affine and voxel order; an existing `out` is refused unless `overwrite`."""
        out = Path(out)
        if not out.name.lower().endswith((".nii", ".nii.gz")):
            raise ValueError(f"the output {out} must be a NIfTI file name (.nii.gz or .nii)")
        refuse_existing([out], overwrite)
        mask = Path(mask)
        try:
            if mask.name.lower().endswith(".npy"):  # no spacing, no affine: the training grid's voxel size
                labels, spacing, geometry, order = read_labels(mask), None, make_geometry(self.spacing), "RAS"
            else:
                vol = read_nifti(mask, keep_integers=True)
                labels, spacing, geometry = as_labels(vol.data), vol.spacing, vol.geometry
                order = vol.header.get("orientation", "RAS")
        except VolumeError as e:
            raise ValueError(f"the mask {mask} cannot be used: {e.reason}") from None
        if len(order) != 3 or "?" in order:
            order = "RAS"
        data = self.volume(labels, spacing, patch=patch, overlap=overlap, seed=seed, resample=resample)
        return write_nifti_volume(out, data, geometry, orientation=order)
