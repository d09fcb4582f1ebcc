"""Image / label-mask pairs for the mask-to-volume systems: a folder of images and a folder of masks.

A mask belongs to the image of the same name, relative to its folder, whatever the volume suffix
(``a/case1.nii.gz`` pairs with ``a/case1.nii`` or ``a/case1.npy``); with ``masks="demo"`` and a demo set
that has masks (demo-chest), its own (:func:`~.demo.demo_masks_folder`). The images are read,
preprocessed, cached and reported exactly as :class:`~.dataset.VolumeDataset` does (this is one); the
mask of each goes through the same cube with nearest-neighbour resampling
(:func:`~.preprocess.preprocess_labels`) and is cached beside it.

A pair is skipped, named with its reason in the dataset's one :class:`~.dataset.SkippedFilesWarning`,
when its mask is missing (or two masks match), unreadable, on another grid than the image (another
(D, H, W) shape, or another affine beyond 1e-3 mm; a ``.npy`` has no affine, its shape is compared),
or not integer labels (fractions, NaN, negative labels, labels over 255).

An item is the image and its labels stacked as channels, ``[2, size, size, size]``: channel 0 in
[-1, 1], channel 1 the label of each voxel (a float holding an integer; 0 in the padding). The label
count `mask_classes` is one more than the largest label, or the label table's (``label_names.csv``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .cache import cache_key, file_digest
from .dataset import DatasetError, VolumeDataset, find_volume_files
from .demo import MASK_DEMOS, demo_masks_folder
from .label_names import read_label_names
from .nifti import VOLUME_SUFFIXES, VolumeError, check_regular_file, load_volume, read_npy, read_nifti, volume_grid
from .preprocess import preprocess_labels

__all__ = ["DEMO_MASKS", "MAX_LABEL", "PairedDataset", "as_labels", "open_dataset", "read_labels"]

#: `masks` value meaning the demo set's own masks (`crfgan train --data demo-chest --masks`)
DEMO_MASKS = "demo"
MAX_LABEL = 255  # one-hot channels: a label map with labels in the thousands is not a segmentation
#: world coordinates (mm) of the image and mask grids may differ by this much (NIfTI stores float32)
SAME_GRID_MM = 1e-3


def open_dataset(source, size: int, masks: str | os.PathLike | None = None, **kw) -> VolumeDataset:
    """A :class:`PairedDataset` when masks are given, else a :class:`VolumeDataset`."""
    return PairedDataset(source, masks, size, **kw) if masks else VolumeDataset(source, size, **kw)


def _stem(rel: str) -> str:
    low = rel.lower()
    return next(rel[: -len(s)] for s in VOLUME_SUFFIXES if low.endswith(s))


def _dims(shape) -> str:
    return "x".join(str(int(n)) for n in shape)


def read_labels(path: Path) -> np.ndarray:
    """An integer label map (D, H, W) from a NIfTI (reoriented as the images are) or .npy file; VolumeError
    naming what is wrong with one that is not."""
    if path.name.lower().endswith(".npy"):
        data = read_npy(path)
    else:
        data = read_nifti(path, keep_integers=True).data
    return as_labels(data)


def as_labels(data: np.ndarray) -> np.ndarray:
    """`data` as uint8 labels, or VolumeError saying why it is not a label map."""
    if data.dtype.kind == "f":
        finite = np.isfinite(data)
        if not finite.all():
            raise VolumeError(f"{int((~finite).sum())} voxels are NaN or infinite, not labels")
        fraction = data != np.round(data)
        if fraction.any():
            raise VolumeError(f"non-integer values (e.g. {float(data[fraction][0]):g}): a mask holds integer labels")
    lo, hi = (int(data.min()), int(data.max()))
    if lo < 0:
        raise VolumeError(f"a negative label ({lo}); labels are 0 (background), 1, 2, ...")
    if hi > MAX_LABEL:
        raise VolumeError(f"label {hi}: at most {MAX_LABEL} labels are supported")
    return data.astype(np.uint8)


class PairedDataset(VolumeDataset):
    """:class:`~.dataset.VolumeDataset` of the images, each with its label mask (module doc).

    Extra parameter: masks, the masks folder (or ``"demo"``). Extra attributes: masks_folder; mask_files
    (relative names, in item order); mask_classes; label_names ({label: name} from the table, or {}).
    """

    def __init__(self, source, masks: str | os.PathLike, size: int, *, conditional: bool = False,
                 cache_dir=None, progress=None, demo_count: int | None = None, demo_seed: int = 0, **kw):
        if conditional:
            raise DatasetError("class-conditional training (labels.csv) is for the latent models; a mask model "
                               "is conditioned on its masks")
        self.masks = str(masks)
        if self.masks == DEMO_MASKS:
            if source not in MASK_DEMOS:
                raise DatasetError(f"masks {DEMO_MASKS!r} means a demo set's own masks, and {source} has none "
                                   f"({', '.join(MASK_DEMOS)} has); give the folder of its masks")
            self.masks_folder = demo_masks_folder(source, count=demo_count, seed=demo_seed, cache_dir=cache_dir,
                                                  progress=progress)
        else:
            self.masks_folder = Path(masks).expanduser()
            if not self.masks_folder.is_dir():
                raise DatasetError(f"The masks folder {self.masks_folder} does not exist or is not a folder.")
        try:
            self.label_names = read_label_names(self.masks_folder)
        except ValueError as exc:
            raise DatasetError(str(exc)) from None
        self._candidates: dict[str, list[str]] = {}
        for p in find_volume_files(self.masks_folder):
            rel = p.relative_to(self.masks_folder).as_posix()
            self._candidates.setdefault(_stem(rel), []).append(rel)
        self._pairs: dict[str, tuple[str, str, int]] = {}  # image name -> (cached mask array, mask name, top label)
        super().__init__(source, size, conditional=False, cache_dir=cache_dir, progress=progress,
                         demo_count=demo_count, demo_seed=demo_seed, **kw)
        self._mask_arrays = [self._pairs[rel][0] for rel in self.files]
        self.mask_files = [self._pairs[rel][1] for rel in self.files]
        top = max(self._pairs[rel][2] for rel in self.files)
        self.mask_classes = max(2, top + 1, max(self.label_names, default=-1) + 1)

    # ------------------------------------------------------------------ building
    def _mask_of(self, rel: str) -> str:
        found = self._candidates.get(_stem(rel), [])
        if not found:
            raise VolumeError(f"no mask of this name in {self.masks_folder}")
        if len(found) > 1:
            raise VolumeError(f"{len(found)} masks match it ({', '.join(found)}); keep one")
        return found[0]

    def _prepare(self, path: Path) -> tuple[Path, dict]:
        """The image's cached array (VolumeDataset's), after its mask is found, checked and cached too."""
        rel = path.relative_to(self.folder).as_posix()
        mask_rel = self._mask_of(rel)
        mask = self.masks_folder / mask_rel
        try:
            check_regular_file(mask)
            mask_grid = volume_grid(mask)
        except VolumeError as exc:
            raise VolumeError(f"mask {mask_rel}: {exc.reason}") from None
        check_regular_file(path)
        self._check_grid(volume_grid(path), mask_grid, mask_rel)
        decided = self.modality
        npy, meta = super()._prepare(path)
        try:
            array, top = self._prepare_mask(path, mask, mask_rel)
        except Exception:
            self.modality = decided  # a skipped pair decides nothing
            raise
        self._pairs[rel] = (str(array), mask_rel, top)
        return npy, meta

    @staticmethod
    def _check_grid(image, mask, mask_rel: str) -> None:
        (ishape, igeom), (mshape, mgeom) = image, mask
        if tuple(ishape) != tuple(mshape):
            raise VolumeError(f"mask {mask_rel} has {_dims(mshape)} voxels (z, y, x), the image {_dims(ishape)}")
        if igeom is not None and mgeom is not None and not np.allclose(igeom, mgeom, rtol=0, atol=SAME_GRID_MM):
            raise VolumeError(f"mask {mask_rel} has another affine than the image (they differ by up to "
                              f"{float(np.abs(igeom - mgeom).max()):.3g} mm)")

    def _prepare_mask(self, image_path: Path, mask: Path, mask_rel: str) -> tuple[Path, int]:
        """(cached label cube, largest label); keyed by both files' content and the image's preprocessing."""
        prep = self.preprocessing
        key = cache_key(file_digest(mask) + file_digest(image_path), {"labels": prep.as_dict()})
        hit = self.cache.get(key)
        if hit is not None:
            return hit[0], int(hit[1]["max_label"])
        try:
            labels = read_labels(mask)
        except VolumeError as exc:
            raise VolumeError(f"mask {mask_rel}: {exc.reason}") from None
        image, spacing = load_volume(image_path)  # CT: its blank end slices are trimmed from both
        cube, iso = preprocess_labels(labels, image, spacing, prep)
        top = int(labels.max())
        meta = {"spacing": list(iso), "max_label": top, "source_name": mask.name}
        return self.cache.put(key, cube, meta), top

    # ------------------------------------------------------------------ access
    def __getitem__(self, index: int) -> torch.Tensor:
        """Image and labels [2, size, size, size] (module doc)."""
        image = super().__getitem__(index)
        labels = np.load(self._mask_arrays[index], mmap_mode="r")
        return torch.cat([image, torch.from_numpy(np.array(labels, dtype=np.float32))[None]])

    def content_files(self) -> list[tuple[str, Path]]:
        return super().content_files() + [(f"masks/{m}", self.masks_folder / m) for m in self.mask_files]

    def summary(self) -> dict:
        names = [self.label_names.get(k, str(k)) for k in range(self.mask_classes)]
        return {**super().summary(), "masks": {"source": self.masks, "folder": str(self.masks_folder),
                                               "classes": self.mask_classes, "names": names}}

    def __repr__(self) -> str:
        return (f"PairedDataset({self.source!r}, masks={self.masks!r}, size={self.size}, modality={self.modality!r}, "
                f"count={len(self)}, skipped={len(self.skipped)}, mask_classes={self.mask_classes})")
