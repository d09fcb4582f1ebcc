"""`crfgan bench --compare processes`: training speed of 1 and N processes, each world size launched by torchrun.

Weak scaling, as data-parallel training is used: every process trains `batch_size` volumes
per iteration, so the global batch grows with the processes. On the CPU the cores are
shared out (each process gets cores / N torch threads, unless `threads` is given); on
CUDA each process has its own GPU. Per world size: one warm-up iteration, then
`iterations` timed ones (DDP's gradient averaging included); the figures are rank 0's
median iteration time (the ranks wait for each other in every backward), iterations/s per
process, and volumes/s in total.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .. import distributed
from ..model import build_system, get_config
from ..runtime import PeakMemory, process_device, torch_threads
from ..training.ranks import torchrun_command


def bench_processes(preset: str = "small-64", model: str = "crfgan", batch_size: int = 2, iterations: int = 20,
                    world_sizes: tuple[int, ...] = (1, 2), device: str = "cpu", threads: int | None = None,
                    seed: int = 0, repeats: int = 3) -> dict:
    """Speed of `world_sizes` processes training `model` at `preset`, `batch_size` volumes per process; the
    world sizes alternate `repeats` times (a noisy neighbour hurts all alike) and each figure is the median
    run, with the total speed-up over the first world size taken per repeat (median, smallest, largest)."""
    runs: dict[int, list[dict]] = {w: [] for w in world_sizes}
    for _ in range(repeats):
        for world in world_sizes:
            per_process = threads or max(1, (os.cpu_count() or 1) // world)
            runs[world].append(_launch(world, [
                "--preset", preset, "--model", model, "--batch-size", str(batch_size), "--iterations",
                str(iterations), "--device", device, "--threads", str(per_process), "--seed", str(seed)]))
    results = {}
    for world, rs in runs.items():
        middle = sorted(rs, key=lambda r: r["volumes_per_s"])[len(rs) // 2]
        ups = sorted(a["volumes_per_s"] / b["volumes_per_s"] for a, b in zip(rs, runs[world_sizes[0]]))
        results[str(world)] = {**middle, "total_speedup": {"median": round(statistics.median(ups), 3),
                                                           "min": round(ups[0], 3), "max": round(ups[-1], 3)}}
    return {"preset": preset, "model": model, "batch_size_per_process": batch_size, "iterations": iterations,
            "repeats": repeats, "device": device, "machine": _machine(device), "results": results}


def _launch(world: int, args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [*torchrun_command(world), "-m", "napari_crfgan.experiments.bench_processes", *args, "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            tail = done.stderr.strip().splitlines()[-5:]
            raise RuntimeError(f"the {world}-process benchmark failed: {' / '.join(tail) or 'no output'}")
        return json.loads(out.read_text())


def _machine(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU, {os.cpu_count()} cores"


def _worker(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    for name, kind in (("--preset", str), ("--model", str), ("--batch-size", int), ("--iterations", int),
                       ("--device", str), ("--threads", int), ("--seed", int), ("--out", Path)):
        p.add_argument(name, type=kind, required=True)
    a = p.parse_args(argv)
    device = process_device(a.device)
    with torch_threads(a.threads):
        result = _timed_steps(a, device)
    if distributed.is_main():
        a.out.write_text(json.dumps(result))
    distributed.shutdown()


def _timed_steps(a, device: torch.device) -> dict:
    cfg = get_config(a.preset)
    world = distributed.world_size()
    torch.manual_seed(a.seed)
    real = (torch.rand(a.batch_size, 1, cfg.size, cfg.size, cfg.size) * 2 - 1).to(device)
    memory = PeakMemory(device)
    system = build_system(a.model, cfg).to(device)
    if world > 1:
        system.distribute()
    optimizers = system.make_optimizers()
    system.train_step(real, None, 0, optimizers)  # warm-up: allocator, optimiser state, DDP buckets
    seconds = []
    for it in range(1, a.iterations + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        system.train_step(real, None, it, optimizers)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - t0)
    rate = 1 / statistics.median(seconds)
    return {"processes": world, "threads_per_process": a.threads, "iters_per_s_per_process": round(rate, 4),
            "iters_per_s_total": round(rate * world, 4),
            "volumes_per_s": round(rate * a.batch_size * world, 4), "peak_memory_mb_rank0": round(memory.peak_mb(), 1),
            "device": str(device)}


if __name__ == "__main__":
    _worker(sys.argv[1:])
