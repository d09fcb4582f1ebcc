"""Whether a run starts, resumes or is refused: decided here alone, before any work.

A new run must not find a checkpoint (nothing is overwritten), a resumed one must
find it, and `auto` takes whichever applies. The trainer asks `decide_start` first.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..runtime import CheckpointError
from .options import TrainOptions


@dataclass(frozen=True)
class RunStart:
    resume: bool  # continue the checkpoint at options.checkpoint_path
    checkpoint_path: Path


def decide_start(options: TrainOptions) -> RunStart:
    """Start, resume or refuse (CheckpointError, one sentence) the run `options` describe."""
    path = options.checkpoint_path
    exists = path.is_file()
    if options.resume == "yes" and not exists:
        raise CheckpointError(f"nothing to resume: no checkpoint at {path}")
    if options.resume == "no" and exists:
        raise CheckpointError(f"{path} already exists; pass resume to continue it or choose another output folder")
    return RunStart(resume=exists, checkpoint_path=path)
