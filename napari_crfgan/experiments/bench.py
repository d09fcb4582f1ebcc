"""`crfgan bench`: parameters, peak training memory and iterations/s of every system, in one run.

Method (what the paper's Tables 3 and 4 measure, made robust to a shared machine):
- Each system is measured in a fresh worker process (one system's allocations never
  count against another's), on the same synthetic batch and seed, with the
  presets' training step. Runs alternate between the systems `repeats` times, so a
  noisy neighbour hurts all alike.
- Speed: one warm-up iteration, then `iterations` timed ones, each timed alone
  (`torch.cuda.synchronize()` around it on CUDA). A run's speed is 1 / the median
  iteration time; a system's figure is the median over its runs, with the smallest
  and largest run beside it (never the best alone). A ratio between two systems is
  taken per repeat (runs of one repeat ran back to back) and reported the same way.
- Memory: CUDA peak is `torch.cuda.max_memory_allocated` (with `cudnn.benchmark`, as the
  reference code sets it); CPU peak is the worker's peak resident set minus its resident
  set before the model is built (runtime.memory.PeakMemory). Static memory is counted
  exactly: parameters, their gradients, the optimisers' state and buffers; activations
  are the peak minus static (on CPU this also holds allocator and library overheads).
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time

import torch

from ..model import SYSTEMS, build_system, get_config, parameter_counts, uses_masks
from ..model.decoding import decode_embedding
from ..model.flops import count_macs
from ..runtime import PeakMemory, resolve_device, torch_threads
from ..runtime.memory import available_memory_mb

#: (numerator, denominator) systems of the reported ratios
RATIOS = (("crfgan", "hagan"), ("crfgan-nocrf", "hagan"), ("crfgan", "crfgan-nocrf"))
#: what `crfgan bench` compares by default: the latent systems (a mask system trains on other data)
LATENT_SYSTEMS = tuple(name for name in SYSTEMS if not uses_masks(name))


def _measure(model: str, preset: str, batch_size: int, iterations: int, device: str, seed: int,
             threads: int | None, step: str | None = None, checkpointing: bool = False,
             precision: str = "fp32") -> dict:
    with torch_threads(threads):  # flush-to-zero as the trainer has it on CPU
        cfg = get_config(preset, step=step)
        return _measure_steps(model, cfg, batch_size, iterations, resolve_device(device), seed, checkpointing,
                              precision)


def _static_bytes(system, optimizers) -> int:
    """Parameters, gradients, optimiser state and buffers as they sit in memory now."""
    tensors = [*system.parameters(), *system.buffers()]
    tensors += [p.grad for p in system.parameters() if p.grad is not None]
    tensors += [v for opt in optimizers.values() for state in opt.state.values()
                for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _measure_steps(model: str, cfg, batch_size: int, iterations: int, dev: torch.device, seed: int,
                   checkpointing: bool = False, precision: str = "fp32") -> dict:
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the reference train.py files set it
    torch.manual_seed(seed)
    real = (torch.rand(batch_size, 1, cfg.size, cfg.size, cfg.size) * 2 - 1).to(dev)
    # a meta-device build first, as the trainer's memory check does before it measures: it loads torch's
    # lazily imported modules (about 70 MB resident), which then count in neither measurement
    parameter_counts(model, cfg)
    memory = PeakMemory(dev)
    system = build_system(model, cfg).to(dev)
    system.set_activation_checkpointing(checkpointing)
    system.set_precision(precision)
    optimizers = system.make_optimizers()
    system.train_step(real, None, 0, optimizers)  # warm-up: allocator, optimiser state
    seconds = []
    for it in range(1, iterations + 1):
        _sync(dev)
        t0 = time.perf_counter()
        system.train_step(real, None, it, optimizers)
        _sync(dev)
        seconds.append(time.perf_counter() - t0)
    peak = memory.peak_mb()
    static = _static_bytes(system, optimizers) / 2**20
    return {"params": sum(system.network_counts().values()),
            "peak_memory_mb": round(peak, 1), "static_mb": round(static, 1),
            "activation_mb": round(peak - static, 1) if peak >= 0 else None,
            "iters_per_s": round(1 / statistics.median(seconds), 4),
            "iteration_seconds": [round(t, 4) for t in seconds]}


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _spread(values: list[float], digits: int = 4) -> dict:
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def _summary(runs: list[dict]) -> dict:
    """A system's figures over its runs: medians, with the run-to-run range."""
    speeds = [r["iters_per_s"] for r in runs]
    peaks = [r["peak_memory_mb"] for r in runs]
    last = runs[-1]
    return {"params": last["params"], "iters_per_s": round(statistics.median(speeds), 4),
            "iters_per_s_range": [min(speeds), max(speeds)],
            "peak_memory_mb": round(statistics.median(peaks), 1), "peak_memory_range": [min(peaks), max(peaks)],
            "static_mb": last["static_mb"],
            "activation_mb": None if last["activation_mb"] is None else
            round(statistics.median(peaks) - last["static_mb"], 1),
            "runs": runs}


def _ratios(runs: dict[str, list[dict]]) -> dict:
    out = {}
    for num, den in RATIOS:
        if num not in runs or den not in runs:
            continue
        pairs = list(zip(runs[num], runs[den]))
        peaks = [a["peak_memory_mb"] / b["peak_memory_mb"] for a, b in pairs if b["peak_memory_mb"] > 0]
        out[f"{num} / {den}"] = {
            "params": round(pairs[0][0]["params"] / pairs[0][1]["params"], 4),
            "speed": _spread([a["iters_per_s"] / b["iters_per_s"] for a, b in pairs]),
            "peak_memory": _spread(peaks) if peaks else None,
            "static_memory": round(pairs[0][0]["static_mb"] / pairs[0][1]["static_mb"], 4),
        }
    return out


def bench(preset: str, batch_size: int = 2, iterations: int = 20, device: str = "auto", seed: int = 0,
          repeats: int = 3, threads: int | None = None, systems: tuple[str, ...] = LATENT_SYSTEMS,
          step: str | None = None) -> dict:
    """Measure `systems` in one run (alternating, `repeats` times); ratios per repeat, median and range.

    step: the training step ("reference" or "fast"; None: the preset's)."""
    dev = str(resolve_device(device))
    runs: dict[str, list[dict]] = {model: [] for model in systems}
    for _ in range(repeats):
        for model in systems:
            runs[model].append(_in_worker(_measure, (model, preset, batch_size, iterations, dev, seed, threads,
                                                     step)))
    return {
        "device": device_name(dev, threads),
        "preset": preset,
        "step": get_config(preset, step=step).step,
        "batch_size": batch_size,
        "iterations": iterations,
        "repeats": repeats,
        "results": {model: _summary(r) for model, r in runs.items()},
        "ratios": _ratios(runs),
    }


def bench_checkpointing(preset: str, model: str = "crfgan", batch_size: int = 2, iterations: int = 20,
                        device: str = "auto", seed: int = 0, repeats: int = 3, threads: int | None = None) -> dict:
    """One system with and without activation checkpointing, alternating as `bench` alternates systems:
    peak memory and speed of each, and with / without per repeat (median and range)."""
    dev = str(resolve_device(device))
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(repeats):
        for name in runs:
            runs[name].append(_in_worker(_measure, (model, preset, batch_size, iterations, dev, seed, threads, None,
                                                    name == "with")))
    pairs = list(zip(runs["with"], runs["without"]))
    return {
        "device": device_name(dev, threads), "preset": preset, "model": model, "batch_size": batch_size,
        "iterations": iterations, "repeats": repeats,
        "results": {name: _summary(r) for name, r in runs.items()},
        "with / without": {"peak_memory": _spread([a["peak_memory_mb"] / b["peak_memory_mb"] for a, b in pairs]),
                           "activation_memory": _spread([a["activation_mb"] / b["activation_mb"] for a, b in pairs
                                                         if a["activation_mb"] and b["activation_mb"]] or [0.0]),
                           "speed": _spread([a["iters_per_s"] / b["iters_per_s"] for a, b in pairs])},
    }


def device_name(dev: str, threads: int | None = None) -> str:
    """A device named for a report: the GPU model, or the CPU with the workers' thread count."""
    d = torch.device(dev)
    if d.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(d)})"
    return f"{dev} ({threads or torch.get_num_threads()} threads)"


#: one-pass decoding's peak over G^H's hidden activations at full resolution (float32): the CPU conv's
#: copies of them make it 2.5x (5,123 MB measured at paper-256, 2,048 MiB of them)
ONE_PASS_FACTOR = 2.5


def _measure_decode(preset: str, chunk: int | None, seed: int, threads: int | None, keep_volume: bool) -> dict:
    """Peak memory of G^H decoding one embedding (random weights), in a fresh worker."""
    with torch_threads(threads, flush_denormal=False):
        return _measure_decode_once(preset, chunk, seed, keep_volume)


def _measure_decode_once(preset: str, chunk: int | None, seed: int, keep_volume: bool = True) -> dict:
    torch.manual_seed(seed)
    system = build_system("crfgan", get_config(preset)).eval()
    with torch.no_grad():
        emb = system.trunk(torch.randn(1, system.cfg.latent_dim))
    memory = PeakMemory(torch.device("cpu"))  # after the weights and the embedding: they are not counted
    t0 = time.perf_counter()
    with torch.no_grad():
        out = decode_embedding(system.head, emb, chunk)
    elapsed = time.perf_counter() - t0
    r = {"peak_memory_mb": round(memory.peak_mb(), 1), "seconds": round(elapsed, 2),
         "finite": bool(torch.isfinite(out).all())}
    return {**r, "volume": out[0, 0].numpy()} if keep_volume else r


def matmul_gflops(n: int = 4096, repeats: int = 3) -> float:
    """This machine's float32 matrix-product rate in GFLOP/s at the current thread count: the best of
    `repeats` n x n products, after one untimed."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _measure_matmul(threads: int | None) -> float:
    with torch_threads(threads, flush_denormal=False):
        return matmul_gflops()


def decode_flops(preset: str, chunk: int | None) -> int:
    """FLOPs (2 x MACs) of the convolutions decode_embedding runs at `chunk` (None: one pass), counted on
    the meta device: the chunks' halos and the statistics pass included."""
    cfg = get_config(preset)
    with torch.device("meta"):
        head = build_system("crfgan", cfg).head
        emb = torch.zeros(1, cfg.embedding_channels, *(cfg.embedding_size,) * 3)
        return 2 * count_macs(lambda: decode_embedding(head, emb, chunk))


def one_pass_skip_reason(preset: str, one_pass: str = "auto") -> str | None:
    """Why the one-pass run is skipped (None: it runs). one_pass: "run", "skip" or "auto" (skip when its
    estimated peak exceeds the memory available now)."""
    if one_pass not in ("auto", "run", "skip"):
        raise ValueError(f"one_pass must be auto, run or skip, not {one_pass!r}")
    if one_pass == "skip":
        return "asked to skip"
    need = ONE_PASS_FACTOR * _volume_mb(preset) * get_config(preset).head_channel
    free = available_memory_mb(torch.device("cpu"))
    if one_pass == "auto" and free is not None and need > free:
        return f"estimated peak {need:,.0f} MB exceeds the {free:,.0f} MB available"
    return None


def _volume_mb(preset: str) -> float:
    return get_config(preset).size ** 3 * 4 / 2**20


def _with_floor(run: dict, flops: int, gflops: float) -> dict:
    floor = flops / (gflops * 1e9)
    return {**run, "flops": flops, "flop_floor_s": float(f"{floor:.4g}"),
            "floor_ratio": round(run["seconds"] / floor, 2)}


def bench_sampling(preset: str = "paper-256", chunk: int = 32, seed: int = 0, threads: int | None = None,
                   one_pass: str = "auto") -> dict:
    """One-pass vs chunked full-volume decoding on CPU: peak memory, time against the FLOP floor (the
    decoding's FLOPs at this machine's measured matmul rate), max abs difference.

    one_pass: "run", "skip" or "auto" (one_pass_skip_reason); a skipped run keeps its FLOPs and floor, and
    leaves the comparison None."""
    cfg = get_config(preset)
    skip = one_pass_skip_reason(preset, one_pass)
    gflops = _in_worker(_measure_matmul, (threads,))
    chunked = _in_worker(_measure_decode, (preset, chunk, seed, threads, skip is None))
    chunked = _with_floor(chunked, decode_flops(preset, chunk), gflops)
    result = {"device": device_name("cpu", threads), "preset": preset, "chunk": chunk,
              "matmul_gflops": round(gflops, 1),
              "peak_memory_includes": "resident-set growth while decoding: the output volume and G^H's working "
                                      "memory, not the weights or the embedding (resident before)",
              "volume_mb": round(_volume_mb(preset), 1),
              "embedding_mb": round(_volume_mb(preset) / 64 * cfg.embedding_channels, 1)}
    if skip is not None:  # its FLOPs still give the floor of decoding the volume at all
        flops = decode_flops(preset, None)
        one_pass = {"skipped": skip, "flops": flops, "flop_floor_s": float(f"{flops / (gflops * 1e9):.4g}")}
        return {**result, "one_pass": one_pass, "chunked": chunked, "max_abs_diff": None, "peak_memory_ratio": None}
    one = _with_floor(_in_worker(_measure_decode, (preset, None, seed, threads, True)), decode_flops(preset, None),
                      gflops)
    diff = float(abs(one.pop("volume") - chunked.pop("volume")).max())
    return {**result, "one_pass": one, "chunked": chunked, "max_abs_diff": diff,
            "peak_memory_ratio": round(chunked["peak_memory_mb"] / one["peak_memory_mb"], 4)}


def _in_worker(fn, args: tuple) -> dict:
    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)
