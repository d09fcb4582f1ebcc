"""Volumes to evaluate: a dataset folder, demo data or a checkpoint, as [N, D, H, W] in [-1, 1]."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data import VolumeDataset
from ..runtime import CHECKPOINT_NAME
from ..runtime.pretrained import is_pretrained


def is_checkpoint(source: str) -> bool:
    """A checkpoint file, a run folder holding one, or pretrained:<name> (anything else is volumes)."""
    path = Path(source)
    return (is_pretrained(source) or (path.is_file() and not source.endswith((".nii", ".nii.gz", ".npy")))
            or (path / CHECKPOINT_NAME).is_file())


def load_volumes(source: str, size: int, num: int | None = None, modality: str | None = None,
                 seed: int = 0, label: int | str | None = None, demo_seed: int = 0) -> tuple[np.ndarray, str]:
    """Volumes of `source` at `size`^3 in the model's range, and their modality.

    A folder or demo name goes through the same preprocessing as training data (so
    generated NIfTI files written by `crfgan sample` and real scans are treated
    alike); a demo set is generated with `num` volumes (default 24) from `demo_seed`.
    A checkpoint is sampled with latent seeds seed, seed + 1, ...
    """
    if is_checkpoint(source):
        from ..runtime import load_checkpoint

        return _generated(load_checkpoint(source), source, size, num, seed, label)
    dataset = VolumeDataset(source, size=size, modality=modality, demo_count=num,
                            demo_seed=demo_seed)
    return dataset.volumes(num), dataset.modality


def _generated(checkpoint, name: str, size: int, num: int | None, seed: int, label) -> tuple[np.ndarray, str]:
    """`num` (default 64) volumes of a loaded checkpoint from latent seeds seed, seed + 1, ..., and its modality."""
    from ..sampling import Sampler

    sampler = Sampler(checkpoint)
    if sampler.cfg.size != size:
        raise ValueError(f"checkpoint {name} makes {sampler.cfg.size}^3 volumes, not {size}^3")
    volumes = [sampler.sample(1, seed=seed + i, label=label)[0].model_units for i in range(num or 64)]
    return np.stack(volumes), sampler.modality


def model_size(source: str, default: int) -> int:
    """The cube side a checkpoint generates, else `default`."""
    if is_checkpoint(source):
        from ..runtime import load_checkpoint

        return load_checkpoint(source).config.size
    return default


# A demo name given as the fake set draws volumes of its own, never the real ones: a set
# compared with itself sits below the real-vs-real floor and hides what it should show.
FAKE_DEMO_SEED = 1
INJECTIONS = ("seams", "blur", "duplicate", "grid", "noise")


def _check_features(names: tuple[str, ...]) -> None:
    """Every feature extractor can be built (MedicalNet: its local file loads), or one line naming it."""
    from ..evaluation.features import build_extractor
    from ..messages import one_line

    if not names:
        raise ValueError("--features is empty; choose from shallow, resnet10, medicalnet:PATH")
    for kind in names:
        try:
            build_extractor(kind)
        except Exception as e:  # a user's weights file: unreadable, foreign or of another layout
            reason = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise ValueError(f"--features {kind}: {one_line(reason)}") from None


def evaluate_sources(real: str | None, fake: str, num: int | None = None, num_real: int | None = None, size: int = 64,
                     modality: str | None = None, label: int | str | None = None, seed: int = 0,
                     features: str = "shallow,resnet10", seeds: int = 3, inject: str | None = None,
                     strength: float = 0.3, sigma: float = 1.0, train: str | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """`crfgan eval`: every metric of `evaluation.evaluate` for a fake source against a real one.

    features: comma-separated extractors; `medicalnet:PATH` adds a local MedicalNet file.
    train: the generator's training volumes (a folder or demo name): adds the memorisation block,
        with `real` as the held-out set. Without it, a checkpoint's own training source is used
        when it is a folder or demo set that can be read here.
    real: a folder or demo name; None (or the checkpoint's own data source) with a checkpoint trained on
        a split: the split's test list.
    The result's `split` block says whether `real` was held out from training (True, False: its own
    training set, None: unknown).
    inject: corrupt the fake set first (seams, blur, duplicate, a nearest x4 grid or additive noise of std
        `sigma`), to watch the metrics react.
    """
    from ..evaluation import blur, duplicate, evaluate, slab_seams
    from ..evaluation.inject import nearest_grid, noise

    from ..data import Split
    from ..runtime import load_checkpoint

    names = tuple(f.strip() for f in features.split(",") if f.strip())
    _check_features(names)  # a bad weights file is found now, not after every feature was computed
    ckpt = load_checkpoint(fake) if is_checkpoint(fake) else None  # read once: size, split, training data
    record = ckpt.data.get("split") if ckpt else None
    split = Split.from_record(record) if isinstance(record, dict) else None
    size = ckpt.config.size if ckpt else model_size(real or "", size)
    if split is not None and (not real or split.matches(real, None)):
        # the checkpoint's own held-out list: never a volume it was trained on
        test = split.dataset("test", size, modality=modality)
        real_v, real_modality = test.volumes(num_real), test.modality
        real = f"{split.source} (test list, {len(real_v)} volumes)"
    elif not real:
        raise ValueError("give --real (the checkpoint records no split with a held-out test list)")
    else:
        real_v, real_modality = load_volumes(real, size, num=num_real, modality=modality)
    if ckpt is not None:
        fake_v, _ = _generated(ckpt, fake, size, num, seed, label)
    else:
        fake_v, _ = load_volumes(fake, size, num=num, modality=real_modality, demo_seed=FAKE_DEMO_SEED)
    if inject == "seams":
        fake_v = slab_seams(fake_v, period=size // 8, strength=strength)
    elif inject == "blur":
        fake_v = blur(fake_v, sigma=sigma)
    elif inject == "grid":
        fake_v = nearest_grid(fake_v, 4, 0.5)
    elif inject == "noise":
        fake_v = noise(fake_v, sigma)
    elif inject == "duplicate":
        fake_v = duplicate(fake_v, n_distinct=max(1, len(fake_v) // 10))
    elif inject is not None:
        raise ValueError(f"unknown injection {inject!r}; choose one of {', '.join(INJECTIONS)}")
    medicalnet = next((f for f in names if f.startswith("medicalnet:")), None)
    names = tuple(f for f in names if not f.startswith("medicalnet:"))
    result = evaluate(real_v, fake_v, features=names, medicalnet=medicalnet, seeds=tuple(range(seeds)),
                      progress=progress)
    result.setdefault("meta", {})["sources"] = {"real": real, "fake": fake, "inject": inject, "size": size}
    result["split"], train_v = _train_side(ckpt.data if ckpt else None, split, train, real, size, real_modality)
    if train_v is not None:
        from ..evaluation.memorisation import memorisation

        result["memorisation"] = memorisation(train_v, real_v, fake_v)
    return result


def _train_side(data: dict | None, split, train: str | None, real: str, size: int, modality: str):
    """The report's `split` block (what `real` is, relative to the training data) and the training volumes.

    data: the checkpoint's data record (None for other fake sources); train: the user's --train.
    """
    from ..data import training_dataset

    if split is not None and train is None:
        block = {"real": real, "train": f"{split.source} (train list, {len(split.parts['train'])} volumes)",
                 "held_out": True, "split": {k: v for k, v in split.record().items() if k != "parts"}
                 | {"counts": split.counts()}}
        return block, split.dataset("train", size, modality=modality).volumes()
    dataset = None
    if train is None and data is not None and data.get("source") not in (None, real):
        # the source the checkpoint records, when it is on this machine
        dataset = training_dataset(data, size, modality=modality)
        train = data["source"] if dataset is not None else None
    elif train is None and data is not None:
        train = data.get("source")  # None, or the real set itself
    # a demo name is the same draw (demo seed 0) whatever its count: then real overlaps training
    held_out = None if train is None else train != real
    block = {"real": real, "train": train, "held_out": held_out}
    if held_out is False:
        block["note"] = "evaluated against its own training set: realism is flattered, memorisation not measurable"
    if train is None or held_out is False:
        return block, None
    return block, dataset.volumes() if dataset is not None else load_volumes(train, size, modality=modality)[0]


# ---- the sample widget's Nearest training volume button
def reference_volumes(sampler) -> tuple:
    """(training volumes, held-out test volumes or None) of the sampler's checkpoint, prepared at its size.

    Slow the first time (every file is preprocessed into the cache), so it runs in a worker.
    """
    from ..data import DatasetError, Split, training_dataset

    data = sampler.checkpoint.data
    # the settings the run trained with, so the volumes are preprocessed (and filtered) as it saw them
    kw = {"modality": data.get("modality"), "conditional": bool(data.get("conditional"))}
    train = training_dataset(data, sampler.cfg.size, **kw)
    if train is None:
        split = data.get("split")
        where = split.get("source") if isinstance(split, dict) else data.get("source")
        raise DatasetError(f"The training volumes of this checkpoint ({where or 'source not recorded'}) "
                           "are not on this machine.")
    test = None
    if isinstance(data.get("split"), dict):
        test = Split.from_record(data["split"]).dataset("test", sampler.cfg.size, **kw)
    return train, test


def nearest_training_volume(sampler, volume, references: tuple | None = None) -> tuple:
    """(references, result): `nearest_training` of `volume` (model units) plus the file and its volume."""
    from ..evaluation.memorisation import nearest_training

    if references is None:
        references = reference_volumes(sampler)
    train, test = references
    result = nearest_training(volume, train, test)
    result["file"] = train.files[result["index"]]
    result["volume"] = train[result["index"]][0].numpy()
    return references, result
