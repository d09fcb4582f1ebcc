"""Volumes to evaluate: a dataset folder, demo data or a checkpoint, as [N, D, H, W] in [-1, 1]."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..data import VolumeDataset


def is_checkpoint(source: str) -> bool:
    return Path(source).is_file() and not source.endswith((".nii", ".nii.gz", ".npy"))


def load_volumes(source: str, size: int, num: int | None = None, modality: str | None = None,
                 seed: int = 0, label: int | str | None = None, chunk: int | None = None,
                 progress: Callable[[int, int], None] | None = None, demo_seed: int = 0) -> tuple[np.ndarray, str]:
    """Volumes of `source` at `size`^3 in the model's range, and their modality.

    A folder or demo name goes through the same preprocessing as training data (so
    generated NIfTI files written by `crfgan sample` and real scans are treated
    alike); a demo set is generated with `num` volumes (default 24) from `demo_seed`.
    A checkpoint is sampled with latent seeds seed, seed + 1, ...
    """
    if is_checkpoint(source):
        from ..sampling import Sampler

        sampler = Sampler(source)
        if sampler.cfg.size != size:
            raise ValueError(f"checkpoint {source} makes {sampler.cfg.size}^3 volumes, not {size}^3")
        n = num or 64
        volumes = []
        for i in range(n):
            volumes.append(sampler.sample(1, seed=seed + i, label=label, chunk=chunk)[0].model_units)
            if progress:
                progress(i + 1, n)
        return np.stack(volumes), sampler.modality
    dataset = VolumeDataset(source, size=size, modality=modality, progress=progress, demo_count=num,
                            demo_seed=demo_seed)
    count = len(dataset) if num is None else min(num, len(dataset))
    return np.stack([dataset[i][0].numpy() for i in range(count)]), dataset.modality


def model_size(source: str, default: int) -> int:
    """The cube side a checkpoint generates, else `default`."""
    if is_checkpoint(source):
        from ..training import load_checkpoint

        return load_checkpoint(source).config.size
    return default
