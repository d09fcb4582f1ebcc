"""GAN training of many runs (paper-tables, sweep): every run with its own options and folder.

Whether a run starts, resumes or is reused is decided by :func:`~napari_crfgan.training.run_training`
(resume "auto": a finished checkpoint is reused as it is, an unfinished one continued), so a
killed batch of runs picks up where it stopped. This module keeps each run's loss history
(``history.json`` beside the checkpoint, for loss figures) and can train runs side by side,
one process each (more processes than cores is fine: each has one torch thread, and the OS
shares the cores).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

from ..training import TrainOptions, TrainReport, run_training

HISTORY_NAME = "history.json"


def _history_until(history: dict, iteration: int) -> dict:
    """The loss history up to `iteration` (a resumed run retrains what came after its checkpoint)."""
    return {k: [v for v, it in zip(vals, history["iteration"]) if it <= iteration] for k, vals in history.items()}


def train_one(options: TrainOptions, dataset, log) -> dict:
    """Train (or reuse / resume) one run; returns its last report's figures and loss history."""
    options = dataclasses.replace(options, resume="auto")
    hist_path = Path(options.out) / HISTORY_NAME
    saved = json.loads(hist_path.read_text()) if hist_path.is_file() else {}
    history = saved.get("history", {"iteration": [], "g": [], "d": []})
    step = max(1, options.iterations // 100)
    start: int | None = None

    def on_report(report: TrainReport) -> None:
        nonlocal history, start
        if start is None:  # the first newly trained iteration says where the run started
            start = report.iteration - 1
            history = _history_until(history, start)
            if start:
                log(f"{options.model}: resuming {options.checkpoint_path} at iteration {start}")
        if report.iteration % step == 0 or report.iteration == options.iterations:
            history["iteration"].append(report.iteration)
            history["g"].append(float(report.losses.get("g", np.nan)))
            history["d"].append(float(report.losses.get("d", np.nan)))
        if report.iteration % max(1, options.iterations // 10) == 0:
            log(f"{options.model} {options.preset}: {report.iteration}/{options.iterations} it, "
                f"{report.iters_per_s:.2f} it/s")

    t0 = time.perf_counter()
    result = run_training(options, dataset, on_report=on_report)
    ckpt = str(result.checkpoint_path)
    if result.reused:
        log(f"{options.model}: reusing {ckpt} ({result.iteration} iterations)")
        return {"checkpoint": ckpt, "history": history, "reused": True, **saved.get("summary", {})}
    summary = {**{k: result.metrics[k] for k in ("iters_per_s", "peak_memory_mb", "device")},
               "seconds": round(time.perf_counter() - t0, 1), "iterations": options.iterations}
    hist_path.write_text(json.dumps({"history": history, "summary": summary}))
    return {"checkpoint": ckpt, "history": history, "reused": False, **summary}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train_worker(options: TrainOptions, threads: int | None) -> dict:
    """One system's training in a worker process (the dataset comes from the on-disk cache)."""
    return train_one(dataclasses.replace(options, threads=threads), None, _stderr)


def train_all(options: dict, dataset, log, workers: int = 1, threads: int | None = None) -> dict:
    """Train every run of `options` (key -> TrainOptions): `workers` worker processes at a time (each with
    `threads` torch threads), or one after the other in this process when `workers` is 1. Runs are queued
    in the order given (put the runs that should share the cores alike together)."""
    if workers <= 1:
        return {key: train_one(opts, dataset, log) for key, opts in options.items()}
    workers = min(len(options), workers)
    log(f"training {len(options)} runs, {workers} at a time (one process each, {threads or 'default'} "
        "thread(s))")
    ctx = mp.get_context("spawn")  # a fresh interpreter: no torch thread pool or CUDA state inherited
    with ctx.Pool(workers) as pool:
        jobs = {key: pool.apply_async(_train_worker, (opts, threads)) for key, opts in options.items()}
        return {key: job.get() for key, job in jobs.items()}
