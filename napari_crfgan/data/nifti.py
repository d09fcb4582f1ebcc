"""Reading and writing volumes: NIfTI (``.nii``, ``.nii.gz``) and NumPy (``.npy``).

Array convention used throughout the package: a volume is a float32 array with
axes ``(D, H, W) = (z, y, x)`` of the RAS-canonical image (the file is first
reoriented with :func:`nibabel.as_closest_canonical`, then its ``(x, y, z)`` array
is transposed). ``D`` is therefore the inferior -> superior (axial) axis, ``H``
posterior -> anterior and ``W`` left -> right (towards the patient's right).
Spacing and origin are 3-tuples in millimetres in the same ``(D, H, W)`` order.
A 4D file (read with ``allow_4d=True``) is ``(T, D, H, W)``: time or channel first.

Geometry: the *geometry* of a volume is the 4x4 affine from its ``(D, H, W)`` index
to world millimetres in ``(z, y, x)`` order of the file's RAS+ frame
(:func:`dhw_affine` of the canonical affine). It keeps rotations (oblique scans)
and shears; spacing and origin are its column norms and translation.

:func:`write_nifti` is the inverse of :func:`read_nifti`: it writes an axis-aligned
RAS affine (or one with a given direction and voxel order), so
``read_nifti(write_nifti(p, x, s))`` returns ``x`` and ``s``.
:func:`write_nifti_volume` writes a volume with any geometry; given the record of
the file it was read from (:func:`nifti_record`) it writes the file's voxel order,
its original qform / sform and codes, its header and its stored dtype (with its
scl_slope / scl_inter) wherever that is lossless.
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
    "write_nifti_volume",
    "nifti_record",
    "nifti_orientation",
    "volume_grid",
    "dhw_affine",
    "ras_affine",
    "make_geometry",
    "layer_transform",
    "compose_layer_transform",
    "DISPLAY_ORIENTATIONS",
    "DISPLAY_ENV",
    "display_orientation",
    "display_matrix",
]

#: file name endings recognised as volumes
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")

_SPACING_DECIMALS = 5
#: smallest usable voxel size in mm (a smaller one would round to 0)
_MIN_SPACING = 10.0**-_SPACING_DECIMALS
_ORIGIN_DECIMALS = 4
#: geometry entries (mm) closer than this to the ones read count as unchanged when writing back
_SAME_GEOMETRY_MM = 1e-4
#: NIFTI_INTENT_LABEL
INTENT_LABEL = 1002

#: how napari shows the (z, y, x) world axes: the sign applied to each by the layer's ``affine``.
#: napari draws world axis 1 downwards and axis 2 to the right in an axial view (axes 0 and 1
#: / 0 and 2 in sagittal / coronal views), so the plain RAS frame shows anterior at the bottom,
#: superior at the bottom and the patient's right on the right.
DISPLAY_ORIENTATIONS = {
    # as Slicer and ITK-SNAP: anterior up, superior up, patient's right on the screen's left
    "radiological": (-1.0, -1.0, -1.0),
    # anterior up, superior up, patient's right on the screen's right
    "neurological": (-1.0, -1.0, 1.0),
    # napari's plain axes: the layer's world coordinates are the file's (z, y, x) RAS mm
    "none": (1.0, 1.0, 1.0),
}
#: environment variable choosing the display orientation of the layers the plugin opens
DISPLAY_ENV = "CRFGAN_DISPLAY_ORIENTATION"
DEFAULT_DISPLAY = "radiological"


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
    header : a few plain fields of the header (original shape, dtype, orientation, codes,
        scl_slope / scl_inter, intent...).
    canonical_affine : the 4x4 RAS affine of ``data``'s grid (voxel ``(x, y, z)`` = ``(W, H, D)``).
    header_block : the file's binary header (for writing the volume back like its file).
    version : NIfTI version of the file (1 or 2).
    """

    data: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    header: dict[str, Any] = field(default_factory=dict)
    canonical_affine: np.ndarray | None = None
    header_block: bytes = b""
    version: int = 1

    @property
    def geometry(self) -> np.ndarray:
        """4x4 affine from the ``(D, H, W)`` index of ``data`` to world ``(z, y, x)`` mm (RAS+)."""
        if self.canonical_affine is not None:
            return dhw_affine(self.canonical_affine)
        return make_geometry(self.spacing, self.origin)


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


def _check_shape(shape: tuple[int, ...], allow_4d: bool = False) -> None:
    """Raise :class:`VolumeError` unless ``shape`` (as stored in the file) is one 3D volume.

    With ``allow_4d`` a series of 3D volumes (x, y, z, t) is accepted too.
    """
    text = "x".join(str(int(n)) for n in shape)
    if len(shape) == 0 or int(np.prod(shape)) == 0:
        raise VolumeError(f"empty volume (shape {text})")
    squeezed = _squeeze_to_3d(shape)
    if allow_4d and len(squeezed) == 4:
        squeezed = squeezed[:3]
    elif allow_4d and len(squeezed) > 4:
        raise VolumeError(f"{len(squeezed)}D image (shape {text}); expected a 3D volume or a 4D series")
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


def _scaling(img) -> tuple[float | None, float | None]:
    """The file's scl_slope / scl_inter (None where unset: nibabel moves them into the data proxy)."""
    slope = getattr(img.dataobj, "slope", None)
    inter = getattr(img.dataobj, "inter", None)
    if slope is None or not np.isfinite(slope) or slope == 0:
        return None, None
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    return (None, None) if (slope, inter) == (1.0, 0.0) else (float(slope), inter)


def read_nifti(path: str | os.PathLike, *, allow_4d: bool = False, keep_integers: bool = False) -> NiftiVolume:
    """Read a NIfTI file as a RAS-canonical (D, H, W) float32 volume.

    A 4D file whose fourth dimension is 1 is read as 3D. Raises :class:`VolumeError`
    for files nibabel cannot read, and for images that are not a single 3D volume
    (with ``allow_4d``: a series (x, y, z, t) is read as (T, D, H, W)). With
    ``keep_integers``, a file of integers without scaling (no scl_slope / scl_inter)
    keeps its stored integer dtype instead of float32.
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
    _check_shape(img.shape, allow_4d)
    orig_affine = np.array(img.affine, dtype=np.float64)
    _check_spacing(orig_affine)  # before reorienting: a NaN or zero affine makes that fail obscurely
    try:
        orientation = "".join(nib.aff2axcodes(orig_affine))
    except Exception:
        orientation = "?"
    slope, inter = _scaling(img)
    hdr = img.header
    header = {
        "shape": tuple(int(s) for s in img.shape),
        "dtype": str(img.get_data_dtype()),
        "zooms": tuple(float(z) for z in hdr.get_zooms()),
        "orientation": orientation,
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "units": str(hdr.get_xyzt_units()[0]),
        "description": _descrip(hdr),
        "scl_slope": slope,
        "scl_inter": inter,
        "intent_code": int(hdr["intent_code"]),
        "qform": np.asarray(hdr.get_qform(), dtype=np.float64),
        "sform": np.asarray(hdr.get_sform(), dtype=np.float64),
    }
    integers = keep_integers and np.dtype(img.get_data_dtype()).kind in "iu" and slope is None
    try:
        shape = _squeeze_to_3d(img.shape)
        if len(img.shape) > len(shape):  # trailing singleton dimensions only (checked above)
            arr = np.asanyarray(img.dataobj) if integers else np.asarray(img.dataobj, dtype=np.float32)
            img = nib.Nifti1Image(arr.reshape(shape), img.affine)
        canon = nib.as_closest_canonical(img)
        xyz = np.asanyarray(canon.dataobj) if integers else np.asarray(canon.dataobj, dtype=np.float32)
    except VolumeError:
        raise
    except Exception as exc:
        raise VolumeError(f"unreadable or corrupt file ({_short(exc, path=path)})") from None
    xyz = xyz.reshape(canon.shape)  # the reoriented axes (the file's shape would scramble a permuted one)
    aff = np.asarray(canon.affine, dtype=np.float64)
    zooms_xyz = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    spacing = tuple(round(float(z), _SPACING_DECIMALS) for z in zooms_xyz[::-1])
    origin = tuple(round(float(o), _ORIGIN_DECIMALS) + 0.0 for o in aff[:3, 3][::-1])
    data = np.ascontiguousarray(xyz.transpose(tuple(range(xyz.ndim))[::-1]))  # (T,) D, H, W
    return NiftiVolume(data=data, spacing=spacing, origin=origin, affine=orig_affine, header=header,
                       canonical_affine=aff, header_block=bytes(hdr.binaryblock),
                       version=2 if isinstance(hdr, nib.Nifti2Header) else 1)


# ---------------------------------------------------------------------------- geometry
_REVERSE = np.eye(4)[[2, 1, 0, 3]]  # (x, y, z, 1) <-> (z, y, x, 1)


def dhw_affine(ras: np.ndarray) -> np.ndarray:
    """The (D, H, W) -> world (z, y, x) geometry of a NIfTI (x, y, z) voxel -> RAS affine (and back: ras_affine)."""
    return _REVERSE @ np.asarray(ras, dtype=np.float64) @ _REVERSE


def ras_affine(geometry: np.ndarray) -> np.ndarray:
    """The NIfTI affine of a (D, H, W) -> (z, y, x) geometry (voxel (x, y, z) = (W, H, D) -> RAS mm)."""
    return _REVERSE @ np.asarray(geometry, dtype=np.float64) @ _REVERSE


def make_geometry(spacing, origin=(0.0, 0.0, 0.0), direction=None) -> np.ndarray:
    """Geometry from spacing and origin ((D, H, W) order, mm) and a 3x3 direction.

    ``direction``'s column k is the unit world (z, y, x) vector of array axis k (D, H, W);
    None is the axis-aligned RAS grid.
    """
    linear = np.diag([float(v) for v in spacing])
    if direction is not None:
        linear = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ linear
    geometry = np.eye(4)
    geometry[:3, :3] = linear
    geometry[:3, 3] = [float(o) for o in origin]
    return geometry


def _direction(geometry: np.ndarray) -> np.ndarray:
    linear = np.asarray(geometry, dtype=np.float64)[:3, :3]
    return linear / np.sqrt((linear ** 2).sum(axis=0))


def layer_transform(geometry: np.ndarray, ndim: int = 3) -> dict:
    """napari's ``scale``, ``translate``, ``rotate`` and ``shear`` for a (D, H, W) geometry.

    napari composes a layer's data -> physical transform as translate + rotate @ shear @
    diag(scale); this is the QR decomposition of the geometry's linear part in that form
    (rotate a proper rotation, shear unit upper triangular, scale positive, a reflection
    as a negative last scale). Axis-aligned geometries give the identity rotation and
    the spacing / origin rounded as :func:`read_nifti` rounds them. For ``ndim`` 4 the
    first (time or channel) axis gets scale 1 and no translation.
    """
    geometry = np.asarray(geometry, dtype=np.float64)
    linear, offset = geometry[:3, :3], geometry[:3, 3]
    if not np.count_nonzero(linear - np.diag(np.diag(linear))) and (np.diag(linear) > 0).all():
        rotate, shear = np.eye(3), np.eye(3)
        scale = np.round(np.diag(linear), _SPACING_DECIMALS)
        offset = np.round(offset, _ORIGIN_DECIMALS) + 0.0
    else:
        q, u = np.linalg.qr(linear)
        signs = np.where(np.diag(u) < 0, -1.0, 1.0)
        q, u = q * signs, signs[:, None] * u
        if np.linalg.det(q) < 0:  # a reflection: carried by a negative scale on the last axis
            q[:, -1] *= -1.0
            u[-1, :] *= -1.0
        scale = np.diag(u).copy()
        rotate, shear = q, u / scale[None, :]
    lead = ndim - 3
    full_rotate, full_shear = np.eye(ndim), np.eye(ndim)
    full_rotate[lead:, lead:], full_shear[lead:, lead:] = rotate, shear
    return {
        "scale": (1.0,) * lead + tuple(float(v) for v in scale),
        "translate": (0.0,) * lead + tuple(float(v) for v in offset),
        "rotate": full_rotate.tolist(),
        "shear": [float(v) for v in full_shear[np.triu_indices(ndim, 1)]],
    }


def compose_layer_transform(state: dict, ndim: int) -> np.ndarray:
    """The (ndim + 1)^2 data -> world matrix of a napari layer's state (``scale``, ``translate``,
    ``rotate``, ``shear``, ``affine``; missing ones are the identity), as napari composes it:
    ``affine @ (translate + rotate @ shear @ diag(scale))``."""
    def full(value, default):
        return np.asarray(default if value is None else value, dtype=np.float64)

    scale = full(state.get("scale"), np.ones(ndim))[-ndim:]
    translate = full(state.get("translate"), np.zeros(ndim))[-ndim:]
    rotate = full(state.get("rotate"), np.eye(ndim))
    shear = full(state.get("shear"), np.zeros(ndim * (ndim - 1) // 2))
    if shear.ndim == 1:
        n = int(round((1 + np.sqrt(1 + 8 * shear.size)) / 2))
        matrix = np.eye(n)
        matrix[np.triu_indices(n, 1)] = shear
        shear = matrix
    affine = full(state.get("affine"), np.eye(ndim + 1))

    def embed(m, size):
        out = np.eye(size)
        out[size - m.shape[0]:, size - m.shape[1]:] = m
        return out

    linear = embed(rotate, ndim) @ embed(shear, ndim) @ np.diag(scale)
    data2physical = np.eye(ndim + 1)
    data2physical[:ndim, :ndim], data2physical[:ndim, ndim] = linear, translate
    return embed(affine, ndim + 1) @ data2physical


def display_orientation(value: str | None = None) -> str:
    """The display orientation: ``value``, else :data:`DISPLAY_ENV`, else radiological.

    An unknown name gives a warning and the default.
    """
    name = value if value is not None else os.environ.get(DISPLAY_ENV, "")
    name = str(name).strip().lower() or DEFAULT_DISPLAY
    if name not in DISPLAY_ORIENTATIONS:
        warnings.warn(f"unknown display orientation {name!r} ({DISPLAY_ENV}); choose "
                      f"{', '.join(DISPLAY_ORIENTATIONS)}; using {DEFAULT_DISPLAY}", UserWarning, stacklevel=2)
        name = DEFAULT_DISPLAY
    return name


def display_matrix(name: str | None, ndim: int = 3) -> np.ndarray:
    """The (ndim + 1)^2 physical -> world matrix (napari ``affine``) of a display orientation
    (None: "none"); axes before the last three (time, channel) are left alone."""
    signs = DISPLAY_ORIENTATIONS[name or "none"]
    return np.diag([1.0] * (ndim - 3) + list(signs) + [1.0])


# ---------------------------------------------------------------------------- records
def nifti_record(vol: NiftiVolume) -> dict:
    """What :func:`write_nifti_volume` needs to write ``vol`` back like its file (a plain dict)."""
    h = vol.header
    order = h.get("orientation", "RAS")
    return {
        "affine": np.asarray(vol.affine, dtype=np.float64).tolist(),
        "geometry": vol.geometry.tolist(),
        "shape": [int(n) for n in vol.data.shape[-3:]],
        "voxel_order": order if len(order) == 3 and "?" not in order else "RAS",
        "dtype": str(h.get("dtype", vol.data.dtype)),
        "scl_slope": h.get("scl_slope"),
        "scl_inter": h.get("scl_inter"),
        "qform_code": int(h.get("qform_code", 0)),
        "sform_code": int(h.get("sform_code", 0)),
        "header_block": bytes(vol.header_block),
        "version": int(vol.version),
    }


def nifti_orientation(path: str | os.PathLike) -> dict | None:
    """``{"orientation": "LPS", "direction": 3x3}`` of a NIfTI file (its header only is read):
    the axis codes of its voxel order and the direction of its canonical (D, H, W) grid
    (column k: unit world (z, y, x) vector of axis k). None when the file cannot be read."""
    import nibabel as nib
    from nibabel.orientations import inv_ornt_aff, io_orientation

    try:
        img = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=np.float64)
        ornt = io_orientation(affine)
        canonical = affine @ inv_ornt_aff(ornt, img.shape[:3])
        codes = "".join(nib.aff2axcodes(affine))
    except Exception:
        return None
    if not np.isfinite(canonical).all() or "?" in codes or len(codes) != 3:
        return None
    return {"orientation": codes, "direction": _direction(dhw_affine(canonical)).tolist()}


def volume_grid(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray | None]:
    """The (D, H, W) shape and geometry of a volume file as :func:`load_volume` would read it, from its header
    only: NIfTI reoriented to RAS as :func:`read_nifti` does; a ``.npy`` has its stored shape and no geometry
    (None). Raises :class:`VolumeError` for a file that cannot be read."""
    path = Path(path)
    if _suffix(path) == ".npy":
        try:
            return tuple(int(n) for n in np.load(path, mmap_mode="r", allow_pickle=False).shape), None
        except Exception as exc:
            raise VolumeError(f"unreadable or corrupt .npy file ({_short(exc, path=path)})") from None
    import nibabel as nib
    from nibabel.orientations import inv_ornt_aff, io_orientation

    try:
        with _nibabel_header_fixes(path):
            img = nib.load(str(path))
        affine = np.asarray(img.affine, dtype=np.float64)
        shape = _squeeze_to_3d(img.shape)
        ornt = io_orientation(affine)
        canonical = affine @ inv_ornt_aff(ornt, shape[:3])
        xyz = [0, 0, 0]
        for axis, (to, _) in enumerate(ornt):  # input axis `axis` becomes canonical axis `to`
            xyz[int(to)] = int(shape[axis])
    except Exception as exc:  # nibabel raises many types for foreign files
        raise VolumeError(f"not a readable NIfTI volume ({_short(exc, path=path)})") from None
    return tuple(int(n) for n in xyz[::-1]) + tuple(shape[3:]), dhw_affine(canonical)


# ---------------------------------------------------------------------------- writing
def _integral(values: np.ndarray, slope: float, inter: float, dtype: np.dtype) -> np.ndarray | None:
    """``values`` as stored integers of ``dtype`` (``(values - inter) / slope``), or None when lossy."""
    info = np.iinfo(dtype)
    out = np.empty(values.shape, dtype=dtype)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    step = 1 << 22  # bounded float64 scratch memory
    for start in range(0, flat_in.size, step):
        chunk = (flat_in[start:start + step].astype(np.float64) - inter) / slope
        if not np.isfinite(chunk).all():
            return None
        rounded = np.rint(chunk)
        peak = float(np.abs(flat_in[start:start + step]).max(initial=0.0))
        tol = 1e-3 + 8 * float(np.finfo(np.float32).eps) * peak / abs(slope)
        if np.abs(chunk - rounded).max(initial=0.0) > tol:
            return None
        if rounded.size and (rounded.min() < info.min or rounded.max() > info.max):
            return None
        flat_out[start:start + step] = rounded
    return out


def _smallest_int(lo: int, hi: int) -> np.dtype:
    for dtype in (np.uint8, np.int16, np.uint16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _stored(data: np.ndarray, source: dict | None, labels: bool) -> tuple[np.ndarray, float, float]:
    """(stored array, scl_slope, scl_inter) to write; NaN scaling means none."""
    none = (np.nan, np.nan)
    wanted = np.dtype(source["dtype"]) if source and source.get("dtype") else None
    if labels:
        if data.dtype == bool:
            data = data.astype(np.uint8)
        if data.dtype.kind == "f":
            if not (np.isfinite(data).all() and (data == np.rint(data)).all()):
                raise ValueError("a labels layer must hold whole numbers")
            data = data.astype(np.int64)
        if data.dtype.kind not in "iu":
            raise ValueError(f"a labels layer must hold integers, not {data.dtype}")
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if wanted is not None and wanted.kind in "iu":
            info = np.iinfo(wanted)
            if info.min <= lo and hi <= info.max:
                return data.astype(wanted, copy=False), 1.0, 0.0
        kind = data.dtype if data.dtype.itemsize <= 4 and data.dtype != np.uint32 else _smallest_int(lo, hi)
        return data.astype(kind, copy=False), 1.0, 0.0
    if data.dtype == bool:
        return data.astype(np.uint8), *none
    if wanted is not None:
        slope = source.get("scl_slope")
        inter = source.get("scl_inter")
        if wanted.kind in "iu":
            stored = _integral(data, 1.0 if slope is None else slope, 0.0 if inter is None else inter, wanted)
            if stored is not None:
                return stored, (np.nan if slope is None else slope), (np.nan if slope is None else inter)
        elif wanted.kind == "f" and data.dtype.kind in "fiu":
            cast = data.astype(wanted)
            if wanted.itemsize >= 4 or np.array_equal(cast.astype(data.dtype), data, equal_nan=True):
                return cast, *none
    if data.dtype.kind == "f" or data.dtype.kind not in "iu":
        return data.astype(np.float32), *none
    if data.dtype.itemsize > 4:
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if np.iinfo(np.int32).min <= lo and hi <= np.iinfo(np.int32).max:
            return data.astype(np.int32), *none
    return data, *none


def write_nifti_volume(
    path: str | os.PathLike,
    data: np.ndarray,
    geometry: np.ndarray,
    *,
    source: dict | None = None,
    labels: bool = False,
    orientation: str | None = None,
) -> Path:
    """Write a (D, H, W) or (T, D, H, W) volume with a (D, H, W) -> (z, y, x) mm ``geometry``.

    ``source``: the :func:`nifti_record` of the file the volume was read from. Then the
    file's voxel order is written, its header kept (units, intent, description, TR...),
    and while the geometry is the one read (within 1e-4 mm) its qform and sform are
    written back unchanged with their codes; a changed geometry goes into both, with the
    file's codes (1 where both were 0). The stored dtype is the file's wherever that is
    lossless: integers in range, after undoing the file's scl_slope / scl_inter, which are
    kept; otherwise float32. Without ``source``: RAS voxel order (or ``orientation``, axis
    codes such as "LPS"), qform and sform code 1, float data as float32.
    ``labels``: integer data in the file's dtype if it fits (else the smallest integer
    type that does), no scaling, intent NIFTI_INTENT_LABEL.
    The file is written to a temporary name beside ``path`` and moved into place.
    """
    import nibabel as nib
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

    path = Path(path)
    data = np.asarray(data)
    if data.ndim not in (3, 4):
        raise ValueError(f"NIfTI export takes a 3D (D, H, W) or 4D (T, D, H, W) array, got shape {data.shape}")
    geometry = np.asarray(geometry, dtype=np.float64)
    if geometry.shape != (4, 4) or not np.isfinite(geometry).all():
        raise ValueError("the geometry must be a finite 4x4 (D, H, W) -> (z, y, x) affine")
    codes = orientation or (source or {}).get("voxel_order") or "RAS"
    stored, slope, inter = _stored(data, source, labels)
    xyz = stored.transpose(tuple(range(stored.ndim))[::-1])  # (x, y, z[, t])
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(codes)))
    out = np.ascontiguousarray(apply_orientation(xyz, ornt))
    affine = ras_affine(geometry) @ inv_ornt_aff(ornt, xyz.shape[:3])
    same = (source is not None and list(data.shape[-3:]) == list(source.get("shape", []))
            and codes == source.get("voxel_order")
            and np.allclose(geometry, np.asarray(source["geometry"]), rtol=0.0, atol=_SAME_GEOMETRY_MM))

    version = int((source or {}).get("version", 1))
    image_class = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    block = (source or {}).get("header_block") or b""
    if block:
        hdr = image_class.header_class(binaryblock=bytes(block))
    else:
        hdr = image_class.header_class()
        hdr.set_xyzt_units("mm", "sec") if data.ndim == 4 else hdr.set_xyzt_units("mm")
    hdr.set_data_dtype(out.dtype)
    img = image_class(out, None, header=hdr)
    img.set_data_dtype(out.dtype)
    if same:
        original = np.asarray(source["affine"], dtype=np.float64)
        if not np.allclose(img.header.get_best_affine(), original, atol=_SAME_GEOMETRY_MM):  # no usable codes
            img.set_sform(original, code=max(1, int(source.get("sform_code", 0))))
    else:
        qcode = int((source or {}).get("qform_code", 0))
        scode = int((source or {}).get("sform_code", 0))
        if not qcode and not scode:
            qcode = scode = 1
        img.set_qform(affine, code=qcode)
        img.set_sform(affine, code=scode)
    img.header.set_slope_inter(slope, inter)
    if labels:
        img.header.set_intent("label")
    suffix = _suffix(path) if _suffix(path) in (".nii", ".nii.gz") else ".nii"
    with atomic_path(path, suffix=suffix) as tmp:  # nibabel picks the format by extension
        nib.save(img, str(tmp))
    return path


def write_nifti(
    path: str | os.PathLike,
    data: np.ndarray,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
    direction=None,
    orientation: str | None = None,
) -> Path:
    """Write a (D, H, W) volume as NIfTI with an axis-aligned RAS affine.

    ``spacing`` and ``origin`` are in mm, (D, H, W) order. ``direction`` (3x3, column k
    the unit world (z, y, x) vector of axis k, see :func:`make_geometry`) rotates the grid
    and ``orientation`` (axis codes, e.g. "LPS") chooses the voxel order on disk; the
    defaults write the plain RAS grid. Float data are stored as float32; integer data
    (int16, uint8, ...) keep their type, booleans become uint8. Compression follows the
    name (``.nii.gz``). The file is written to a temporary name beside ``path`` and moved
    into place, so a reader never sees half a file. Returns ``path``.
    """
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"write_nifti expects a 3D (D, H, W) array, got shape {data.shape}")
    if len(spacing) != 3 or len(origin) != 3:
        raise ValueError("spacing and origin must be 3-tuples in (D, H, W) order")
    return write_nifti_volume(path, data, make_geometry(spacing, origin, direction), orientation=orientation)


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


def read_npy(path: Path) -> np.ndarray:
    """A .npy volume as stored (its dtype kept), squeezed to 3D; VolumeError saying what is wrong."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise VolumeError(f"unreadable or corrupt .npy file ({_short(exc, path=path)})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        raise VolumeError(f"not a numeric array (dtype {getattr(arr, 'dtype', '?')})")
    _check_shape(arr.shape)
    return arr.reshape(_squeeze_to_3d(arr.shape))


def _load_npy(path: Path) -> np.ndarray:
    return np.ascontiguousarray(read_npy(path), dtype=np.float32)


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
