"""Train / validation / test lists of a dataset, made once, written into the run, reused.

A generator scored against the volumes it was trained on looks better than it is, and
its memorisation cannot be measured at all. So ``crfgan split DATA --out RUN`` writes
``RUN/split.json``: the dataset's files cut into train, val and test (stratified by
class when the folder has a ``labels.csv``), with the fractions and seed that made it.
``crfgan train --out RUN`` then trains on the train list only and records the split in
the checkpoint; ``crfgan eval`` and paper-tables compare generated volumes with the
test list and measure memorisation against the train list.

The lists hold file names relative to the data folder (for a demo set: the demo
folder of that count and seed), so a split survives moving the folder.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..files import write_json_atomic

__all__ = ["SPLIT_NAME", "PARTS", "Split", "SplitOptions", "split_indices", "make_split", "write_split",
           "read_split", "find_split", "training_dataset"]

SPLIT_NAME = "split.json"
PARTS = ("train", "val", "test")
SPLIT_VERSION = 1


def split_indices(labels: Sequence[int] | None, fractions: Sequence[float] = (0.5, 0.25, 0.25), seed: int = 0,
                  n: int | None = None) -> dict[str, list[int]]:
    """Deterministic train / val / test indices, stratified by `labels` (or of `n` unlabelled items).

    Within each class the indices are permuted by ``numpy.random.default_rng(seed)``
    and cut by `fractions`; every part gets at least one item of each class (so each
    class needs at least three).
    """
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError("fractions must be three positive numbers (train, val, test)")
    total = float(sum(fractions))
    labels = np.zeros(int(n), dtype=int) if labels is None else np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {p: [] for p in PARTS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        count = len(idx)
        if count < 3:
            raise ValueError(f"class {int(cls)} has {count} volumes; the split needs at least 3 per class")
        n_val = max(1, int(round(count * fractions[1] / total)))
        n_test = max(1, int(round(count * fractions[2] / total)))
        n_train = count - n_val - n_test
        if n_train < 1:
            n_train, n_val = 1, count - 1 - n_test
        parts["train"] += idx[:n_train].tolist()
        parts["val"] += idx[n_train:n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val:].tolist()
    return {k: sorted(v) for k, v in parts.items()}


@dataclass(frozen=True)
class Split:
    """Which files of `source` are for training, validation and test."""

    source: str  # a folder path or a demo name
    parts: dict  # part name -> relative file names
    fractions: tuple[float, float, float]
    seed: int
    stratified: bool
    demo_count: int | None = None
    path: str | None = None  # the file it was read from (not written)

    def counts(self) -> dict[str, int]:
        return {p: len(self.parts[p]) for p in PARTS}

    def describe(self) -> str:
        c = self.counts()
        return (f"split of {self.source} (seed {self.seed}{', stratified by class' if self.stratified else ''}): "
                f"train {c['train']}, val {c['val']}, test {c['test']}")

    def record(self, part: str | None = None) -> dict:
        """JSON-able form (checkpoints and reports carry it; `part`: which list the data are)."""
        out = {"version": SPLIT_VERSION, "source": self.source, "demo_count": self.demo_count,
               "fractions": list(self.fractions), "seed": self.seed, "stratified": self.stratified,
               "parts": {p: list(self.parts[p]) for p in PARTS}}
        if part is not None:
            out["part"] = part
        if self.path:
            out["path"] = self.path
        return out

    @classmethod
    def from_record(cls, record: dict, path: str | None = None) -> Split:
        try:
            parts = {p: [str(f) for f in record["parts"][p]] for p in PARTS}
            return cls(source=str(record["source"]), parts=parts,
                       fractions=tuple(float(f) for f in record["fractions"]), seed=int(record["seed"]),
                       stratified=bool(record.get("stratified", False)),
                       demo_count=None if record.get("demo_count") is None else int(record["demo_count"]),
                       path=path or record.get("path"))
        except (KeyError, TypeError, ValueError, AttributeError):
            where = f" in {path}" if path else ""
            raise ValueError(f"not a split{where}: it needs source, fractions, seed and the lists "
                             f"{', '.join(PARTS)} (make one with crfgan split)") from None

    def matches(self, source: str, demo_count: int | None) -> bool:
        """Whether this split was made for `source` (same folder, or same demo set and count)."""
        if self.source.startswith("demo-") or str(source).startswith("demo-"):
            return self.source == str(source) and (demo_count is None or self.demo_count == demo_count)
        return Path(self.source).expanduser().resolve() == Path(source).expanduser().resolve()

    def dataset(self, part: str, size: int, **kw):
        """The volumes of one part as a :class:`~napari_crfgan.data.VolumeDataset` (with `masks`: a
        :class:`~napari_crfgan.data.PairedDataset`; the split recorded on it)."""
        from .paired import open_dataset

        if part not in PARTS:
            raise ValueError(f"unknown part {part!r}; choose one of {', '.join(PARTS)}")
        ds = open_dataset(self.source, size=size, files=self.parts[part], demo_count=self.demo_count, **kw)
        ds.split = self.record(part)
        return ds


@dataclass
class SplitOptions:
    """`crfgan split`: its flags come from these fields."""

    data: str = field(default="", metadata={"help": "dataset folder or demo-brain|demo-chest", "required": True})
    out: str = field(default="runs/crfgan", metadata={"help": f"run folder; {SPLIT_NAME} is written there"})
    train: float = field(default=0.7, metadata={"help": "fraction for training"})
    val: float = field(default=0.1, metadata={"help": "fraction for validation"})
    test: float = field(default=0.2, metadata={"help": "fraction held out for evaluation"})
    seed: int = field(default=0, metadata={"help": "seed of the shuffle"})
    demo_count: int | None = field(default=None, metadata={"help": "number of demo volumes (demo sets)"})
    force: bool = field(default=False, metadata={"help": f"replace an existing {SPLIT_NAME}"})


def make_split(source: str | os.PathLike, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0,
               demo_count: int | None = None) -> Split:
    """Cut the volume files of `source` into train / val / test (by class when it has a labels.csv).

    Only file names are read (no preprocessing); a file the dataset later finds unusable
    is skipped from its part, with the usual warning. With a labels.csv, files without a
    row are left out of every part, with a :class:`~.dataset.LabelsWarning` naming them.
    """
    from .dataset import LABELS_FILE, DatasetError, LabelsWarning, find_volume_files, read_labels_csv
    from .demo import DEFAULT_DEMO_COUNT, DEMO_DATASETS, demo_folder

    source = str(source)
    if source in DEMO_DATASETS:
        demo_count = DEFAULT_DEMO_COUNT if demo_count is None else int(demo_count)
        folder = demo_folder(source, count=demo_count)
    else:
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise DatasetError(f"{folder} is not a folder of volumes")
        source = str(folder.resolve())
        demo_count = None
    files = [p.relative_to(folder).as_posix() for p in find_volume_files(folder)]
    labels_path = folder / LABELS_FILE
    labels = None
    if labels_path.is_file():
        names = read_labels_csv(labels_path)
        unlabelled = [f for f in files if f not in names]
        if unlabelled:
            lines = "\n".join(f"  {f}: no label" for f in unlabelled)
            warnings.warn(LabelsWarning(f"{len(unlabelled)} of {len(files)} volume files of {folder} have no row in "
                                        f"{labels_path} and are left out of the split:\n{lines}"), stacklevel=2)
        files = [f for f in files if f in names]  # unlabelled files cannot be trained on conditionally
        classes = sorted({names[f] for f in files})
        labels = [classes.index(names[f]) for f in files]
    if len(files) < 3:
        raise DatasetError(f"{source} has {len(files)} volume file(s); a split needs at least 3")
    idx = split_indices(labels, fractions, seed, n=len(files))
    return Split(source=source, parts={p: [files[i] for i in idx[p]] for p in PARTS},
                 fractions=tuple(float(f) for f in fractions), seed=int(seed), stratified=labels is not None,
                 demo_count=demo_count)


def write_split(split: Split, folder: str | os.PathLike, force: bool = False) -> Path:
    """Write `folder/split.json` atomically; an existing, different split is kept unless `force`."""
    path = Path(folder) / SPLIT_NAME
    if path.exists() and not force:
        old = read_split(path)
        if old.record() | {"path": None} != split.record() | {"path": None}:
            raise FileExistsError(f"{path} already holds another split ({old.describe()}); "
                                  "runs trained on it would lose their held-out set (use --force to replace it)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, split.record())
    return path


def read_split(path: str | os.PathLike) -> Split:
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no split file {path} (make one with crfgan split)") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the split {path}: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"not a split: {path}")
    return Split.from_record(record, path=str(path))


def find_split(choice: str, out: str | os.PathLike) -> Split | None:
    """The split a training run uses: "auto" (``<out>/split.json`` when it exists), "none", or a path."""
    if choice in ("", "none"):
        return None
    if choice == "auto":
        path = Path(out) / SPLIT_NAME
        return read_split(path) if path.is_file() else None
    return read_split(choice)


def training_dataset(data: dict, size: int, **kw):
    """The volumes a checkpoint was trained on (from its ``data`` record), or None when they are not here.

    With a recorded split, the train list; else the whole source (a demo set of the
    recorded count, or the folder when it exists on this machine).
    """
    from .dataset import VolumeDataset

    if isinstance(data.get("split"), dict):
        split = Split.from_record(data["split"])
        if not split.source.startswith("demo-") and not Path(split.source).is_dir():
            return None
        return split.dataset("train", size, **kw)
    source = data.get("source")
    if not source:
        return None
    if source.startswith("demo-"):
        return VolumeDataset(source, size=size, demo_count=data.get("count"), **kw)
    return VolumeDataset(source, size=size, **kw) if Path(source).is_dir() else None
