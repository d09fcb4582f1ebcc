"""napari writers: an image layer (3D, or 4D as (T, D, H, W)) or a labels layer to NIfTI (.nii, .nii.gz),
through napari_crfgan.data.write_nifti_volume.

The layer's whole transform (scale, rotate, shear, translate and affine) is written as
the file's geometry, less the display orientation the reader put into its ``affine``
(named in the layer's metadata). A layer without that name whose ``affine`` is exactly a
display orientation's is taken to carry that display too: napari's "new labels" button
copies the selected image's transform, affine included, but not its metadata, and a
segmentation drawn over an image must be saved where the image is. Any other layer is
taken to be in the file's world frame, (z, y, x) RAS mm. A layer opened by the plugin is
written back like its file: voxel order, header, the original qform / sform and codes
while the layer has not been moved, and the stored dtype (with scl_slope / scl_inter)
wherever that is lossless.
So the reader gives back the same data, spacing, rotation and position.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.nifti import DISPLAY_ORIENTATIONS, compose_layer_transform, display_matrix, write_nifti_volume

#: metadata key of the display orientation (the reader's DISPLAY_KEY; the writer may not import the reader)
DISPLAY_KEY = "display_orientation"


def _volume(data) -> np.ndarray:
    if isinstance(data, (list, tuple)):  # a multiscale layer: its full-resolution level
        data = data[0]
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"NIfTI export takes a 3D (D, H, W) or 4D (T, D, H, W) layer; this layer has "
                         f"{data.ndim} dimensions")
    return data


def layer_display(meta: dict, ndim: int) -> str:
    """The display orientation in a layer's affine: named in its metadata, else recognised (see above)."""
    metadata = meta.get("metadata") or {}
    named = metadata.get(DISPLAY_KEY) if isinstance(metadata, dict) else None
    if named:
        return named
    affine = meta.get("affine")
    matrix = getattr(affine, "affine_matrix", affine)
    if matrix is not None and np.shape(matrix) == (ndim + 1, ndim + 1):
        for name in DISPLAY_ORIENTATIONS:
            if np.array_equal(np.asarray(matrix, dtype=float), display_matrix(name, ndim)):
                return name
    return "none"


def layer_geometry(meta: dict, ndim: int) -> np.ndarray:
    """The 4x4 (D, H, W) -> (z, y, x) mm geometry of a layer's spatial (last three) axes."""
    world = compose_layer_transform(meta, ndim)
    world = np.linalg.inv(display_matrix(layer_display(meta, ndim), ndim)) @ world
    keep = list(range(ndim - 3, ndim + 1))
    return world[np.ix_(keep, keep)]


def _write(path: str, data, meta: dict, labels: bool) -> list[str]:
    data = _volume(data)
    metadata = meta.get("metadata") or {}
    source = metadata.get("nifti") if isinstance(metadata, dict) else None
    name = str(path)
    if not name.lower().endswith((".nii", ".nii.gz")):
        name += ".nii.gz"
    geometry = layer_geometry(meta, data.ndim)
    return [str(write_nifti_volume(Path(name), data, geometry, source=source, labels=labels))]


def write_image(path: str, data, meta: dict) -> list[str]:
    """Write one 3D or 4D image layer; returns the written path."""
    return _write(path, data, meta, labels=False)


def write_labels(path: str, data, meta: dict) -> list[str]:
    """Write one labels layer as an integer NIfTI (intent label); returns the written path."""
    return _write(path, data, meta, labels=True)
