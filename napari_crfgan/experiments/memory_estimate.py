"""Peak training memory before training: one real step measured in a fresh process.

Peak memory of a 3D GAN step is hard to predict from sizes alone: on CPU the
convolution algorithm (and its workspace) changes with the batch size, and the
first step pays for library start-up. So the estimate is a measurement: one
training step (after a warm-up step) of the chosen system on a synthetic batch,
run by `napari_crfgan.experiments.bench._measure` in a fresh Python process, so
nothing already allocated here counts. It is measured the same way as the
trainer's `PeakMemory` (CPU: peak resident set over the step; CUDA:
`torch.cuda.max_memory_allocated`) and cached per (model, preset, batch size,
device, precision, processes, torch version) in memory and under
`<cache_dir>/memory-estimates.json`.

Precision is measured (the step runs under the chosen autocast). Several processes
(torchrun, the Train widget's "all GPUs") are not started for the estimate: one process
is measured at its share of the global batch, plus DDP's gradient buckets (a second
copy of the gradients); on CUDA that is what each GPU holds, on the CPU the processes
share the machine, so the figure is that times the process count.

A run whose weights, gradients and Adam moments alone would not fit in the
memory available here is not started; the estimate then gives that lower bound.

No napari or Qt here: the Memory widget calls `estimate_training_memory` in a
worker and renders the result.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..data import cache_dir
from ..files import write_json_atomic
from ..model import parameter_counts
from ..runtime import resolve_device
from ..runtime.memory import available_memory_mb

_MEMO: dict[str, "MemoryEstimate"] = {}
CACHE_FILE = "memory-estimates.json"
BYTES_PER_PARAMETER = 4 * 4  # fp32 weight, gradient and two Adam moments
POLL_S = 0.2  # how often a measurement under way looks at its cancel request


@dataclass(frozen=True)
class MemoryEstimate:
    model: str
    preset: str
    batch_size: int  # the global batch
    device: str
    state_mb: float  # weights + gradients + Adam moments (in every process sharing the device): a lower bound
    peak_memory_mb: float | None  # what the device holds at the peak of one step; None when not measured
    iters_per_s: float | None
    note: str = ""  # why there is no measurement, or "cached"
    precision: str = "fp32"
    processes: int = 1
    per_process_mb: float | None = None  # one process's peak (with DDP's buckets when processes > 1)

    def describe(self) -> str:
        if self.peak_memory_mb is None:
            return f"at least {self.state_mb:.0f} MB ({self.note})"
        return f"{self.peak_memory_mb:.0f} MB peak{self.where()}, about {self.iters_per_s:.2g} it/s"

    def where(self) -> str:
        """' per GPU' or ' in all 2 processes' (nothing for one process)."""
        if self.processes == 1:
            return ""
        return " per GPU" if self.device.startswith("cuda") else f" in all {self.processes} processes"


def state_memory_mb(model: str, preset: str) -> float:
    """Memory of weights, gradients and both Adam moments in fp32, in MB."""
    return sum(parameter_counts(model, preset).values()) * BYTES_PER_PARAMETER / 2**20


def _key(model: str, preset: str, batch_size: int, device: str, precision: str, processes: int) -> str:
    return f"{model}|{preset}|{batch_size}|{device}|{precision}|{processes}|torch {torch.__version__}"


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _read_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, value: MemoryEstimate) -> None:
    data = _read_cache()
    data[key] = asdict(value)
    write_json_atomic(_cache_path(), data)


class EstimateCancelled(RuntimeError):
    """The measurement was stopped before it finished (its widget closed)."""


def measure_in_subprocess(model: str, preset: str, batch_size: int, device: str, precision: str = "fp32",
                          timeout: float = 3600, cancel: threading.Event | None = None) -> dict:
    """One warm-up and one measured training step in a fresh Python process.

    Setting `cancel` kills that process (within `POLL_S`) and raises EstimateCancelled."""
    cmd = [sys.executable, "-m", "napari_crfgan.experiments.memory_estimate", model, preset, str(batch_size), device,
           precision]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            cancelled = cancel is not None and cancel.is_set()
            if cancelled or time.monotonic() > deadline:
                proc.kill()
                proc.communicate()
                if cancelled:
                    raise EstimateCancelled("the memory measurement was cancelled") from None
                raise TimeoutError(f"the memory measurement took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = (stderr.strip() or f"exit status {proc.returncode}").splitlines()
        raise RuntimeError(f"the memory measurement failed: {lines[-1]}")
    return json.loads(stdout.strip().splitlines()[-1])


def estimate_training_memory(model: str, preset: str, batch_size: int, device: str = "auto",
                             precision: str = "fp32", processes: int = 1, use_cache: bool = True,
                             cancel: threading.Event | None = None) -> MemoryEstimate:
    """Peak memory of training `model`/`preset` at global `batch_size` on `device` with `precision` in
    `processes` processes, measured once and cached.

    Setting `cancel` stops a measurement under way (EstimateCancelled)."""
    if batch_size % processes:
        raise ValueError(f"batch size {batch_size} is the global batch, split over {processes} processes: it must "
                         f"be a multiple of {processes}")
    dev = resolve_device(device)
    key = _key(model, preset, batch_size, str(dev), precision, processes)
    if use_cache:
        hit = _MEMO.get(key)
        if hit is None and (raw := _read_cache().get(key)) is not None:
            hit = MemoryEstimate(**raw)
        if hit is not None:
            _MEMO[key] = hit
            return hit
    state = state_memory_mb(model, preset)
    sharing = processes if dev.type == "cpu" else 1  # processes on the CPU share its memory
    free = available_memory_mb(dev)
    if free is not None and state * sharing > free:
        return MemoryEstimate(model, preset, batch_size, str(dev), round(state * sharing, 1), None, None,
                              f"more than the {free:.0f} MB free on {dev}; not measured", precision, processes)
    r = measure_in_subprocess(model, preset, batch_size // processes, str(dev), precision, cancel=cancel)
    buckets = state / 4 if processes > 1 else 0.0  # DDP's gradient buckets: 4 of the 16 bytes per parameter
    per_process = float(r["peak_memory_mb"]) + buckets
    result = MemoryEstimate(model, preset, batch_size, str(dev), round(state * sharing, 1),
                            round(per_process * sharing, 1),
                            float(r["iters_per_s"]), "measured one step", precision, processes,
                            round(per_process, 1))
    _MEMO[key] = result
    if use_cache:
        _write_cache(key, result)
    return result


def _main(argv: list[str] | None = None) -> None:
    from .bench import _measure

    p = argparse.ArgumentParser(description="measure one training step (used by estimate_training_memory)")
    p.add_argument("model")
    p.add_argument("preset")
    p.add_argument("batch_size", type=int)
    p.add_argument("device")
    p.add_argument("precision", nargs="?", default="fp32")
    a = p.parse_args(argv)
    print(json.dumps(_measure(a.model, a.preset, a.batch_size, 1, a.device, 0, None, precision=a.precision)))


if __name__ == "__main__":
    _main()
