"""Embedded demo data sets, generated on this machine: no download.

Both are SYNTHETIC data, not scans of real patients; they exist so that training,
sampling and the GUI can be tried end to end without any data at hand.

``demo-brain``
    T1-weighted brain MRIs derived from the MNI152 (ICBM 2009a symmetric) template
    that nilearn ships inside its wheel. The template is averaged down to 2 mm,
    cropped to the head, and each volume is varied by seeded torchio transforms:
    RandomAffine, RandomElasticDeformation, RandomBiasField and RandomNoise.
    Intensities are arbitrary MRI units (4 x the template's 0..255 scale), stored
    as int16, 2 mm isotropic, about 82 x 99 x 81 voxels (D, H, W).

``demo-chest``
    A procedural chest CT phantom in Hounsfield units: air (-1000) outside the body
    and -1024 outside the circular field of view; a body wall of fat (~-100) and
    muscle (~+45); ribs; two lungs (~-850) with a domed diaphragm, each holding
    branching arterial and venous trees (~+40) and an airway tree (air); trachea
    and main bronchi; heart and aorta (~+40); vertebrae (cancellous ~+400, cortex
    ~+700) with discs, spinal canal and posterior arches. Anatomy (body size, fat,
    lung shape, heart position, trees) varies per volume. About half the volumes
    hold 1-3 solid lung nodules (spheres 6-25 mm across, 0..+50 HU); ``labels.csv``
    says ``nodule`` / ``no-nodule`` and ``nodules.json`` gives their centres
    (voxel indices, D, H, W) and diameters (mm). Volumes are 96 x 128 x 128 voxels
    (D, H, W) at 3.0 x 2.5 x 2.5 mm, stored as int16. Its label masks (:func:`demo_masks_folder`,
    ``--data demo-chest --masks``) give every voxel the structure the phantom drew last there, one
    label per structure (:data:`CHEST_LABELS`, also in the folder's ``label_names.csv``), on the
    same grid; drawing them consumes no random draw, so the volumes are the same with or without.

Each data set is generated once per ``(name, count, seed)`` into a folder of
``.nii.gz`` files under ``<cache_dir>/demo/`` (see :func:`demo_folder`) and reused
afterwards; generation is deterministic: the same seed gives the same files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from ..files import atomic_path
from .cache import cache_dir as _default_cache_dir
from .nifti import write_nifti

__all__ = ["DEMO_DATASETS", "DEMO_MODALITY", "DEFAULT_DEMO_COUNT", "demo_folder", "demo_masks_folder",
           "make_chest_phantom", "chest_phantom_with_labels", "make_brain_volume", "CHEST_LABELS", "MASK_DEMOS"]

DEMO_DATASETS = ("demo-brain", "demo-chest")
DEMO_MODALITY = {"demo-brain": "mri", "demo-chest": "ct"}
DEFAULT_DEMO_COUNT = 24
#: bump when the generators change what they produce
DEMO_VERSION = 1

MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"


def demo_folder(
    name: str,
    count: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Folder of the demo data set ``name`` ('demo-brain' or 'demo-chest'), generated if missing.

    ``count`` volumes (default 24) from ``seed``; files go under
    ``<cache_dir>/demo/<name>-n<count>-s<seed>-v<version>/``. ``progress(done, total)``
    is called after each generated volume. The folder appears atomically (built
    under a temporary name, then renamed), so a reused folder is always complete.
    """
    if name not in DEMO_DATASETS:
        raise ValueError(f"unknown demo data set {name!r}; choose one of {DEMO_DATASETS}")
    count = DEFAULT_DEMO_COUNT if count is None else int(count)
    if count < 1:
        raise ValueError("count must be >= 1")
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    folder = root / "demo" / f"{name}-n{count}-s{int(seed)}-v{DEMO_VERSION}"
    if (folder / "demo.json").is_file():
        return folder
    try:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            if name == "demo-brain":
                _write_brain_set(tmp, count, int(seed), progress)
            else:
                _write_chest_set(tmp, count, int(seed), progress)
            info = {"name": name, "count": count, "seed": int(seed), "version": DEMO_VERSION,
                    "modality": DEMO_MODALITY[name], "synthetic": True}
            (tmp / "demo.json").write_text(json.dumps(info, indent=1))
            if folder.exists() and not (folder / "demo.json").is_file():  # an incomplete leftover
                shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        if not (folder / "demo.json").is_file():  # not a concurrent process that finished first
            raise
    return folder


# ----------------------------------------------------------------------------- brain

_TEMPLATE_CACHE: dict[str, tuple[np.ndarray, tuple[float, float, float]]] = {}


def _mni_template() -> tuple[np.ndarray, tuple[float, float, float]]:
    """The MNI152 T1 template at 2 mm, cropped to the head, (D, H, W) float32."""
    if "t1" in _TEMPLATE_CACHE:
        return _TEMPLATE_CACHE["t1"]
    import nilearn

    from .nifti import read_nifti

    path = Path(nilearn.__file__).parent / "datasets" / "data" / MNI_T1
    if not path.is_file():
        raise FileNotFoundError(f"nilearn's MNI152 template is missing ({path})")
    vol = read_nifti(path)
    x = vol.data
    s = [(n // 2) * 2 for n in x.shape]
    x = x[: s[0], : s[1], : s[2]].reshape(s[0] // 2, 2, s[1] // 2, 2, s[2] // 2, 2).mean(axis=(1, 3, 5))
    head = np.argwhere(x > 0.04 * x.max())
    lo = np.maximum(head.min(axis=0) - 4, 0)
    hi = np.minimum(head.max(axis=0) + 5, x.shape)
    x = np.ascontiguousarray(x[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    spacing = tuple(float(v) * 2 for v in vol.spacing)
    _TEMPLATE_CACHE["t1"] = (x, spacing)
    return x, spacing


def make_brain_volume(seed: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """One synthetic T1 brain MRI (D, H, W) float32 and its spacing, deterministic in ``seed``."""
    import torch
    import torchio as tio

    template, spacing = _mni_template()
    # torchio images are (C, x, y, z); the template is (z, y, x)
    tensor = torch.from_numpy(np.ascontiguousarray(template.transpose(2, 1, 0)))[None]
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    transform = tio.Compose(
        [
            tio.RandomAffine(scales=(0.92, 1.08), degrees=8, translation=4, default_pad_value="minimum"),
            tio.RandomElasticDeformation(num_control_points=7, max_displacement=6, locked_borders=2),
            tio.RandomBiasField(coefficients=0.3),
            tio.RandomNoise(mean=0, std=(1.0, 6.0)),
        ]
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        subject = tio.Subject(t1=tio.ScalarImage(tensor=tensor, affine=affine))
        out = transform(subject)["t1"].data[0].numpy()
    vol = np.clip(out.transpose(2, 1, 0), 0, None)
    return np.ascontiguousarray(vol, dtype=np.float32), spacing


def _write_brain_set(folder: Path, count: int, seed: int, progress) -> None:
    for i in range(count):
        vol, spacing = make_brain_volume(seed * 100003 + i)
        write_nifti(folder / f"brain_{i:03d}.nii.gz", np.round(vol * 4).astype(np.int16), spacing)
        if progress is not None:
            progress(i + 1, count)


# ----------------------------------------------------------------------------- chest

CHEST_SHAPE = (96, 128, 128)
CHEST_SPACING = (3.0, 2.5, 2.5)


class _Grid:
    """Physical coordinates (mm) of the voxel centres: z (D, superior +), y (H, anterior +),
    x (W, patient's right +), as broadcastable open grids, origin at the volume centre."""

    def __init__(self, shape, spacing):
        self.shape = tuple(shape)
        self.spacing = np.asarray(spacing, dtype=np.float32)
        self.offset = (np.asarray(shape, dtype=np.float32) - 1) / 2
        d, h, w = (np.arange(n, dtype=np.float32) for n in shape)
        self.z = ((d - self.offset[0]) * self.spacing[0])[:, None, None]
        self.y = ((h - self.offset[1]) * self.spacing[1])[None, :, None]
        self.x = ((w - self.offset[2]) * self.spacing[2])[None, None, :]

    def to_index(self, p_mm):
        """(z, y, x) mm -> fractional voxel index (D, H, W)."""
        return np.asarray(p_mm, dtype=np.float32) / self.spacing + self.offset

    def box(self, lo_mm, hi_mm):
        """Index slices of the voxels between two corners in mm (clipped), or None if empty."""
        lo = np.floor(self.to_index(lo_mm)).astype(int)
        hi = np.ceil(self.to_index(hi_mm)).astype(int) + 1
        lo = np.maximum(lo, 0)
        hi = np.minimum(hi, self.shape)
        if (hi <= lo).any():
            return None
        return tuple(slice(a, b) for a, b in zip(lo, hi))

    def sub(self, sl):
        return self.z[sl[0]], self.y[:, sl[1]], self.x[:, :, sl[2]]


def _draw_segment(mask: np.ndarray, grid: _Grid, p0, p1, radius: float) -> None:
    """Set ``mask`` where the distance to segment p0-p1 (mm, z y x) is <= radius."""
    p0 = np.asarray(p0, dtype=np.float32)
    p1 = np.asarray(p1, dtype=np.float32)
    sl = grid.box(np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius)
    if sl is None:
        return
    z, y, x = grid.sub(sl)
    v = p1 - p0
    vv = float(v @ v) or 1e-6
    t = np.clip(((z - p0[0]) * v[0] + (y - p0[1]) * v[1] + (x - p0[2]) * v[2]) / vv, 0.0, 1.0)
    d2 = (z - p0[0] - t * v[0]) ** 2 + (y - p0[1] - t * v[1]) ** 2 + (x - p0[2] - t * v[2]) ** 2
    mask[sl] |= d2 <= radius * radius


def _tree_segments(rng, start, direction, length, radius, depth, spread=0.55, decay=(0.72, 0.75)):
    """Segments (p0, p1, r) of a random binary branching tree."""
    segments = []
    stack = [(np.asarray(start, float), np.asarray(direction, float), length, radius, 0)]
    while stack:
        p, d, L, r, k = stack.pop()
        d = d / (np.linalg.norm(d) + 1e-9)
        q = p + d * L
        segments.append((p, q, r))
        if k + 1 >= depth:
            continue
        for _ in range(2):
            nd = d + rng.normal(0.0, spread, 3)
            stack.append((q, nd, L * decay[0] * rng.uniform(0.85, 1.15), max(r * decay[1], 1.3), k + 1))
    return segments


#: the demo-chest masks' labels: every structure the phantom draws (0: outside the field of view and the
#: padding around a volume fitted into the cube)
CHEST_LABELS = {0: "outside the field of view", 1: "air", 2: "fat", 3: "muscle", 4: "abdomen",
                5: "mediastinal fat", 6: "rib", 7: "intervertebral disc", 8: "vertebra", 9: "spinal canal",
                10: "lung", 11: "lung vessel", 12: "heart and aorta", 13: "airway", 14: "nodule"}
_LABEL = {name: label for label, name in CHEST_LABELS.items()}
#: demo sets that come with label masks
MASK_DEMOS = ("demo-chest",)


def make_chest_phantom(
    seed: int, nodule: bool = False, shape=CHEST_SHAPE, spacing=CHEST_SPACING
) -> tuple[np.ndarray, list[dict]]:
    """One synthetic chest CT in HU, (D, H, W) float32, and its nodules.

    Deterministic in ``seed``. Returns ``(volume, nodules)`` with each nodule a dict
    ``{"center": [d, h, w] voxel indices, "diameter_mm": float, "hu": float}``.
    """
    vol, nodules, _ = chest_phantom_with_labels(seed, nodule, shape, spacing)
    return vol, nodules


# long: one procedural phantom, drawn structure by structure (body, ribs, spine, lungs, heart, nodules)
def chest_phantom_with_labels(
    seed: int, nodule: bool = False, shape=CHEST_SHAPE, spacing=CHEST_SPACING
) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """:func:`make_chest_phantom`'s volume and nodules, and its label mask (D, H, W) uint8 (:data:`CHEST_LABELS`)."""
    rng = np.random.default_rng(int(seed))
    g = _Grid(shape, spacing)
    z, y, x = g.z, g.y, g.x
    u = rng.uniform
    vol = np.full(g.shape, -1024.0, dtype=np.float32)
    labels = np.zeros(g.shape, dtype=np.uint8)

    def put(mask, value, structure):
        where = np.broadcast_to(mask, g.shape)
        vol[where] = value
        labels[where] = _LABEL[structure]

    # field of view and body wall (elliptic cylinder, slightly narrower at the top)
    fov = (x**2 + y**2) <= (0.5 * g.shape[2] * g.spacing[2] - 2) ** 2
    put(np.broadcast_to(fov, g.shape), -1000.0, "air")
    half_z = 0.5 * g.shape[0] * g.spacing[0]
    taper = 1.0 - 0.12 * np.clip(z / half_z, 0, 1) ** 2
    ax0, ay0, yc = u(128, 150), u(88, 108), u(-8, 4)
    ax, ay = ax0 * taper, ay0 * taper
    fat_t, mus_t = u(7, 24), u(7, 13)
    cav_b0 = ay0 - fat_t - mus_t  # cavity half-depth at mid-chest

    def ellipse(a, b, y0=0.0, x0=0.0):
        return ((x - x0) / a) ** 2 + ((y - y0) / b) ** 2

    body = ellipse(ax, ay, yc) <= 1
    muscle = ellipse(ax - fat_t, ay - fat_t, yc) <= 1
    cav_a, cav_b = ax - fat_t - mus_t, ay - fat_t - mus_t
    cavity = ellipse(cav_a, cav_b, yc) <= 1
    put(body, -100.0, "fat")
    put(muscle, 45.0, "muscle")
    put(cavity, 55.0, "abdomen")  # above the diaphragm it becomes mediastinal fat below

    # ribs: bands just outside the cavity, tilted down anteriorly
    r_out = np.sqrt(ellipse(cav_a, cav_b, yc))
    rib_ring = np.abs((r_out - 1.04) * 0.5 * (cav_a + cav_b)) <= 4.0
    rib_z = np.arange(-half_z - 20, half_z + 20, u(24, 28)) + u(-6, 6)
    tilt = u(0.25, 0.4)
    phase = np.min(np.abs((z + tilt * (y - yc))[..., None] - rib_z), axis=-1) <= 3.5
    put(rib_ring & phase, 500.0, "rib")

    # spine
    sp_y, sp_x = yc - cav_b0 - u(-4, 6), u(-3, 3)
    vb_a, vb_b = u(17, 21), u(14, 17)
    period = u(25, 28)
    zphase = np.mod(z - u(0, period), period)
    disc = zphase < 4.5
    vb = ellipse(vb_a, vb_b, sp_y, sp_x)
    canal_y = sp_y - vb_b - 9
    canal = ellipse(7.5, 7.5, canal_y, sp_x)
    arch = (ellipse(15, 14, canal_y, sp_x) <= 1) | (
        (np.abs(x - sp_x) <= 4) & (y <= canal_y) & (y >= canal_y - 38)
    )
    bone_region = (vb <= 1) | arch
    put((vb <= 1) & disc, 80.0, "intervertebral disc")
    put((vb <= 1) & ~disc, 700.0, "vertebra")
    put((vb <= 0.75) & ~disc, 400.0, "vertebra")
    put(arch & ~disc & (canal > 1), 600.0, "vertebra")
    put(canal <= 1, 15.0, "spinal canal")

    # lungs: rounded apex, domed base
    lungs = np.zeros(g.shape, dtype=bool)
    lz = u(-5, 20)
    centres = {}
    for side in (-1, 1):  # -1 = patient's left, +1 = right
        rx, ry = u(48, 60) * (0.9 if side < 0 else 1.0), u(68, 82)
        lx, ly = side * u(62, 74), yc - u(2, 10)
        rz_up, rz_low = u(95, 115), u(95, 120) * (0.93 if side < 0 else 1.0)
        s = np.sqrt(np.clip(1 - (np.maximum(z - lz, 0) / rz_up) ** 2, 0, 1))
        rho2 = ellipse(rx, ry, ly, lx) / np.maximum(s, 1e-3) ** 2
        dome = lz - rz_low * (0.55 + 0.45 * np.clip(rho2, 0, 1))
        lungs |= (rho2 <= 1) & (s > 0) & (z >= dome)
        centres[side] = (lx, ly, rx, ry)
    lungs &= ellipse(cav_a - 3, cav_b - 3, yc) <= 1
    # thoracic cavity: mediastinal fat above the diaphragm, liver / abdomen below
    diaphragm = lz - 110.0 * (0.55 + 0.45 * np.clip(ellipse(cav_a, cav_b, yc), 0, 1))
    put(cavity & (z >= diaphragm) & ~bone_region & (canal > 1), -80.0, "mediastinal fat")
    lungs &= ~(vb <= 1.6) & ~(ellipse(12, 12, sp_y + vb_b + 12, sp_x) <= 1)

    # heart (towards the patient's left and anterior), aorta, trachea
    hz, hy, hx = lz - u(30, 50), yc + u(15, 30), -u(10, 28)
    ha, hb, hc = u(44, 56), u(36, 46), u(40, 52)
    heart = ((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2 <= 1
    vessels_big = np.zeros(g.shape, dtype=bool)
    ao_r = u(10, 14)
    desc = (sp_x - u(18, 26), sp_y + vb_b + ao_r - 4)
    arch_top = lz + u(35, 55)
    _draw_segment(vessels_big, g, (hz + 0.6 * hc, hy - 5, hx + 15), (arch_top, hy - 10, 0.0), ao_r)
    _draw_segment(vessels_big, g, (arch_top, hy - 10, 0.0), (arch_top, desc[1], desc[0]), ao_r)
    _draw_segment(vessels_big, g, (arch_top, desc[1], desc[0]), (-half_z - 10, desc[1], desc[0]), ao_r)
    carve = heart | vessels_big
    lungs &= ~(carve | (((x - hx) / (ha + 6)) ** 2 + ((y - hy) / (hb + 6)) ** 2 + ((z - hz) / (hc + 6)) ** 2 <= 1))

    airway = np.zeros(g.shape, dtype=bool)
    tr_y, tr_r = sp_y + vb_b + u(18, 26), u(8, 10)
    carina = (lz + u(20, 35), tr_y, u(-3, 3))
    _draw_segment(airway, g, (half_z + 10, tr_y, carina[2]), carina, tr_r)
    vessel = np.zeros(g.shape, dtype=bool)
    for side in (-1, 1):
        lx, ly, rx, ry = centres[side]
        hilum = np.array([carina[0] - u(20, 30), ly + u(-5, 8), lx - side * rx * u(0.45, 0.6)])
        _draw_segment(airway, g, carina, hilum, tr_r * 0.7)
        # branches aimed at random points of this lung, so the trees fill it
        side_idx = np.flatnonzero(lungs & (x * side > 0))
        if side_idx.size == 0:
            continue
        aims = (np.stack(np.unravel_index(rng.choice(side_idx, 14), g.shape), 1) - g.offset) * g.spacing
        for k, aim in enumerate(aims):
            is_airway = k < 4
            start = hilum if is_airway else hilum + rng.normal(0, 6, 3)
            r0 = tr_r * 0.45 if is_airway else u(3.5, 5.5)
            mid = start + (aim - start) * u(0.35, 0.55)
            mask = airway if is_airway else vessel
            _draw_segment(mask, g, start, mid, r0)
            length = 0.45 * float(np.linalg.norm(aim - mid)) + 8
            for p0, p1, r in _tree_segments(rng, mid, aim - mid, length, r0 * 0.8, 3 if is_airway else 4):
                _draw_segment(mask, g, p0, p1, r)

    # composite: lungs, vessels and airways inside lungs, heart, aorta, trachea
    put(lungs, -850.0, "lung")
    put(vessel & lungs, 40.0, "lung vessel")
    put(heart | vessels_big, 40.0, "heart and aorta")
    lumen = airway & (lungs | ~bone_region & cavity & ~heart)
    put(lumen, -1000.0, "airway")

    # nodules, placed inside the lungs away from their border
    nodules = []
    if nodule:
        lung_idx = np.flatnonzero(lungs)
        for _ in range(int(rng.choice([1, 1, 1, 2, 3]))):
            radius = u(3.0, 12.5)
            for _attempt in range(60):
                c = np.array(np.unravel_index(rng.choice(lung_idx), g.shape), dtype=float)
                c_mm = (c - g.offset) * g.spacing
                sl = g.box(c_mm - radius, c_mm + radius)
                zz, yy, xx = g.sub(sl)
                ball = (zz - c_mm[0]) ** 2 + (yy - c_mm[1]) ** 2 + (xx - c_mm[2]) ** 2 <= radius**2
                if ball.any() and lungs[sl][ball].mean() >= 0.97:
                    hu = u(0, 50)
                    vol[sl][ball] = hu
                    labels[sl][ball] = _LABEL["nodule"]
                    nodules.append({"center": [int(v) for v in c], "diameter_mm": round(2 * radius, 2),
                                    "hu": round(hu, 1)})
                    break
                radius = max(3.0, radius * 0.93)

    # partial-volume blur, then scanner noise (not in the padding outside the FOV)
    from scipy.ndimage import gaussian_filter

    vol = gaussian_filter(vol, sigma=0.6, mode="nearest")
    vol += rng.normal(0.0, u(8, 16), g.shape).astype(np.float32)
    put(~np.broadcast_to(fov, g.shape), -1024.0, "outside the field of view")
    return vol, nodules, labels


def _chest_nodules(count: int, seed: int) -> list[bool]:
    """Which volumes hold nodules: one in each consecutive pair, the order drawn per pair: balanced, and
    volume i is the same whatever the count."""
    flips = [np.random.default_rng([int(seed), k]).integers(2) for k in range((count + 1) // 2)]
    return [(i % 2) != flips[i // 2] for i in range(count)]


def _write_chest_set(folder: Path, count: int, seed: int, progress) -> None:
    has_nodule = _chest_nodules(count, seed)
    rows = ["filename,label"]
    info = {}
    for i in range(count):
        name = f"chest_{i:03d}.nii.gz"
        vol, nodules = make_chest_phantom(seed * 100003 + i, nodule=bool(has_nodule[i]))
        write_nifti(folder / name, np.round(vol).astype(np.int16), CHEST_SPACING)
        label = "nodule" if nodules else "no-nodule"
        rows.append(f"{name},{label}")
        info[name] = nodules
        if progress is not None:
            progress(i + 1, count)
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    (folder / "nodules.json").write_text(json.dumps(info, indent=1))


def demo_masks_folder(
    name: str,
    count: int | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Folder of the label masks of the demo set ``name`` (demo-chest), one per volume under the volume's
    name, with ``label_names.csv``; generated if missing, atomically, beside the volumes' folder (which is
    made too when missing). ``progress(done, total)`` after each mask."""
    from .label_names import write_label_names
    from .nifti import make_geometry, write_nifti_volume

    if name not in MASK_DEMOS:
        raise ValueError(f"the demo set {name!r} has no masks; {', '.join(MASK_DEMOS)} has")
    volumes = demo_folder(name, count=count, seed=seed, cache_dir=cache_dir, progress=progress)
    folder = volumes.with_name(volumes.name + "-masks")
    if (folder / "masks.json").is_file():
        return folder
    count = DEFAULT_DEMO_COUNT if count is None else int(count)
    try:
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for i, has_nodule in enumerate(_chest_nodules(count, int(seed))):
                _, _, labels = chest_phantom_with_labels(int(seed) * 100003 + i, nodule=bool(has_nodule))
                write_nifti_volume(tmp / f"chest_{i:03d}.nii.gz", labels, make_geometry(CHEST_SPACING), labels=True)
                if progress is not None:
                    progress(i + 1, count)
            write_label_names(tmp, CHEST_LABELS)
            (tmp / "masks.json").write_text(json.dumps({"volumes": volumes.name, "labels": len(CHEST_LABELS)}))
            if folder.exists() and not (folder / "masks.json").is_file():  # an incomplete leftover
                shutil.rmtree(folder, ignore_errors=True)
    except OSError:
        if not (folder / "masks.json").is_file():  # not a concurrent process that finished first
            raise
    return folder
