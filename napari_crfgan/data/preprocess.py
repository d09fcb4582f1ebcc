"""Modality presets: intensity normalisation to [-1, 1] and fitting into the model's cube.

CT (Hounsfield units):
    NaN -> -1024 HU; the HU window [-1024, 600] is mapped linearly to [-1, 1] and
    clipped; axial (D) slices at either end of the scan that are entirely background
    (no voxel above -500 HU: only air or padding) are trimmed.
MRI (arbitrary units):
    NaN -> the volume's minimum; robust scaling, the 0.5th / 99.5th percentiles map
    to -1 / 1, clipped.

Both then go through :func:`fit_to_cube`: the volume is resampled (trilinear, with
an average-pooling prefilter when shrinking by 2x or more) so that its largest
physical extent fills the cube of side ``size`` with isotropic voxels, and the other
axes are padded (centred) with the background value -1. Anatomy is never stretched.
:func:`preprocess_labels` puts a label mask of the same grid into the same cube: the
image's trimmed slices removed, nearest-neighbour resampling, padded with label 0.
:func:`resampling_problem` says when that fit is extreme (an axis of fewer than 8
voxels, fitted into a single slice of the cube, or upsampled more than 4x).

:func:`to_modality_units` maps a model output in [-1, 1] back: CT -> HU (inverse of
the window), MRI -> [0, 1] normalised intensity; :func:`from_modality_units` is its
inverse (for volumes given in modality units, e.g. loaded from a file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "MODALITIES",
    "HU_WINDOW",
    "Preprocessing",
    "normalize_ct",
    "normalize_mri",
    "trim_background_slices",
    "fit_to_cube",
    "fitted_shape",
    "resampling_problem",
    "preprocess_volume",
    "preprocess_labels",
    "to_modality_units",
    "from_modality_units",
    "detect_modality",
]

MODALITIES = ("ct", "mri")
#: Hounsfield window mapped to [-1, 1] (the window of the HA-GAN and CRF-GAN reference code)
HU_WINDOW = (-1024.0, 600.0)
#: CT value used for missing (NaN) voxels
CT_NAN_HU = -1024.0
#: raw minimum at or below which a volume is taken for CT in Hounsfield units
CT_DETECT_MIN_HU = -500.0
#: background value of normalised volumes (padding)
BACKGROUND = -1.0
#: a volume with fewer voxels than this along an axis is too thin or too small to show anatomy
MIN_VOXELS = 8
#: stretching an axis more than this many times makes the cube show interpolation, not anatomy
MAX_UPSAMPLING = 4.0


@dataclass(frozen=True)
class Preprocessing:
    """Settings that turn a raw volume into a model input cube.

    Parameters
    ----------
    modality : 'ct' or 'mri'.
    size : side of the output cube in voxels.
    hu_window : (low, high) HU mapped to (-1, 1) for CT.
    percentiles : (low, high) percentiles mapped to (-1, 1) for MRI.
    trim_background : trim all-background axial slices at both ends (CT only).
    background_hu : a CT slice is background when no voxel exceeds this value.
    """

    modality: str
    size: int
    hu_window: tuple[float, float] = HU_WINDOW
    percentiles: tuple[float, float] = (0.5, 99.5)
    trim_background: bool = True
    background_hu: float = CT_DETECT_MIN_HU

    def __post_init__(self):
        modality = str(self.modality).lower()
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        object.__setattr__(self, "modality", modality)
        if int(self.size) != self.size or self.size < 2:
            raise ValueError(f"size must be an integer >= 2, got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))
        object.__setattr__(self, "hu_window", tuple(float(v) for v in self.hu_window))
        object.__setattr__(self, "percentiles", tuple(float(v) for v in self.percentiles))
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError("percentiles must be (low, high) within [0, 100] with low < high")

    def as_dict(self) -> dict:
        """Plain dict of the settings (JSON-serialisable; used in cache keys and checkpoints)."""
        d = asdict(self)
        d["hu_window"] = list(self.hu_window)
        d["percentiles"] = list(self.percentiles)
        return d

    def __call__(self, data: np.ndarray, spacing) -> tuple[np.ndarray, tuple[float, float, float]]:
        return preprocess_volume(data, spacing, self)

    def resampling_problem(self, data: np.ndarray, spacing) -> str | None:
        """:func:`resampling_problem` of the volume these settings fit into the cube (after CT trimming)."""
        if self.modality == "ct" and self.trim_background:
            data = trim_background_slices(np.asarray(data, dtype=np.float32), self.background_hu)
        return resampling_problem(data.shape, spacing, self.size)


def normalize_ct(data: np.ndarray, hu_window=HU_WINDOW) -> np.ndarray:
    """HU -> [-1, 1]: NaN -> -1024, linear window ``hu_window`` -> [-1, 1], clipped."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    x = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=CT_NAN_HU)
    out = np.asarray((x - lo) * np.float32(2.0 / (hi - lo)) - np.float32(1.0))
    return np.clip(out, -1.0, 1.0, out=out).astype(np.float32, copy=False)


def normalize_mri(data: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """Robust scaling: NaN -> minimum; percentiles ``(low, high)`` -> (-1, 1), clipped.

    Falls back to min / max when the two percentiles coincide.
    """
    x = np.asarray(data, dtype=np.float32)
    if not np.isfinite(x).all():
        x = np.nan_to_num(x, nan=float(np.nanmin(x)))
    lo, hi = (float(v) for v in np.percentile(x, percentiles))
    if hi <= lo:
        lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.full(x.shape, BACKGROUND, dtype=np.float32)
    out = np.asarray((x - np.float32(lo)) * np.float32(2.0 / (hi - lo)) - np.float32(1.0))
    return np.clip(out, -1.0, 1.0, out=out).astype(np.float32, copy=False)


def trim_background_slices(data: np.ndarray, threshold: float) -> np.ndarray:
    """Drop the leading and trailing axial (D) slices whose voxels are all <= ``threshold``.

    Interior slices are kept (removing them would distort the anatomy). A volume
    that is background everywhere is returned unchanged.
    """
    return data[background_trim(data, threshold)]


def background_trim(data: np.ndarray, threshold: float) -> slice:
    """The axial (D) slices :func:`trim_background_slices` keeps (all of them for an all-background volume)."""
    x = np.nan_to_num(data, nan=-np.inf) if np.isnan(data).any() else data
    keep = np.flatnonzero(x.reshape(x.shape[0], -1).max(axis=1) > threshold)
    if keep.size == 0:
        return slice(None)
    return slice(int(keep[0]), int(keep[-1]) + 1)


def fitted_shape(shape, spacing, size: int) -> tuple[int, int, int]:
    """Voxels a (D, H, W) volume of ``shape`` and ``spacing`` occupies in the cube (see :func:`fit_to_cube`)."""
    extent = np.asarray(shape, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)
    iso = float(extent.max() / size)
    return tuple(int(min(size, max(1, round(e / iso)))) for e in extent)


def resampling_problem(shape, spacing, size: int) -> str | None:
    """Why fitting a (D, H, W) volume into the ``size``^3 cube is extreme, or None when it is not.

    Extreme along an axis: fewer than :data:`MIN_VOXELS` voxels in the volume, a single
    slice of the cube, or more than :data:`MAX_UPSAMPLING` times as many voxels as the volume.
    """
    shape = tuple(int(n) for n in shape)
    target = fitted_shape(shape, spacing, size)
    axes = "zyx"  # (D, H, W) of the RAS-canonical image
    few = [a for a, n in zip(axes, shape) if n < MIN_VOXELS]
    flat = [a for a, t in zip(axes, target) if t < 2]
    up = max(t / n for n, t in zip(shape, target))
    why = []
    if few:
        why.append(f"fewer than {MIN_VOXELS} voxels along {', '.join(few)}")
    if flat:
        why.append(f"a single slice of the cube along {', '.join(flat)}")
    if up > MAX_UPSAMPLING:
        why.append(f"upsampled {up:.3g}x")
    if not why:
        return None
    return (f"{'x'.join(map(str, shape))} voxels (z, y, x) become {'x'.join(map(str, target))} "
            f"in the {size}^3 cube: {'; '.join(why)}")


def fit_to_cube(
    data: np.ndarray, spacing, size: int, background: float = BACKGROUND, labels: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Resample ``data`` (D, H, W) into a ``size``^3 cube keeping the physical aspect.

    The largest physical extent (voxels x spacing) fills the cube; the output voxels
    are isotropic with spacing ``max_extent / size`` mm; the shorter axes are padded
    on both sides (centred) with ``background``. Returns ``(cube, (s, s, s))``.
    ``labels``: a label map, resampled nearest-neighbour (voxel centres aligned as the
    trilinear resampling aligns them) without the prefilter, so labels stay labels.
    """
    import torch
    import torch.nn.functional as F

    data = np.asarray(data, dtype=np.float32)
    spacing = np.asarray([float(s) for s in spacing], dtype=np.float64)
    if data.ndim != 3 or spacing.shape != (3,) or (spacing <= 0).any():
        raise ValueError(f"fit_to_cube needs a 3D array and 3 positive spacings, got {data.shape}, {spacing}")
    iso = float((np.asarray(data.shape, dtype=np.float64) * spacing).max() / size)
    target = fitted_shape(data.shape, spacing, size)

    t = torch.from_numpy(np.ascontiguousarray(data))[None, None]
    # anti-aliasing: average-pool by the integer part of the shrink factor first
    kernel = tuple(max(1, int(n // m)) for n, m in zip(data.shape, target))
    if max(kernel) > 1 and not labels:
        t = F.avg_pool3d(t, kernel_size=kernel, stride=kernel, ceil_mode=True, count_include_pad=False)
    if tuple(t.shape[2:]) != target:
        t = F.interpolate(t, size=target, mode="nearest-exact" if labels else "trilinear",
                          **({} if labels else {"align_corners": False}))
    resized = t[0, 0].numpy()

    cube = np.full((size, size, size), background, dtype=np.float32)
    starts = [(size - n) // 2 for n in target]
    cube[
        starts[0] : starts[0] + target[0],
        starts[1] : starts[1] + target[1],
        starts[2] : starts[2] + target[2],
    ] = resized
    return cube, (iso, iso, iso)


def preprocess_volume(
    data: np.ndarray, spacing, preprocessing: Preprocessing
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Raw volume -> ``(cube [size]^3 float32 in [-1, 1], isotropic spacing (s, s, s) mm)``."""
    p = preprocessing
    if p.modality == "ct":
        x = np.asarray(data, dtype=np.float32)
        if p.trim_background:
            x = trim_background_slices(x, p.background_hu)
        x = normalize_ct(x, p.hu_window)
    else:
        x = normalize_mri(data, p.percentiles)
    cube, iso = fit_to_cube(x, spacing, p.size, BACKGROUND)
    np.clip(cube, -1.0, 1.0, out=cube)
    return cube, iso


def preprocess_labels(
    labels: np.ndarray, image: np.ndarray, spacing, preprocessing: Preprocessing
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A label mask on the grid of the raw ``image`` -> the cube :func:`preprocess_volume` puts the image in
    (float32 labels, padded with 0), and the same isotropic spacing."""
    p = preprocessing
    if p.modality == "ct" and p.trim_background:
        labels = labels[background_trim(np.asarray(image, dtype=np.float32), p.background_hu)]
    return fit_to_cube(np.asarray(labels, dtype=np.float32), spacing, p.size, background=0.0, labels=True)


def to_modality_units(volume, modality: str, hu_window=HU_WINDOW):
    """Map a volume in [-1, 1] to modality units: CT -> HU, MRI -> [0, 1].

    Works on NumPy arrays and torch tensors (and plain floats); values outside
    [-1, 1] are clipped first.
    """
    modality = str(modality).lower()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if hasattr(volume, "clamp"):
        v = volume.clamp(-1.0, 1.0)
    else:
        v = np.clip(volume, -1.0, 1.0)
        if isinstance(v, np.ndarray) and v.dtype.kind != "f":
            v = v.astype(np.float32)
    unit = (v + 1.0) * 0.5
    if modality == "mri":
        return unit
    lo, hi = float(hu_window[0]), float(hu_window[1])
    return unit * (hi - lo) + lo


def from_modality_units(volume, modality: str, hu_window=HU_WINDOW):
    """Inverse of :func:`to_modality_units`: CT HU or MRI [0, 1] -> [-1, 1] (clipped).

    CT uses the HU window (values outside it clip to -1 / 1); MRI maps [0, 1]
    linearly. Works on NumPy arrays, torch tensors and floats.
    """
    modality = str(modality).lower()
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if modality == "ct":
        lo, hi = float(hu_window[0]), float(hu_window[1])
        v = (volume - lo) * (2.0 / (hi - lo)) - 1.0
    else:
        v = volume * 2.0 - 1.0
    if hasattr(v, "clamp"):
        return v.clamp(-1.0, 1.0)
    return np.clip(v, -1.0, 1.0)


def detect_modality(raw_min: float) -> str:
    """'ct' when the raw minimum looks like Hounsfield units (<= -500), else 'mri'."""
    return "ct" if float(raw_min) <= CT_DETECT_MIN_HU else "mri"
