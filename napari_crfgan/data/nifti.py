"""Reading and writing volumes: NIfTI (``.nii``, ``.nii.gz``) and NumPy (``.npy``).

Array convention used throughout the package: a volume is a float32 array with
axes ``(D, H, W) = (z, y, x)`` of the RAS-canonical image (the file is first
reoriented with :func:`nibabel.as_closest_canonical`, then its ``(x, y, z)`` array
is transposed). ``D`` is therefore the inferior -> superior (axial) axis, ``H``
posterior -> anterior and ``W`` left -> right (towards the patient's right).
Spacing and origin are 3-tuples in millimetres in the same ``(D, H, W)`` order.

:func:`write_nifti` is the inverse of :func:`read_nifti`: it writes an axis-aligned
RAS affine, so ``read_nifti(write_nifti(p, x, s))`` returns ``x`` and ``s``.
Spacing is stored by NIfTI as float32; it is rounded to 1e-5 mm on reading (and
the origin to 1e-4 mm) so values such as 0.7 come back exactly as written.
"""

from __future__ import annotations

import logging
import os
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_path

__all__ = [
    "VolumeError",
    "NiftiVolume",
    "read_nifti",
    "write_nifti",
    "load_volume",
    "is_volume_file",
    "check_regular_file",
    "VOLUME_SUFFIXES",
]

#: file name endings recognised as volumes
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")

_SPACING_DECIMALS = 5
#: smallest usable voxel size in mm (a smaller one would round to 0)
_MIN_SPACING = 10.0**-_SPACING_DECIMALS
_ORIGIN_DECIMALS = 4


class VolumeError(ValueError):
    """A file that cannot be used as a 3D volume; ``reason`` is a short human reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class NiftiVolume:
    """A volume read from a NIfTI file.

    Attributes
    ----------
    data : float32 array (D, H, W) of the RAS-canonical image.
    spacing : (sd, sh, sw) voxel size in mm.
    origin : world position in mm of voxel ``[0, 0, 0]``, in (D, H, W) = (z, y, x) order.
    affine : the file's original 4x4 affine (before reorientation).
    header : a few plain fields of the header (original shape, dtype, orientation...).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: dict[str, Any] = field(default_factory=dict)


def is_volume_file(path: str | os.PathLike) -> bool:
    """True when the file name ends with a recognised volume suffix."""
    name = os.fspath(path).lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for s in VOLUME_SUFFIXES:
        if name.endswith(s):
            return s
    return path.suffix.lower()


def _squeeze_to_3d(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after dropping trailing singleton dimensions beyond the third."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _check_shape(shape: tuple[int, ...]) -> None:
    """Raise :class:`VolumeError` unless ``shape`` (as stored in the file) is one 3D volume."""
    text = "x".join(str(int(n)) for n in shape)
    if len(shape) == 0 or int(np.prod(shape)) == 0:
        raise VolumeError(f"empty volume (shape {text})")
    squeezed = _squeeze_to_3d(shape)
    if len(squeezed) > 3:
        n = int(np.prod(squeezed[3:]))
        raise VolumeError(f"4D image with {n} volumes (shape {text}); expected a single 3D volume")
    thick = sum(n >= 2 for n in squeezed)  # axes with at least 2 voxels
    if len(squeezed) < 3 or thick < 3:
        what = ["a single voxel", "a line of voxels (1D)", "a single slice (2D)"][thick]
        if len(squeezed) == 2 and thick == 2:
            what = "a 2D image"
        raise VolumeError(f"shape {text} is {what}, not a 3D volume")


def check_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`VolumeError` unless ``path`` is a regular file (links are followed).

    Only ``stat`` is used: opening a named pipe would block until something writes to it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise VolumeError("broken symbolic link" if os.path.islink(path) else "file not found") from None
    if stat.S_ISREG(mode):
        return
    kinds = [(stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    raise VolumeError(f"not a regular file ({kind})")


class _Collect(logging.Filter):
    """Logging filter that keeps the messages for us instead of letting them print."""

    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.messages.append(" ".join(record.getMessage().split()))
        return False


@contextmanager
def _nibabel_header_fixes(path: Path):
    """Re-issue nibabel's header fixes (e.g. negative pixdim -> abs) as one warning naming the file.

    nibabel prints them to stderr through its own logger, without the file name.
    """
    from nibabel.imageglobals import logger

    collect = _Collect()
    logger.addFilter(collect)
    try:
        yield
    finally:
        logger.removeFilter(collect)
    if collect.messages:
        warnings.warn(f"{path}: nibabel fixed its header ({'; '.join(collect.messages)})", UserWarning,
                      stacklevel=4)


def _check_spacing(affine: np.ndarray) -> None:
    """Raise :class:`VolumeError` for voxel sizes that are not finite or would round to 0."""
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))  # (x, y, z) order, as in the file
    if not (np.isfinite(affine[:3, :3]).all() and (zooms >= _MIN_SPACING).all()):
        text = " x ".join(f"{z:g}" for z in zooms)
        raise VolumeError(f"unusable voxel spacing {text} mm (each must be finite and at least {_MIN_SPACING:g} mm)")


def read_nifti(path: str | os.PathLike) -> NiftiVolume:
    """Read a NIfTI file as a RAS-canonical (D, H, W) float32 volume.

    A 4D file whose fourth dimension is 1 is read as 3D. Raises :class:`VolumeError`
    for files nibabel cannot read, and for images that are not a single 3D volume.
    """
    import nibabel as nib

    path = Path(path)
    try:
        with _nibabel_header_fixes(path):
            img = nib.load(str(path))
    except FileNotFoundError:
        raise VolumeError("file not found") from None
    except Exception as exc:  # nibabel raises many types for foreign files
        raise VolumeError(f"not a readable NIfTI volume ({_short(exc, path=path)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise VolumeError(f"not a NIfTI image ({type(img).__name__})")
    _check_shape(img.shape)
    orig_affine = np.array(img.affine, dtype=np.float64)
    _check_spacing(orig_affine)  # before reorienting: a NaN or zero affine makes that fail obscurely
    try:
        orientation = "".join(nib.aff2axcodes(orig_affine))
    except Exception:
        orientation = "?"
    header = {
        "shape": tuple(int(s) for s in img.shape),
        "dtype": str(img.get_data_dtype()),
        "zooms": tuple(float(z) for z in img.header.get_zooms()),
        "orientation": orientation,
        "qform_code": int(img.header["qform_code"]),
        "sform_code": int(img.header["sform_code"]),
        "units": str(img.header.get_xyzt_units()[0]),
        "description": _descrip(img.header),
    }
    try:
        if len(img.shape) > 3:  # trailing singleton dimensions only (checked above)
            img = nib.Nifti1Image(
                np.asarray(img.dataobj, dtype=np.float32).reshape(img.shape[:3]), img.affine
            )
        canon = nib.as_closest_canonical(img)
        xyz = np.asarray(canon.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(f"unreadable or corrupt file ({_short(exc, path=path)})") from None
    xyz = xyz.reshape(xyz.shape[:3])
    aff = np.asarray(canon.affine, dtype=np.float64)
    zooms_xyz = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(round(float(z), _SPACING_DECIMALS) for z in zooms_xyz[::-1])
    origin = tuple(round(float(o), _ORIGIN_DECIMALS) + 0.0 for o in aff[:3, 3][::-1])
    data = np.ascontiguousarray(xyz.transpose(2, 1, 0))
    return NiftiVolume(data=data, spacing=spacing, origin=origin, affine=orig_affine, header=header)


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Path:
    """Write a (D, H, W) volume as NIfTI with an axis-aligned RAS affine.

    ``spacing`` and ``origin`` are in mm, (D, H, W) order. Float data are stored as
    float32; integer data (int16, uint8, ...) keep their type, booleans become uint8.
    Compression follows the name (``.nii.gz``). The file is written to a temporary
    name beside ``path`` and moved into place, so a reader never sees half a file.
    Returns ``path``.
    """
    import nibabel as nib

    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_nifti expects a 3D (D, H, W) array, got shape {data.shape}")
    if len(spacing) != 3 or len(origin) != 3:
        raise ValueError("spacing and origin must be 3-tuples in (D, H, W) order")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype.kind == "f" or data.dtype.kind not in "iu":
        data = data.astype(np.float32)
    elif data.dtype.itemsize > 4:
        data = data.astype(np.int32)
    xyz = np.ascontiguousarray(data.transpose(2, 1, 0))
    sd, sh, sw = (float(s) for s in spacing)
    od, oh, ow = (float(o) for o in origin)
    affine = np.array(
        [[sw, 0, 0, ow], [0, sh, 0, oh], [0, 0, sd, od], [0, 0, 0, 1]], dtype=np.float64
    )
    img = nib.Nifti1Image(xyz, affine)
    img.header.set_zooms((sw, sh, sd))
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    suffix = _suffix(path) if _suffix(path) in (".nii", ".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:  # nibabel picks the format by extension
        nib.save(img, str(tmp))
    return path


def load_volume(
    path: str | os.PathLike, allow_nan: bool = False
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Load and validate one volume file: ``.nii``, ``.nii.gz`` or ``.npy``.

    Returns ``(data, spacing)``: a float32 (D, H, W) array and its voxel size in mm
    (``.npy`` files carry no spacing: (1, 1, 1); their axes are taken as (D, H, W)).

    Raises :class:`VolumeError` with a short reason for: a file that cannot be read
    (missing, not a regular file, corrupt, not a volume), an image that is not 3D (2D,
    1D or one voxel, or 4D with more than one volume; a singleton fourth dimension is
    accepted), zero size, a voxel spacing that is not finite or under 1e-5 mm, any
    infinite value, NaN values (unless ``allow_nan``: then NaN are kept and the
    caller fills them, e.g. CT preprocessing uses -1024 HU; a volume that is all
    NaN is still an error), and a constant volume.
    """
    path = Path(path)
    check_regular_file(path)
    suffix = _suffix(path)
    if suffix in (".nii", ".nii.gz"):
        vol = read_nifti(path)
        data, spacing = vol.data, vol.spacing
    elif suffix == ".npy":
        data, spacing = _load_npy(path), (1.0, 1.0, 1.0)
    else:
        raise VolumeError(f"unsupported file type '{suffix}' (expected .nii, .nii.gz or .npy)")
    validate_volume(data, allow_nan=allow_nan)
    return data, spacing


def _load_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise VolumeError(f"unreadable or corrupt .npy file ({_short(exc, path=path)})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise VolumeError(f"not a numeric array (dtype {getattr(arr, 'dtype', '?')})")
    _check_shape(arr.shape)
    arr = arr.reshape(_squeeze_to_3d(arr.shape))
    return np.ascontiguousarray(arr, dtype=np.float32)


def validate_volume(data: np.ndarray, allow_nan: bool = False) -> None:
    """Raise :class:`VolumeError` if ``data`` is not a usable 3D volume (see load_volume)."""
    _check_shape(data.shape)
    finite = np.isfinite(data)
    if not finite.all():
        nan, bad = int(np.isnan(data).sum()), int((~finite).sum())
        if not allow_nan or bad > nan or bad == data.size:
            parts = ([f"{nan} NaN"] if nan else []) + ([f"{bad - nan} infinite"] if bad > nan else [])
            raise VolumeError(f"{bad} of {data.size} voxels are not finite ({', '.join(parts)})")
    vals = data[finite] if not finite.all() else data
    lo, hi = float(vals.min()), float(vals.max())
    if lo == hi:
        raise VolumeError(f"constant volume (every voxel is {lo:g})")


def _descrip(header) -> str:
    try:
        raw = header["descrip"]
        raw = raw.item() if hasattr(raw, "item") else raw
        return raw.decode("latin-1").strip("\x00 ") if isinstance(raw, bytes) else str(raw)
    except Exception:
        return ""


def _short(exc: BaseException, limit: int = 90, path: Path | None = None) -> str:
    """``Type: message`` on one line, cut to ``limit``; ``path`` is shortened to its name (said already)."""
    text = f"{type(exc).__name__}: {exc}".strip()
    if path is not None:
        text = text.replace(str(path), path.name)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
