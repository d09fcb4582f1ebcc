"""`crfgan bench`: parameters, peak training memory and iterations/s of both systems.

Each system is measured in a fresh worker process (so one system's allocations
never count against the other's) on the same synthetic batch and seed. Peak memory
is `torch.cuda.max_memory_allocated` on CUDA; on CPU it is the worker's peak
resident set minus its resident set just before the model is built (see
runtime.memory.PeakMemory). Runs alternate between the systems `repeats` times
and keep each system's best speed, so a noisy neighbour hurts both alike.
"""
from __future__ import annotations

import multiprocessing as mp
import time

import torch

from ..model import SYSTEMS, build_system, get_config
from ..model.decoding import decode_embedding
from ..runtime import PeakMemory, resolve_device, torch_threads


def _measure(model: str, preset: str, batch_size: int, iterations: int, device: str, seed: int,
             threads: int | None) -> dict:
    with torch_threads(threads):  # flush-to-zero as the trainer has it on CPU
        return _measure_steps(model, preset, batch_size, iterations, resolve_device(device), seed)


def _measure_steps(model: str, preset: str, batch_size: int, iterations: int, dev: torch.device, seed: int) -> dict:
    torch.manual_seed(seed)
    cfg = get_config(preset)
    real = (torch.rand(batch_size, 1, cfg.size, cfg.size, cfg.size) * 2 - 1).to(dev)
    memory = PeakMemory(dev)
    system = build_system(model, cfg).to(dev)
    optimizers = system.make_optimizers()
    system.train_step(real, None, 0, optimizers)  # warm-up: allocator, optimiser state
    _sync(dev)
    t0 = time.perf_counter()
    for it in range(1, iterations + 1):
        system.train_step(real, None, it, optimizers)
    _sync(dev)
    elapsed = time.perf_counter() - t0
    return {"params": sum(system.network_counts().values()),
            "peak_memory_mb": round(memory.peak_mb(), 1),
            "iters_per_s": round(iterations / elapsed, 4)}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def bench(preset: str, batch_size: int = 2, iterations: int = 5, device: str = "auto", seed: int = 0,
          repeats: int = 2, threads: int | None = None) -> dict:
    """Measure CRF-GAN and HA-GAN in one run; ratios are CRF-GAN / HA-GAN."""
    dev = str(resolve_device(device))
    results: dict[str, dict] = {}
    for _ in range(repeats):
        for model in SYSTEMS:
            r = _in_worker(_measure, (model, preset, batch_size, iterations, dev, seed, threads))
            best = results.get(model)
            if best is None:
                results[model] = r
            else:  # keep the best speed and the largest peak seen
                best["iters_per_s"] = max(best["iters_per_s"], r["iters_per_s"])
                best["peak_memory_mb"] = max(best["peak_memory_mb"], r["peak_memory_mb"])
    c, h = results["crfgan"], results["hagan"]
    return {
        "device": device_name(dev, threads),
        "preset": preset,
        "batch_size": batch_size,
        "iterations": iterations,
        "repeats": repeats,
        "results": results,
        "ratios": {
            "params": round(c["params"] / h["params"], 4),
            "peak_memory": round(c["peak_memory_mb"] / h["peak_memory_mb"], 4) if h["peak_memory_mb"] > 0 else None,
            "speed": round(c["iters_per_s"] / h["iters_per_s"], 4),
        },
    }


def device_name(dev: str, threads: int | None = None) -> str:
    """A device named for a report: the GPU model, or the CPU with the workers' thread count."""
    d = torch.device(dev)
    if d.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(d)})"
    return f"{dev} ({threads or torch.get_num_threads()} threads)"


def _measure_decode(preset: str, chunk: int | None, seed: int, threads: int | None) -> dict:
    """Peak memory of G^H decoding one embedding (random weights), in a fresh worker."""
    with torch_threads(threads, flush_denormal=False):
        return _measure_decode_once(preset, chunk, seed)


def _measure_decode_once(preset: str, chunk: int | None, seed: int) -> dict:
    torch.manual_seed(seed)
    system = build_system("crfgan", get_config(preset)).eval()
    with torch.no_grad():
        emb = system.trunk(torch.randn(1, system.cfg.latent_dim))
    memory = PeakMemory(torch.device("cpu"))
    t0 = time.perf_counter()
    with torch.no_grad():
        out = decode_embedding(system.head, emb, chunk)
    elapsed = time.perf_counter() - t0
    return {"peak_memory_mb": round(memory.peak_mb(), 1), "seconds": round(elapsed, 2),
            "volume": out[0, 0].numpy()}


def bench_sampling(preset: str = "paper-256", chunk: int = 32, seed: int = 0, threads: int | None = None) -> dict:
    """One-pass vs chunked full-volume decoding on CPU: peak memory, time, max abs difference."""
    one = _in_worker(_measure_decode, (preset, None, seed, threads))
    chunked = _in_worker(_measure_decode, (preset, chunk, seed, threads))
    diff = float(abs(one.pop("volume") - chunked.pop("volume")).max())
    return {"device": device_name("cpu", threads), "preset": preset, "chunk": chunk, "one_pass": one,
            "chunked": chunked,
            "max_abs_diff": diff,
            "peak_memory_ratio": round(chunked["peak_memory_mb"] / one["peak_memory_mb"], 4)}


def _in_worker(fn, args: tuple) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)
