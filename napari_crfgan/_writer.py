"""napari writer: an image layer to NIfTI (.nii, .nii.gz), through napari_crfgan.data.write_nifti.

The layer's scale is written as the voxel spacing and its translate as the origin,
so the reader gives back the same data, spacing and position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import write_nifti


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write one 3D image layer; returns the written path."""
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"NIfTI export takes a 3D (D, H, W) layer; this layer has {data.ndim} dimensions")
    scale = tuple(float(s) for s in meta.get("scale", (1.0, 1.0, 1.0)))
    translate = tuple(float(t) for t in meta.get("translate", (0.0, 0.0, 0.0)))
    name = str(path)
    if not name.lower().endswith((".nii", ".nii.gz")):
        name += ".nii.gz"
    return [str(write_nifti(Path(name), data, scale, translate))]
