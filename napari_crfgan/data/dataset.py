"""Folder datasets of 3D volumes for training.

A source is a folder, searched recursively (sorted, hidden names skipped) for
``.nii``, ``.nii.gz`` and ``.npy`` files, or one of the demo names
(``demo-brain``, ``demo-chest``, see :mod:`napari_crfgan.data.demo`).

Each file is validated (:func:`load_volume`), normalised and fitted into the cube
(:mod:`.preprocess`) and cached on disk (:mod:`.cache`); items are read back lazily
with ``np.load(mmap_mode='r')`` so a large dataset does not sit in memory. Files
that cannot be used (not a regular file, e.g. a named pipe; unreadable; not one 3D
volume; an unusable voxel spacing; any NaN or infinite voxel; constant; or any other
failure) are skipped and reported once with a :class:`SkippedFilesWarning`, one
line per file with its reason; a folder without any usable volume raises
:class:`DatasetError` before any training starts. Volumes whose fit into the cube is
extreme (:func:`~.preprocess.resampling_problem`) are kept and reported once with a
:class:`ResamplingWarning`.

Modality: ``'ct'`` or ``'mri'``, or ``None`` for automatic: the demo sets have
theirs (demo-chest: CT, demo-brain: MRI); for a folder, the first usable volume
(in sorted order) decides: CT when its raw minimum is <= -500 (Hounsfield units:
air is -1000), MRI otherwise. A CT stored without the HU offset (e.g. 0..4095)
therefore needs ``modality='ct'``. A warning is given when other volumes of the
folder disagree with the decision.

Labels (class-conditional training): an optional ``labels.csv`` at the folder root
with the header ``filename,label``; ``filename`` is relative to the folder. Labels
may be integers or strings (surrounding spaces are ignored; when every label of the
file is an integer they are compared as integers, so ``1`` and ``01`` are one class);
the distinct labels of the usable volumes are sorted (numerically when all are
integers) and numbered 0..K-1 in that order; ``class_names`` holds them as strings.
Rows whose file is not a volume of the folder, or was skipped, are reported with a
:class:`LabelsWarning`.
"""

from __future__ import annotations

import csv
import os
import statistics
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .cache import VolumeCache, cache_key, file_digest
from .demo import DEMO_DATASETS, DEMO_MODALITY, demo_folder
from .nifti import VolumeError, _short, check_regular_file, is_volume_file, load_volume, nifti_orientation
from .preprocess import MODALITIES, Preprocessing, detect_modality

__all__ = ["VolumeDataset", "DatasetError", "SkippedFilesWarning", "ResamplingWarning", "LabelsWarning",
           "find_volume_files", "read_labels_csv"]

LABELS_FILE = "labels.csv"


class DatasetError(ValueError):
    """No usable dataset could be built from a source (raised before any training)."""

    def __init__(self, message: str, skipped: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.skipped = list(skipped or [])


class SkippedFilesWarning(UserWarning):
    """Some files of a dataset folder were skipped; the message lists each with its reason."""


class ResamplingWarning(UserWarning):
    """Some volumes are kept but fit the cube badly (too thin, too small); the message lists each."""


class LabelsWarning(UserWarning):
    """Some rows of labels.csv are not used (or conflict); the message names each file."""


def find_volume_files(folder: str | os.PathLike) -> list[Path]:
    """Volume files (.nii, .nii.gz, .npy) under ``folder``, recursively, sorted by relative path.

    Names starting with a dot (hidden files and folders) are ignored.
    """
    folder = Path(folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and is_volume_file(name):
                found.append(Path(root) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _norm_rel(name: str) -> str:
    name = name.strip().replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{relative filename: label}`` from a ``filename,label`` CSV file.

    Labels are stripped; when all of them are integers they are written back as
    ``str(int(label))`` so ``1``, ``01`` and `` 1 `` are one class. A file listed twice
    with different labels keeps the last one, with a :class:`LabelsWarning`.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [r for r in reader if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise DatasetError(f"Cannot read {path}: {reason}.") from None
    if not rows:
        raise DatasetError(f"{path} is empty; it needs the header 'filename,label'.")
    header = [c.strip().lower() for c in rows[0]]
    if "filename" not in header or "label" not in header:
        raise DatasetError(f"{path} must start with the header 'filename,label' (found {','.join(rows[0])!r}).")
    fi, li = header.index("filename"), header.index("label")
    pairs = [(_norm_rel(r[fi]), r[li].strip()) for r in rows[1:] if len(r) > max(fi, li) and r[fi].strip()
             and r[li].strip()]
    try:  # integer labels are numbers: '1', '01' and ' 1 ' are one class
        pairs = [(name, str(int(label))) for name, label in pairs]
    except ValueError:
        pass
    labels = dict(pairs)  # the last row of a file wins
    conflicts = sorted({name for name, label in pairs if label != labels[name]})
    if conflicts:
        lines = "\n".join(f"  {name}: the last label, {labels[name]!r}, is used" for name in conflicts)
        message = f"{path} lists {len(conflicts)} file(s) more than once with different labels:\n{lines}"
        warnings.warn(LabelsWarning(message), stacklevel=2)
    return labels


def _lines(items: list[tuple[str, str]]) -> str:
    """``  name: reason`` lines of a warning, one per file."""
    return "\n".join(f"  {name}: {reason}" for name, reason in items)


def _skip_reason(exc: Exception, path: Path) -> str:
    """Why a file was skipped, as one short line."""
    if isinstance(exc, VolumeError):
        reason = exc.reason
    elif isinstance(exc, OSError):
        what = exc.strerror or _short(exc, path=path)
        other = exc.filename is not None and os.fspath(exc.filename) != os.fspath(path)
        reason = f"{what}: {exc.filename}" if other else f"cannot read the file ({what})"  # other: the cache
    else:
        reason = f"failed ({_short(exc, path=path)})"
    return " ".join(str(reason).split())


def _class_order(values) -> list[str]:
    values = set(values)
    try:
        return [str(v) for v in sorted(values, key=lambda v: int(v))]
    except ValueError:
        return sorted(values)


class VolumeDataset(Dataset):
    """Preprocessed 3D volumes of a folder (or demo set) as ``[1, size, size, size]`` tensors.

    Parameters
    ----------
    source : folder path, or 'demo-brain' / 'demo-chest'.
    size : side of the cube the volumes are fitted into (voxels).
    modality : 'ct', 'mri' or None (automatic, see the module docstring).
    cache_dir : cache root (default :func:`napari_crfgan.data.cache_dir`).
    conditional : use ``labels.csv`` for class-conditional training; files without
        a label are then skipped, and a missing ``labels.csv`` is an error.
    progress : optional ``progress(done, total)`` called after each file is prepared
        (for a demo set generated on first use, first after each generated volume).
    demo_count, demo_seed : number of volumes and seed of a demo set.
    files : only these relative names of the source (a part of a :class:`~.split.Split`);
        a name that is not there is an error.

    Attributes
    ----------
    modality : 'ct' or 'mri'.
    preprocessing : the :class:`Preprocessing` settings applied.
    files : relative names (posix) of the usable volumes, in item order.
    labels : class index per item (list[int]) when every usable file has a label
        in ``labels.csv``, else None.
    class_names : label names, index = class index ([] without labels).
    num_classes : len(class_names) when conditional, else 0.
    spacings : isotropic spacing (s, s, s) in mm of each preprocessed item.
    spacing : median of those, (s, s, s) mm.
    skipped : [(relative name, reason)] of the files that were not used.
    split : the split record when the volumes are one part of a split (else None).
    """

    # long: validation, preprocessing and caching of every file happen here, before any training
    def __init__(
        self,
        source: str | os.PathLike,
        size: int,
        modality: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        conditional: bool = False,
        progress: Callable[[int, int], None] | None = None,
        demo_count: int | None = None,
        demo_seed: int = 0,
        files: Sequence[str] | None = None,
    ):
        self.size = int(size)
        self.split: dict | None = None
        self.conditional = bool(conditional)
        self.cache = VolumeCache(cache_dir)
        if modality is not None:
            modality = str(modality).lower()
            if modality == "auto":
                modality = None
            elif modality not in MODALITIES:
                raise ValueError(f"modality must be 'ct', 'mri' or None, got {modality!r}")

        if isinstance(source, str) and source in DEMO_DATASETS:
            self.source = source
            self.folder = demo_folder(source, count=demo_count, seed=demo_seed, cache_dir=cache_dir, progress=progress)
            modality = modality or DEMO_MODALITY[source]
        else:
            self.folder = Path(source).expanduser()
            self.source = str(self.folder)
            if not self.folder.exists():
                raise DatasetError(f"The data folder {self.folder} does not exist.")
            if not self.folder.is_dir():
                raise DatasetError(f"{self.folder} is not a folder; give a folder of .nii, .nii.gz or .npy volumes.")

        auto_modality = modality is None
        paths = find_volume_files(self.folder)
        if not paths:
            raise DatasetError(f"No volume files (.nii, .nii.gz or .npy) were found in {self.folder}.")
        found = {p.relative_to(self.folder).as_posix() for p in paths}  # the whole folder, for labels.csv
        if files is not None:
            paths = self._only(paths, files)

        labels_path = self.folder / LABELS_FILE
        raw_labels = read_labels_csv(labels_path) if labels_path.is_file() else None
        if self.conditional and raw_labels is None:
            raise DatasetError(
                f"Conditional training needs {LABELS_FILE} (header 'filename,label') in {self.folder}."
            )

        self.skipped: list[tuple[str, str]] = []
        self.files: list[str] = []
        self._arrays: list[str] = []
        self.spacings: list[tuple[float, float, float]] = []
        raw_names: list[str | None] = []
        raw_mins: list[float] = []
        resampled: list[tuple[str, str]] = []
        self.modality = modality
        total = len(paths)
        for i, path in enumerate(paths):
            rel = path.relative_to(self.folder).as_posix()
            label = raw_labels.get(rel) if raw_labels is not None else None
            try:
                if self.conditional and label is None:
                    raise VolumeError(f"no label in {LABELS_FILE}")
                npy, meta = self._prepare(path)
            except Exception as exc:  # whatever goes wrong with one file skips that file, not the run
                self.skipped.append((rel, _skip_reason(exc, path)))
            else:
                self.files.append(rel)
                self._arrays.append(str(npy))
                self.spacings.append(tuple(float(s) for s in meta["spacing"]))
                raw_names.append(label)
                raw_mins.append(float(meta.get("raw_min", np.nan)))
                if meta.get("resampling"):
                    resampled.append((rel, meta["resampling"]))
            if progress is not None:
                progress(i + 1, total)

        if self.skipped:  # also when none is left: the error below names only the first
            warnings.warn(SkippedFilesWarning(
                f"Skipped {len(self.skipped)} of {total} files in {self.folder}:\n" + _lines(self.skipped)),
                stacklevel=2)
        if not self.files:
            raise DatasetError(
                f"No usable volume in {self.folder}: all {total} files were skipped "
                f"({self.skipped[0][0]}: {self.skipped[0][1]}{', ...' if total > 1 else ''}).",
                self.skipped,
            )
        if resampled:
            warnings.warn(ResamplingWarning(
                f"{len(resampled)} of {len(self.files)} volumes in {self.folder} fit the {self.size}^3 cube "
                f"badly; they are kept, check their shape and spacing:\n" + _lines(resampled)), stacklevel=2)
        if raw_labels is not None:
            unused = [(name, "not a volume file of the folder") for name in raw_labels if name not in found]
            unused += [(name, f"its file was skipped ({reason})") for name, reason in self.skipped
                       if name in raw_labels]
            if unused:
                warnings.warn(LabelsWarning(
                    f"{len(unused)} rows of {labels_path} are not used:\n" + _lines(unused)), stacklevel=2)
        if auto_modality:
            self._check_modality(raw_mins)

        # labels
        if raw_labels is not None and all(n is not None for n in raw_names):
            self.class_names = _class_order(raw_names)
            index = {name: k for k, name in enumerate(self.class_names)}
            self.labels: list[int] | None = [index[str(n)] for n in raw_names]
        else:
            self.class_names, self.labels = [], None
        self.num_classes = len(self.class_names) if self.conditional else 0
        s = float(statistics.median(sp[0] for sp in self.spacings))
        self.spacing = (s, s, s)

    # ------------------------------------------------------------------ building
    def _only(self, paths: list[Path], files: Sequence[str]) -> list[Path]:
        by_name = {p.relative_to(self.folder).as_posix(): p for p in paths}
        wanted = [_norm_rel(str(f)) for f in files]
        missing = [f for f in wanted if f not in by_name]
        if missing:
            raise DatasetError(f"{len(missing)} file(s) of the split are not in {self.folder} "
                               f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                               "was the folder changed after the split was made?")
        if not wanted:
            raise DatasetError(f"The split part of {self.folder} is empty.")
        keep = set(wanted)
        return [p for p in paths if p.relative_to(self.folder).as_posix() in keep]

    def _prepare(self, path: Path) -> tuple[Path, dict]:
        """Cached preprocessed array of one file: ``(npy path, metadata)``; raises when it is unusable."""
        check_regular_file(path)  # before hashing it: reading a named pipe would wait forever
        digest = file_digest(path)
        raw = None
        modality = self.modality
        if modality is None:  # the first usable file decides
            stats = self.cache.get_stats(digest)
            if stats is None:
                raw = load_volume(path)
                stats = self._stats(*raw)
                self.cache.put_stats(digest, stats)
            modality = detect_modality(stats["raw_min"])
        prep = Preprocessing(modality, self.size)
        key = cache_key(digest, prep.as_dict())
        hit = self.cache.get(key)
        if hit is None:
            data, spacing = raw if raw is not None else load_volume(path)
            cube, iso = prep(data, spacing)
            stats = self._stats(data, spacing)
            meta = {**stats, "spacing": list(iso), "settings": prep.as_dict(), "source_name": path.name,
                    "resampling": prep.resampling_problem(data, spacing)}
            self.cache.put_stats(digest, stats)
            hit = self.cache.put(key, cube, meta), meta
        self.modality = modality  # only now: a file that is skipped decides nothing
        return hit

    @staticmethod
    def _stats(data: np.ndarray, spacing) -> dict:
        return {
            "raw_min": float(np.nanmin(data)),
            "raw_max": float(np.nanmax(data)),
            "raw_shape": [int(n) for n in data.shape],
            "raw_spacing": [float(s) for s in spacing],
        }

    def _check_modality(self, raw_mins: list[float]) -> None:
        other = [m for m in raw_mins if np.isfinite(m) and detect_modality(m) != self.modality]
        if other:
            warnings.warn(
                f"{len(other)} of {len(raw_mins)} volumes in {self.folder} do not look like "
                f"{self.modality.upper()} (modality was detected from the first volume); "
                f"pass modality='ct' or 'mri' to choose.",
                UserWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ access
    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.modality, self.size)

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, index: int) -> torch.Tensor:
        """The volume ``index`` as a float32 tensor [1, size, size, size] in [-1, 1]."""
        n = len(self._arrays)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} volumes")
        arr = np.load(self._arrays[index], mmap_mode="r")
        return torch.from_numpy(np.array(arr, dtype=np.float32))[None]

    def volumes(self, num: int | None = None) -> np.ndarray:
        """The first `num` volumes (all when None) as one float32 array [N, size, size, size] in [-1, 1]."""
        count = len(self) if num is None else min(num, len(self))
        return np.stack([self[i][0].numpy() for i in range(count)])

    def content_files(self) -> list[tuple[str, Path]]:
        """(name, path) of every file the items are made from, in item order (what a run's data digest covers)."""
        return [(rel, Path(self.folder) / rel) for rel in self.files]

    def label(self, index: int) -> int:
        """Class index of item ``index`` (-1 without labels)."""
        return -1 if self.labels is None else self.labels[index]

    def summary(self) -> dict:
        """Plain, JSON-serialisable description (for checkpoints and the GUI)."""
        return {
            "source": self.source,
            "folder": str(self.folder),
            "count": len(self),
            "skipped": len(self.skipped),
            "modality": self.modality,
            "size": self.size,
            "spacing": list(self.spacing),
            "classes": list(self.class_names),
            "class_names": list(self.class_names),  # same list, the name the sampler reads
            "conditional": self.conditional,
            "num_classes": self.num_classes,
            **self._orientation(),
            **({"split": self.split} if self.split is not None else {}),
        }

    def _orientation(self) -> dict:
        """``orientation`` (voxel order axis codes) and ``direction`` (3x3: column k the unit world (z, y, x)
        vector of the (D, H, W) axis k) of the training data: those of the first usable NIfTI file in
        item order (its header is read once); "RAS" and the identity when there is none (.npy files)."""
        found = getattr(self, "_orientation_record", None)
        if found is None:
            found = {"orientation": "RAS", "direction": np.eye(3).tolist()}
            for rel in self.files:
                if rel.lower().endswith((".nii", ".nii.gz")):
                    found = nifti_orientation(Path(self.folder) / rel) or found
                    break
            self._orientation_record = found
        return {"orientation": found["orientation"], "direction": [list(row) for row in found["direction"]]}

    def __repr__(self) -> str:
        return (
            f"VolumeDataset({self.source!r}, size={self.size}, modality={self.modality!r}, "
            f"count={len(self)}, skipped={len(self.skipped)}, classes={self.class_names})"
        )

