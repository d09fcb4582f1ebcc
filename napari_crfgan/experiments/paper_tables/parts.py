"""The measurements behind the five tables, one function per part of the run.

- parameters (Table 2): exact counts per network, built on the meta device;
- realism (Table 1): every system trained on demo-brain, the same latent seeds sampled
  from each, scored by :func:`~napari_crfgan.evaluation.evaluate` against the real volumes;
- augmentation (Table 5): conditional generators trained on demo-chest's real training
  split only, then :func:`~napari_crfgan.experiments.downstream.run_augmentation`;
- hardware (Tables 3 and 4): :func:`~napari_crfgan.experiments.bench.bench` of :data:`MODELS` per preset
  and batch (medians over alternating repeats, static and activation memory).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ...data import VolumeDataset
from ...evaluation import evaluate
from ...model import display_name, get_config, parameter_counts
from ...sampling import Sampler
from ..bench import bench
from ..downstream import run_augmentation, split_indices, write_split_folder
from .budgets import MODELS, Budget
from .runs import train_both, train_options


def count_parameters(presets) -> dict:
    """Exact parameter counts per network of every system, and how many fewer CRF-GAN has than HA-GAN (%)."""
    out = {}
    for preset in presets:
        row = {}
        for model in MODELS:
            counts = parameter_counts(model, preset)
            row[model] = {"networks": counts, "total": int(sum(counts.values()))}
        row["fewer_pct"] = 100 * (1 - row["crfgan"]["total"] / row["hagan"]["total"])
        out[preset] = row
    return out


def _without_history(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "history"}


def measure_realism(budget: Budget, work: Path, device: str, log) -> tuple[dict, np.ndarray, dict]:
    """Table 1: the results, the real volumes and each system's generated volumes (for the figure)."""
    size = get_config(budget.gan_preset).size
    brain = VolumeDataset("demo-brain", size=size, demo_count=budget.brain_count)
    real = np.stack([brain[i][0].numpy() for i in range(len(brain))])
    out: dict = {"real_count": len(brain), "models": {}}
    samples = {}
    runs = train_both(budget, {model: train_options(budget, "demo-brain", work / f"brain-{model}", model,
                                                    budget.brain_iterations, device, demo_count=budget.brain_count)
                               for model in MODELS}, brain, log)
    for model in MODELS:
        run = runs[model]
        sampler = Sampler(run["checkpoint"], device=device)
        vols = sampler.sample(budget.num_samples, seed=0)  # the same latent seeds for every system
        fake = np.stack([v.model_units for v in vols])
        samples[model] = fake
        log(f"{model}: evaluating {len(fake)} generated against {len(real)} real volumes")
        t = time.perf_counter()
        result = evaluate(real, fake, progress=lambda m: log(f"  {m}"), **budget.eval_options)
        out["models"][model] = {"train": _without_history(run), "history": run["history"], "metrics": result,
                                "eval_seconds": round(time.perf_counter() - t, 1)}
    return out, real, samples


def measure_augmentation(budget: Budget, work: Path, device: str, log) -> dict:
    """Table 5: the classifier's scores per arm (real only, + each system's synthetic volumes)."""
    size = get_config(budget.gan_preset).size
    chest = VolumeDataset("demo-chest", size=size, conditional=True, demo_count=budget.chest_count)
    settings = budget.aug_settings
    split = split_indices(chest.labels, settings.split, settings.split_seed)
    # the generators see the training split only, never the validation or test volumes
    folder = write_split_folder(chest, split["train"], work / "chest-train-split")
    train_set = VolumeDataset(str(folder), size=size, modality=chest.modality, conditional=True)
    generators: dict = {"real only": None}
    training = {}
    runs = train_both(budget, {model: train_options(budget, str(folder), work / f"chest-{model}", model,
                                                    budget.chest_iterations, device, conditional=True,
                                                    modality=chest.modality)
                               for model in MODELS}, train_set, log)
    for model in MODELS:
        run = runs[model]
        generators[f"+ {display_name(model)}"] = Sampler(run["checkpoint"], device=device)
        training[model] = _without_history(run)
    result = run_augmentation(chest, generators, seeds=range(budget.aug_seeds), settings=settings,
                              positive="nodule", split=split, progress=log)
    result["generator_training"] = training
    result["generator_train_count"] = len(train_set)
    return result


def _bench(preset: str, batch: int, its: int, reps: int, device: str, threads, log) -> dict:
    log(f"bench {preset} batch {batch} on {device} ({its} timed iterations, {reps} repeat(s))")
    t = time.perf_counter()
    r = bench(preset, batch_size=batch, iterations=its, device=device, repeats=reps, threads=threads,
              systems=MODELS)
    r["seconds"] = round(time.perf_counter() - t, 1)
    return r


def measure_hardware(budget: Budget, log) -> dict:
    """Tables 3 and 4: peak memory per preset and batch, speed at the speed batch, CUDA rows where possible."""
    memory: dict = {}
    speed: dict = {}
    for preset in budget.memory_presets:
        for b in budget.memory_batches:
            timed = b == budget.speed_batch
            # off the speed batch one timed iteration (once): at 128^3 and batch 6 a CPU step takes tens of seconds
            r = _bench(preset, b, budget.speed_iterations if timed else budget.memory_iterations,
                       budget.speed_repeats if timed else 1, budget.bench_device, budget.bench_threads, log)
            memory.setdefault(preset, {})[b] = r
            if timed:
                speed[preset] = r
    cuda: dict = {}
    if budget.cuda_presets and torch.cuda.is_available():
        for preset in budget.cuda_presets:
            for b in budget.memory_batches:
                try:  # a GPU step is fast: every batch gets the full timed iterations and repeats
                    r = _bench(preset, b, budget.speed_iterations, budget.speed_repeats, "cuda", None, log)
                except Exception as exc:  # noqa: BLE001 - the worker re-raises anything (OOM most likely); keep the row
                    r = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
                cuda.setdefault(preset, {})[b] = r
    return {"memory": memory, "speed": speed, "cuda": cuda, "cuda_available": torch.cuda.is_available()}
