"""napari reader for NIfTI volumes (.nii, .nii.gz), through napari_crfgan.data.read_nifti.

Layers are (D, H, W) arrays of the RAS-canonical image ((T, D, H, W) for a 4D file:
time or channel is the first napari axis). The layer's transform carries the file's
full geometry: ``scale``, ``rotate``, ``shear`` and ``translate`` map the voxel index
to the file's world millimetres in (z, y, x) order (napari's data -> physical
transform), so oblique scans keep their rotation and volumes with different grids
overlay. The data are never flipped.

Display orientation: napari draws world axis 1 downwards and axis 2 rightwards, which
would show axial slices with anterior at the bottom. The layer's ``affine`` (napari's
physical -> world transform) therefore holds only a display orientation, chosen by the
environment variable ``CRFGAN_DISPLAY_ORIENTATION`` (or the ``orientation`` argument of
:func:`read_volume_layers`):

- ``radiological`` (default): as Slicer and ITK-SNAP: axial slices with anterior at the
  top and the patient's right on the screen's left; coronal and sagittal with superior at
  the top (world axes negated: napari's world coordinates are (-z, -y, -x) of the file).
- ``neurological``: the same with the patient's right on the screen's right ((-z, -y, x)).
- ``none``: no display transform; napari's world coordinates are the file's (z, y, x).

Labels: a file opens as a Labels layer (integer data, its stored dtype) when its stored
values are integers without scl_slope / scl_inter, none is negative, and either its header
intent is NIFTI_INTENT_LABEL, or it has at most 256 distinct values and its file name
contains "seg", "label", "mask" or "parc", or it has at most 64 distinct values. Anything
else is a float32 image layer.

The file's affine and a few header fields go into the layer's metadata ("affine",
"header"), with "nifti", the record the writer needs to write the layer back like its
file. No napari import is needed: the reader returns layer data tuples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data import read_nifti
from .data.nifti import (INTENT_LABEL, display_matrix, display_orientation, layer_transform, make_geometry,
                         nifti_record)
from .data.preprocess import detect_modality

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: CT display window, lung to soft tissue (level -300 HU, width 1400 HU)
CT_WINDOW = (-1000.0, 400.0)
#: file name parts that mark a label map (lower case)
LABEL_NAME_HINTS = ("seg", "label", "mask", "parc")
#: most distinct values of a label map named as one / of any other integer file opened as labels
MAX_LABELS_NAMED = 256
MAX_LABELS = 64
#: metadata key naming the display orientation a layer's ``affine`` holds
DISPLAY_KEY = "display_orientation"


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


def geometry_kwargs(geometry, ndim: int, display: str | None = None) -> dict:
    """``scale``, ``translate``, ``rotate``, ``shear`` of a (D, H, W) -> (z, y, x) mm geometry,
    and, with ``display``, the ``affine`` of that display orientation."""
    kwargs = layer_transform(geometry, ndim)
    if display is not None:
        kwargs["affine"] = display_matrix(display, ndim)
    return kwargs


def image_layer_kwargs(name: str, data: np.ndarray, spacing, origin=None, modality: str | None = None,
                       metadata: dict | None = None, *, geometry=None, display: str | None = None) -> dict:
    """napari image-layer keyword arguments for a volume in mm: every image layer of the plugin is made by this.

    A 4D array (a latent walk: frames, D, H, W) gets a unit scale on its first axis.
    ``geometry`` (4x4, (D, H, W) -> (z, y, x) mm) replaces spacing and origin with the full
    transform (rotation and shear too); ``display`` (a display orientation name) adds its
    ``affine`` and is recorded in the metadata, so the writer can take it off again.
    """
    metadata = dict(metadata or {})
    if geometry is not None or display is not None:
        if geometry is None:
            geometry = make_geometry(spacing, origin if origin is not None else (0.0, 0.0, 0.0))
        kwargs = geometry_kwargs(geometry, data.ndim, display)
        if display is not None:
            metadata[DISPLAY_KEY] = display
        return {"name": name, **kwargs, "metadata": metadata,
                "contrast_limits": display_limits(data, modality), "colormap": "gray"}
    scale = tuple(float(s) for s in spacing)
    translate = tuple(float(o) for o in origin) if origin is not None else (0.0,) * len(scale)
    if data.ndim == len(scale) + 1:
        scale, translate = (1.0, *scale), (0.0, *translate)
    return {"name": name, "scale": scale, "translate": translate, "metadata": metadata,
            "contrast_limits": display_limits(data, modality), "colormap": "gray"}


def _distinct_at_most(data: np.ndarray, limit: int) -> bool:
    """True when integer ``data`` holds at most ``limit`` distinct values (stops early when not)."""
    flat = data.reshape(-1)
    if not flat.size:
        return True
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < limit:
        return True
    step = 1 << 20
    if hi - lo < 1 << 16:
        counts = np.zeros(hi - lo + 1, dtype=np.int64)
        for start in range(0, flat.size, step):
            counts += np.bincount(flat[start:start + step].astype(np.int64) - lo, minlength=counts.size)
            if np.count_nonzero(counts) > limit:
                return False
        return True
    seen = np.empty(0, dtype=flat.dtype)
    for start in range(0, flat.size, step):
        seen = np.union1d(seen, flat[start:start + step])
        if seen.size > limit:
            return False
    return True


def is_label_volume(data: np.ndarray, name: str, header: dict | None = None) -> bool:
    """The Labels rule (module docstring): integer data, none negative, and a label intent,
    or at most 256 distinct values with a label-like name, or at most 64 distinct values."""
    header = header or {}
    if data.dtype.kind not in "iu" or header.get("scl_slope") is not None or not data.size:
        return False
    if data.dtype.kind == "i" and int(data.min()) < 0:
        return False
    if int(header.get("intent_code", 0)) == INTENT_LABEL:
        return True
    named = any(hint in name.lower() for hint in LABEL_NAME_HINTS)
    return _distinct_at_most(data, MAX_LABELS_NAMED if named else MAX_LABELS)


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


def read_volume_layers(path, orientation: str | None = None, modality: str | None = None) -> list[tuple]:
    """[(data, kwargs, 'image' or 'labels')] for a NIfTI file (3D, or 4D as (T, D, H, W)).

    ``orientation``: the display orientation (default: ``CRFGAN_DISPLAY_ORIENTATION``, else
    radiological); ``modality`` ('ct' / 'mri') chooses the contrast limits (default: detected).
    """
    path = Path(_path(path))
    vol = read_nifti(path, allow_4d=True, keep_integers=True)
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    display = display_orientation(orientation)
    metadata = {"path": str(path), "spacing": vol.spacing, "origin": vol.origin,
                "affine": np.asarray(vol.affine), "header": dict(vol.header), "nifti": nifti_record(vol)}
    if is_label_volume(vol.data, name, vol.header):
        kwargs = {"name": name, **geometry_kwargs(vol.geometry, vol.data.ndim, display),
                  "metadata": {**metadata, DISPLAY_KEY: display}}
        return [(vol.data, kwargs, "labels")]
    data = vol.data if vol.data.dtype == np.float32 else vol.data.astype(np.float32)
    kwargs = image_layer_kwargs(name, data, vol.spacing, vol.origin, modality, metadata,
                                geometry=vol.geometry, display=display)
    return [(data, kwargs, "image")]
