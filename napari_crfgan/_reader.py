"""napari reader for NIfTI volumes (.nii, .nii.gz), through napari_crfgan.data.read_nifti.

Layers are (D, H, W) arrays of the RAS-canonical image, scaled by the voxel spacing
(mm) and translated to the file's origin, so volumes with different grids overlay
in world coordinates. The file's affine and a few header fields go into the
layer's metadata. No napari import is needed: the reader returns layer data tuples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import read_nifti
from .data.preprocess import detect_modality

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: CT display window, lung to soft tissue (level -300 HU, width 1400 HU)
CT_WINDOW = (-1000.0, 400.0)


def display_limits(data: np.ndarray, modality: str | None = None) -> tuple[float, float]:
    """Contrast limits: CT the lung/soft-tissue window; MRI [0, 1] when normalised, else 0.5-99.5 percentiles."""
    finite = data[np.isfinite(data)] if data.size else np.zeros(1)
    if modality is None:
        modality = detect_modality(float(finite.min())) if finite.size else "mri"
    if modality == "ct":
        return CT_WINDOW
    lo, hi = float(finite.min()), float(finite.max())
    if lo >= 0.0 and hi <= 1.0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(finite[:: max(1, finite.size // 2_000_000)], (0.5, 99.5)))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def image_layer_kwargs(name: str, data: np.ndarray, spacing, origin=None, modality: str | None = None,
                       metadata: dict | None = None) -> dict:
    """napari image-layer keyword arguments for a volume in mm: every layer of the plugin is made by this.

    A 4D array (a latent walk: frames, D, H, W) gets a unit scale on its first axis.
    """
    scale = tuple(float(s) for s in spacing)
    translate = tuple(float(o) for o in origin) if origin is not None else (0.0,) * len(scale)
    if data.ndim == len(scale) + 1:
        scale, translate = (1.0, *scale), (0.0, *translate)
    return {"name": name, "scale": scale, "translate": translate, "metadata": dict(metadata or {}),
            "contrast_limits": display_limits(data, modality), "colormap": "gray"}


def _path(path) -> str | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    name = str(path)
    return name if name.lower().endswith(NIFTI_SUFFIXES) else None


def get_reader(path):
    """The reader for one .nii / .nii.gz path, or None (napari then tries other readers)."""
    return read_volume_layers if _path(path) is not None else None


def read_volume_layers(path) -> list[tuple]:
    """[(data, kwargs, 'image')] for a NIfTI file."""
    path = Path(_path(path))
    vol = read_nifti(path)
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    metadata = {"path": str(path), "spacing": vol.spacing, "origin": vol.origin,
                "affine": np.asarray(vol.affine), "header": dict(vol.header)}
    return [(vol.data, image_layer_kwargs(name, vol.data, vol.spacing, vol.origin, metadata=metadata), "image")]
