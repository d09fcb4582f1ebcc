"""Driving a run to its end for callers without a loop of their own (CLI, demo, paper tables, scripts).

`run_training` consumes the trainer's generator (`trainer.train`, which starts, resumes
or refuses as `lifecycle.decide_start` says), calls back after each report, stops when
asked, and says what happened: trained from where to where, stopped, or a finished
run reused as it was.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import distributed
from ..data import VolumeDataset
from ..runtime import load_checkpoint
from .options import TrainOptions, TrainReport
from .trainer import train


@dataclass(frozen=True)
class RunResult:
    checkpoint_path: Path
    start: int  # the iteration training started from
    iteration: int  # the checkpoint's iteration at the end
    stopped: bool  # stopped early by the caller (the checkpoint holds the last finished iteration)
    last: TrainReport | None  # the last report (None: nothing left to train)
    metrics: dict  # iters_per_s, peak_memory_mb of the run (from the checkpoint when nothing was trained)

    @property
    def reused(self) -> bool:
        """A finished run found in the folder and used as it is."""
        return self.last is None


def run_training(options: TrainOptions, dataset: VolumeDataset | None = None,
                 on_report: Callable[[TrainReport], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> RunResult:
    """Train to `options.iterations` (or until `should_stop()` says so after a step)."""
    gen = train(options, dataset)
    last, stopped, start = None, False, None
    for report in gen:
        if start is None:
            start = report.iteration - 1
        last = report
        if on_report is not None:
            on_report(report)
        asked = should_stop is not None and should_stop()
        if distributed.any_rank(asked):  # under torchrun every rank stops after the same iteration
            gen.close()  # the trainer writes the checkpoint at this iteration
            stopped = True
            break
    if last is None:  # nothing left to train: the finished checkpoint says what the run did
        ckpt = load_checkpoint(options.checkpoint_path)
        return RunResult(options.checkpoint_path, ckpt.iteration, ckpt.iteration, False, None, dict(ckpt.metrics))
    metrics = {"iters_per_s": last.iters_per_s, "peak_memory_mb": last.peak_memory_mb, "device": last.device}
    return RunResult(options.checkpoint_path, start, last.iteration, stopped, last, metrics)
