"""Whether a run starts, resumes or is refused: decided here alone, before any work.

A new run must not find a checkpoint (nothing is overwritten), a resumed one must
find it, and `auto` takes whichever applies. A resumed run must be the same run: a
generator-only file, or a checkpoint started with other data, seed or batch size, is
refused (`identity`). The output folder must be writable; temporary files a killed
save left behind are removed. The trainer asks `decide_start` first, and so does the
CLI before it prepares the data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import distributed
from ..files import TMP_MARK, check_writable
from ..model import build_system, get_config
from ..runtime import CheckpointError, load_checkpoint, process_device
from ..runtime.memory import available_memory_mb
from .identity import differences, recorded_identity
from .options import TrainOptions, run_identity


@dataclass(frozen=True)
class RunStart:
    resume: bool  # continue the checkpoint at options.checkpoint_path
    checkpoint_path: Path
    removed: list[Path] = field(default_factory=list)  # stale temporary files cleaned up


def remove_stale_temporaries(folder: Path, name: str) -> list[Path]:
    """Temporary files of `name` that a save killed half-way (SIGKILL, power cut) left in `folder`."""
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".{name}.*{TMP_MARK}*") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def memory_floor_mb(options: TrainOptions, world_size: int = 1) -> float:
    """What a step needs at the very least in each process: fp32 weights, gradients and both Adam moments
    (counted on the meta device; DDP adds its gradient buckets) and two copies of this process's share of
    the batch. A lower bound: a run that needs more is surely refused."""
    cfg = get_config(options.preset, **options.config_fields())
    with torch.device("meta"):
        parameters = sum(build_system(options.model, cfg).network_counts().values())
    per_parameter = 16 + (4 if world_size > 1 else 0)
    return (parameters * per_parameter + 2 * options.batch_size // world_size * cfg.size**3 * 4) / 2**20


def check_memory(options: TrainOptions, device: torch.device) -> None:
    """Refuse a batch that cannot fit, with a sentence, instead of being killed by the kernel mid-step."""
    free = available_memory_mb(device)
    world = distributed.world_size()
    sharing = world if device.type == "cpu" else 1  # processes on the CPU share its memory
    need = memory_floor_mb(options, world) * sharing
    if free is not None and need > free:
        on = f" in {sharing} processes" if sharing > 1 else ""
        raise MemoryError(f"batch size {options.batch_size} at preset {options.preset} needs at least "
                          f"{need:,.0f} MB{on} (weights, optimiser state and the batch), more than the {free:,.0f} MB "
                          f"free on {device}; choose a smaller --batch-size or preset")


def decide_start(options: TrainOptions) -> RunStart:
    """Start, resume or refuse (CheckpointError / OSError, one sentence) the run `options` describe."""
    path = options.checkpoint_path
    device = process_device(options.device)
    world = distributed.world_size()
    if options.batch_size % world:
        raise ValueError(f"--batch-size {options.batch_size} is the global batch, split over {world} processes: "
                         f"it must be a multiple of {world}")
    if options.precision == "fp16" and device.type != "cuda":
        raise ValueError(f"--precision fp16 needs a CUDA device, not {device}; bf16 runs on the CPU")
    check_memory(options, device)
    check_writable(path.parent)
    exists = path.is_file()
    if options.resume == "yes" and not exists:
        raise CheckpointError(f"nothing to resume: no checkpoint at {path}")
    if options.resume == "no" and exists:
        raise CheckpointError(f"{path} already exists; pass --resume to continue it or choose another output folder")
    if exists:
        ckpt = load_checkpoint(path, model=options.model, preset=options.preset)
        if ckpt.generator_only:
            raise CheckpointError(f"{path} holds only generator weights (a pretrained or exported model): "
                                  "it samples, but cannot be resumed")
        diff = differences(recorded_identity(ckpt.options), run_identity(options))
        if diff and not options.fine_tune:
            raise CheckpointError(f"{path} was started with {', '.join(diff)}; resume with the same values, "
                                  "choose another output folder, or pass --fine-tune to continue it on purpose")
    return RunStart(resume=exists, checkpoint_path=path, removed=remove_stale_temporaries(path.parent, path.name))
