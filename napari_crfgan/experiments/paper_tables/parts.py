"""The measurements behind the six tables, one function per part of the run.

- parameters (Table 2): exact counts per network, built on the meta device;
- realism (Table 1): every system trained on demo-brain, the same latent seeds sampled
  from each, scored by :func:`~napari_crfgan.evaluation.evaluate` against the real volumes;
- augmentation (Table 5): conditional generators trained on demo-chest's real training
  split only, then :func:`~napari_crfgan.experiments.downstream.run_augmentation`;
- mask synthesis (Table 6): :func:`~napari_crfgan.experiments.mask_eval.run_mask_eval` at the budget's
  preset and batch;
- hardware (Tables 3 and 4): :func:`~napari_crfgan.experiments.bench.bench` of :data:`MODELS` per preset
  and batch (medians over alternating repeats, static and activation memory).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ...data import VolumeDataset, make_split, write_split
from ...data.split import split_indices
from ...evaluation import evaluate
from ...evaluation.memorisation import memorisation
from ...evaluation.paired import paired_bootstrap, seed_spread
from ...model import display_name, get_config, parameter_counts
from ...sampling import Sampler
from ...training import TrainOptions
from ..bench import bench
from ..downstream import combine_augmentation, run_augmentation, write_split_folder
from ..mask_eval import run_mask_eval
from .budgets import MODELS, Budget
from ..runs import train_all


def train_options(budget: Budget, data: str, out: Path, model: str, iterations: int, device: str, seed: int,
                  **kw) -> TrainOptions:
    """The options of one system's run at this budget (`kw`: more TrainOptions fields)."""
    return TrainOptions(data=data, out=out, model=model, preset=budget.gan_preset, iterations=iterations,
                        batch_size=budget.gan_batch_size, device=device, seed=seed,
                        checkpoint_every=max(50, iterations // 4), **kw)


def train_runs(budget: Budget, options: dict, dataset, log) -> dict:
    """:func:`~napari_crfgan.experiments.runs.train_all` with the budget's processes and threads."""
    workers = budget.workers if budget.parallel_training else 1
    return train_all(options, dataset, log, workers=workers, threads=budget.threads)


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


#: Table 1's headline metrics: the value summarised over training seeds (mean, std) per system
HEADLINE = ("fd_shallow", "kid_shallow", "fd_resnet10", "kid_resnet10", "mmd", "coverage", "msssim_diversity",
            "seams", "grid", "memorisation")
#: the pairs whose differences get a paired bootstrap interval: (a, b) means a - b
PAIRS = (("crfgan", "hagan"), ("crfgan", "crfgan-nocrf"))


def _headline(metrics: dict) -> dict[str, float]:
    out = {}
    for key in HEADLINE:
        entry = metrics.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
            out[key] = float(entry["value"])
    return out


def measure_realism(budget: Budget, work: Path, device: str, log) -> tuple[dict, np.ndarray, dict, np.ndarray]:
    """Table 1: every system trained from each of `budget.gan_seeds` on the train list of one demo-brain
    split, sampled from the same latent seeds, scored against the held-out test list.

    Returns the results, the test volumes, each system's generated volumes of the first seed and the
    training volumes (for the figures).
    """
    size = get_config(budget.gan_preset).size
    split = make_split("demo-brain", budget.brain_split, seed=budget.split_seed, demo_count=budget.brain_count)
    split_path = write_split(split, work, force=True)
    train_set, test_set = split.dataset("train", size), split.dataset("test", size)
    real, train_v = test_set.volumes(), train_set.volumes()
    log(f"Table 1 {split.describe()}")
    options = {(model, seed): train_options(budget, "demo-brain", work / f"brain-{model}-seed{seed}", model,
                                            budget.brain_iterations, device, seed, demo_count=budget.brain_count,
                                            split=str(split_path))
               for seed in budget.gan_seeds for model in MODELS}
    runs = train_runs(budget, options, train_set, log)
    out: dict = {"real_count": len(test_set), "train_count": len(train_set),
                 "split": {k: v for k, v in split.record().items() if k != "parts"} | {"counts": split.counts()},
                 "models": {m: {"seeds": {}} for m in MODELS}}
    fakes: dict = {}
    for (model, seed), run in runs.items():
        fake = np.stack([v.model_units for v in Sampler(run["checkpoint"], device=device).sample(
            budget.num_samples, seed=0)])  # the same latent seeds for every system and training seed
        fakes[model, seed] = fake
        log(f"{model} seed {seed}: evaluating {len(fake)} generated against {len(real)} held-out real volumes")
        t = time.perf_counter()
        result = evaluate(real, fake, progress=lambda m: log(f"  {m}"), **budget.eval_options)
        result["memorisation"] = memorisation(train_v, real, fake)
        out["models"][model]["seeds"][seed] = {"train": _without_history(run), "history": run["history"],
                                               "metrics": result, "eval_seconds": round(time.perf_counter() - t, 1)}
    first = budget.gan_seeds[0]
    for entry in out["models"].values():
        per_seed = {s: _headline(e["metrics"]) for s, e in entry["seeds"].items()}
        entry["over_seeds"] = {k: seed_spread([v[k] for v in per_seed.values() if k in v]) for k in HEADLINE
                               if any(k in v for v in per_seed.values())}
        # the first seed's run stands for the system where one run is shown (details, losses, timings)
        entry.update({k: entry["seeds"][first][k] for k in ("train", "history", "metrics")})
    feats = budget.eval_options.get("features", ("shallow",))[:1]
    out["paired"] = {}
    for a, b in PAIRS:
        log(f"paired bootstrap {a} - {b}")
        out["paired"][f"{a} - {b}"] = {seed: paired_bootstrap(real, fakes[a, seed], fakes[b, seed], features=feats,
                                                              n_boot=budget.paired_boot, seed=seed)
                                       for seed in budget.gan_seeds}
    return out, real, {m: fakes[m, first] for m in MODELS}, train_v


def measure_augmentation(budget: Budget, work: Path, device: str, log) -> dict:
    """Table 5: the classifier's scores per arm (real only, + each system's synthetic volumes) over
    `budget.chest_splits` splits x `budget.chest_gan_seeds` generator seeds x `budget.aug_seeds` classifier
    seeds; the generators of a split see its training part only."""
    size = get_config(budget.gan_preset).size
    chest = VolumeDataset("demo-chest", size=size, conditional=True, demo_count=budget.chest_count)
    settings = budget.aug_settings
    results = []
    for split_seed in budget.chest_splits:
        split = split_indices(chest.labels, settings.split, split_seed)
        folder = write_split_folder(chest, split["train"], work / f"chest-split{split_seed}-train")
        train_set = VolumeDataset(str(folder), size=size, modality=chest.modality, conditional=True)
        runs_dir = work / f"chest-split{split_seed}"
        options = {(model, seed): train_options(budget, str(folder), runs_dir / f"{model}-seed{seed}", model,
                                                budget.chest_iterations, device, seed, conditional=True,
                                                modality=chest.modality, split="none")
                   for seed in budget.chest_gan_seeds for model in MODELS}
        runs = train_runs(budget, options, train_set, log)
        # one call per split: the real-only classifiers are trained once and judge every generator's fidelity
        generators: dict = {"real only": None}
        for model in MODELS:
            generators[f"+ {display_name(model)}"] = [Sampler(runs[model, seed]["checkpoint"], device=device)
                                                      for seed in budget.chest_gan_seeds]
        log(f"Table 5 split {split_seed}, generator seeds {list(budget.chest_gan_seeds)}")
        result = run_augmentation(chest, generators, seeds=range(budget.aug_seeds), settings=settings,
                                  positive="nodule", split=split, progress=log)
        result.update(split_seed=split_seed, gan_seeds=list(budget.chest_gan_seeds),
                      generator_train_count=len(train_set),
                      generator_training={f"{m} seed {seed}": _without_history(runs[m, seed]) for m in MODELS
                                          for seed in budget.chest_gan_seeds})
        results.append(result)
    combined = combine_augmentation(results)
    combined["generator_train_count"] = results[0]["generator_train_count"]
    return combined


def measure_mask_synthesis(budget: Budget, work: Path, device: str, log) -> dict:
    """Table 6: the mask-to-volume GAN judged by segmentation, FD / KID, intensities and a painted nodule."""
    return run_mask_eval(budget.mask_eval, budget.gan_preset, budget.gan_batch_size, work / "mask", device, log)


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
