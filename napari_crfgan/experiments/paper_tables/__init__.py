"""`crfgan paper-tables`: the CRF-GAN paper's comparison with HA-GAN, rerun here.

Both systems are trained on the same demo data, with the same preset, batch size,
iterations and seed, then compared in five tables written to ``results.md``
(with PNG figures beside it, under ``images/``):

1. realism on ``demo-brain`` (unconditional): FD, KID, MMD, coverage and the seam
   ratio SDR from :func:`~napari_crfgan.evaluation.evaluate`, the same number of
   generated volumes per system from the same latent seeds, with the real-vs-real row;
2. exact parameter counts of the paper presets at 64^3, 128^3 and 256^3;
3. peak training memory at batch 2, 4 and 6 (CPU at 64^3 and 128^3; 256^3 only
   where a CUDA device is present);
4. training iterations/s at batch 2 (paper-64 and paper-128);
5. the augmentation task on ``demo-chest`` (nodule / no-nodule) with conditional
   generators trained on the real training split only
   (:func:`~napari_crfgan.evaluation.downstream.run_augmentation`).

Budgets (:data:`BUDGETS`): ``tiny`` (tiny-32, a few iterations: for tests),
``small`` (small-64 on a 2-core CPU in under an hour, measured), ``paper``
(GPU scale, documented, needs CUDA). Every number in ``results.md`` comes from the
run, except the columns marked "paper", quoted from the CRF-GAN paper.

Trained checkpoints are kept in the work folder (``runs/paper-tables/<budget>``);
a rerun reuses a finished one and resumes an unfinished one.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import multiprocessing as mp
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .downstream import AugmentationSettings, augmentation_markdown, run_augmentation, split_indices, write_split_folder

__all__ = ["Budget", "BUDGETS", "PAPER", "PaperTablesError", "run_paper_tables", "render_markdown", "machine_info"]

NAMES = {"crfgan": "CRF-GAN", "hagan": "HA-GAN"}
MODELS = ("crfgan", "hagan")
IMAGE_DIR = "images"


class PaperTablesError(ValueError):
    """The tables cannot be made here (missing matplotlib, no CUDA for the paper budget)."""


@dataclass(frozen=True)
class Budget:
    """Everything that sets the size (and time) of a paper-tables run."""

    name: str
    description: str
    gan_preset: str  # preset of the trained models (Tables 1 and 5)
    gan_batch_size: int
    brain_count: int  # demo-brain volumes (Table 1)
    brain_iterations: int
    num_samples: int  # generated volumes per system for Table 1
    chest_count: int  # demo-chest volumes (Table 5), split train / val / test
    chest_iterations: int
    aug_seeds: int  # classifier seeds (Table 5)
    aug_settings: AugmentationSettings = field(default_factory=AugmentationSettings)
    eval_options: dict = field(default_factory=dict)  # passed to evaluate()
    param_presets: tuple[str, ...] = ("paper-64", "paper-128", "paper-256")
    memory_presets: tuple[str, ...] = ("paper-64", "paper-128")  # measured on bench_device
    bench_device: str = "cpu"
    memory_batches: tuple[int, ...] = (2, 4, 6)
    memory_iterations: int = 1  # timed iterations after the warm-up step (memory-only runs)
    speed_batch: int = 2  # Table 4; its runs also give Table 3's memory at this batch
    speed_iterations: int = 3
    speed_repeats: int = 2
    cuda_presets: tuple[str, ...] = ("paper-256",)  # measured only where CUDA exists
    threads: int | None = 1  # torch CPU threads (None: torch's default)
    parallel_training: bool = False  # train the two systems at once, one worker process each
    seed: int = 0  # GAN training seed (the same for both systems)
    needs_cuda: bool = False


BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        name="tiny",
        description="tests only: tiny-32 models, a handful of iterations, 2 classifier seeds; the numbers mean nothing",
        gan_preset="tiny-32", gan_batch_size=2, brain_count=8, brain_iterations=4, num_samples=8,
        chest_count=12, chest_iterations=4, aug_seeds=2,
        aug_settings=AugmentationSettings(max_epochs=6, patience=2, batch_size=4),
        eval_options=dict(features=("shallow",), seeds=(0,), kid_subsets=10, mmd_permutations=20,
                          msssim_pairs=4, n_boot=50),
        memory_presets=("tiny-32",), memory_batches=(2,), speed_iterations=2, speed_repeats=1,
        cuda_presets=("tiny-32",),
    ),
    "small": Budget(
        name="small",
        description="small-64 models on CPU, under an hour on 2 cores: the two systems train side by side, "
                    "one process and one torch thread each",
        gan_preset="small-64", gan_batch_size=4, brain_count=32, brain_iterations=2000, num_samples=32,
        chest_count=80, chest_iterations=1200, aug_seeds=10,
        aug_settings=AugmentationSettings(), parallel_training=True,
    ),
    "paper": Budget(
        name="paper",
        description="GPU scale (not run here): paper-256 models for 80k / 40k iterations on a CUDA GPU",
        gan_preset="paper-256", gan_batch_size=4, brain_count=512, brain_iterations=80_000, num_samples=512,
        chest_count=512, chest_iterations=40_000, aug_seeds=10,
        aug_settings=AugmentationSettings(max_epochs=100, patience=10, batch_size=8, width=16),
        memory_presets=("paper-64", "paper-128", "paper-256"), bench_device="cuda", cuda_presets=(),
        speed_iterations=20, speed_repeats=3, threads=None, needs_cuda=True, parallel_training=False,
    ),
}

#: The published comparison (REFERENCE.md, "Published comparison"): GPU, LUNA16 / LIDC.
PAPER = {
    "params_fewer_pct": {"paper-64": 27.4, "paper-128": 28.1, "paper-256": 28.2},
    "memory_mb": {  # GPU, batch 2 / 4 / 6
        "paper-128": {"hagan": (2812, 2984, 3098), "crfgan": (2622, 2712, 2774)},
        "paper-256": {"hagan": (7710, 10434, None), "crfgan": (7494, 9010, None)},
    },
    "memory_less_pct_avg": 9.4,
    "speed_faster_pct": {"paper-128": 14.6, "paper-256": 10.2},
    "fid": {"crfgan": 0.047, "hagan": 0.061},  # LUNA16 256^3, MedicalNet features
    "mmd": {"crfgan": 0.084, "hagan": 0.086},
    "f1": {"real only": (76.92, 5.27), "+ CRF-GAN": (79.21, 3.19), "+ HA-GAN": (75.79, 3.63)},
}


# ----------------------------------------------------------------------------- helpers

def _require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise PaperTablesError("paper-tables draws its figures with matplotlib, which is not installed; "
                               "install it (pip install matplotlib, or the package's [test] extra)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def git_commit(root: Path | None = None) -> str:
    root = root or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "napari_crfgan"],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + (" (with uncommitted changes under napari_crfgan/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def param_counts(presets) -> dict:
    """Exact parameter counts per network of both systems (built on the meta device: no memory)."""
    from ..model import build_system, get_config

    out = {}
    for preset in presets:
        row = {}
        for model in MODELS:
            try:
                with torch.device("meta"):
                    counts = build_system(model, get_config(preset)).network_counts()
            except (RuntimeError, NotImplementedError):  # a layer that cannot live on meta
                counts = build_system(model, get_config(preset)).network_counts()
            row[model] = {"networks": counts, "total": int(sum(counts.values()))}
        row["fewer_pct"] = 100 * (1 - row["crfgan"]["total"] / row["hagan"]["total"])
        out[preset] = row
    return out


def _pct_less(c: float | None, h: float | None) -> float | None:
    if c is None or h is None or h <= 0:
        return None
    return 100 * (1 - c / h)


def _fmt(x, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


# ----------------------------------------------------------------------------- training

def _train(options, dataset, log) -> dict:
    """Train (or reuse / resume) one run; returns its last report's figures and loss history."""
    from ..training import CHECKPOINT_NAME, load_checkpoint, train

    out = Path(options.out)
    hist_path = out / "history.json"
    ckpt = out / CHECKPOINT_NAME
    history = {"iteration": [], "g": [], "d": []}
    summary: dict = {}
    if ckpt.is_file():
        done = load_checkpoint(ckpt, model=options.model, preset=options.preset).iteration
        saved = json.loads(hist_path.read_text()) if hist_path.is_file() else {}
        history = saved.get("history", history)
        summary = saved.get("summary", {})
        if done >= options.iterations:
            log(f"{options.model}: reusing {ckpt} ({done} iterations)")
            return {"checkpoint": str(ckpt), "history": history, "reused": True, **summary}
        history = {k: [v for v, it in zip(vals, history["iteration"]) if it <= done] for k, vals in history.items()}
        options = dataclasses.replace(options, resume=True)
        log(f"{options.model}: resuming {ckpt} at iteration {done}")
    t0 = time.perf_counter()
    last = None
    step = max(1, options.iterations // 100)
    for report in train(options, dataset):
        last = report
        if report.iteration % step == 0 or report.iteration == options.iterations:
            history["iteration"].append(report.iteration)
            history["g"].append(float(report.losses.get("g", np.nan)))
            history["d"].append(float(report.losses.get("d", np.nan)))
        if report.iteration % max(1, options.iterations // 10) == 0:
            log(f"{options.model} {options.preset}: {report.iteration}/{options.iterations} it, "
                f"{report.iters_per_s:.2f} it/s")
    summary = {"iters_per_s": last.iters_per_s, "peak_memory_mb": last.peak_memory_mb, "device": last.device,
               "seconds": round(time.perf_counter() - t0, 1), "iterations": options.iterations}
    hist_path.write_text(json.dumps({"history": history, "summary": summary}))
    return {"checkpoint": str(ckpt), "history": history, "reused": False, **summary}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _train_worker(options, threads: int | None) -> dict:
    """One system's training in a worker process (the dataset comes from the on-disk cache)."""
    return _train(dataclasses.replace(options, threads=threads), None, _stderr)


def _train_both(budget: Budget, options: dict, dataset, log) -> dict:
    """Train both systems: side by side in two worker processes, or one after the other here."""
    if not budget.parallel_training:
        return {model: _train(opts, dataset, log) for model, opts in options.items()}
    log(f"training {', '.join(options)} side by side (one process each, {budget.threads or 'default'} thread(s))")
    ctx = mp.get_context("spawn")
    with ctx.Pool(len(options)) as pool:
        jobs = {model: pool.apply_async(_train_worker, (opts, budget.threads)) for model, opts in options.items()}
        return {model: job.get() for model, job in jobs.items()}


def _options(budget: Budget, data: str, out: Path, model: str, iterations: int, device: str, **kw):
    from ..training import TrainOptions

    return TrainOptions(data=data, out=out, model=model, preset=budget.gan_preset, iterations=iterations,
                        batch_size=budget.gan_batch_size, device=device, seed=budget.seed,
                        checkpoint_every=max(50, iterations // 4), **kw)


# ----------------------------------------------------------------------------- parts

def _realism(budget: Budget, work: Path, device: str, log) -> dict:
    from ..data import VolumeDataset
    from ..model import get_config
    from ..sampling import Sampler
    from .report import evaluate

    size = get_config(budget.gan_preset).size
    brain = VolumeDataset("demo-brain", size=size, demo_count=budget.brain_count)
    real = np.stack([brain[i][0].numpy() for i in range(len(brain))])
    out: dict = {"real_count": len(brain), "models": {}}
    samples = {}
    runs = _train_both(budget, {model: _options(budget, "demo-brain", work / f"brain-{model}", model,
                                                budget.brain_iterations, device, demo_count=budget.brain_count)
                                for model in MODELS}, brain, log)
    for model in MODELS:
        run = runs[model]
        sampler = Sampler(run["checkpoint"], device=device)
        vols = sampler.sample(budget.num_samples, seed=0)  # the same latent seeds for both systems
        fake = np.stack([v.model_units for v in vols])
        samples[model] = fake
        log(f"{model}: evaluating {len(fake)} generated against {len(real)} real volumes")
        t = time.perf_counter()
        result = evaluate(real, fake, progress=lambda m: log(f"  {m}"), **budget.eval_options)
        out["models"][model] = {"train": {k: v for k, v in run.items() if k != "history"},
                                "history": run["history"], "metrics": result,
                                "eval_seconds": round(time.perf_counter() - t, 1)}
    return out, real, samples


def _augmentation(budget: Budget, work: Path, device: str, log) -> dict:
    from ..data import VolumeDataset
    from ..model import get_config
    from ..sampling import Sampler

    size = get_config(budget.gan_preset).size
    chest = VolumeDataset("demo-chest", size=size, conditional=True, demo_count=budget.chest_count)
    settings = budget.aug_settings
    split = split_indices(chest.labels, settings.split, settings.split_seed)
    folder = write_split_folder(chest, split["train"], work / "chest-train-split")
    train_set = VolumeDataset(str(folder), size=size, modality=chest.modality, conditional=True)
    generators: dict = {"real only": None}
    training = {}
    runs = _train_both(budget, {model: _options(budget, str(folder), work / f"chest-{model}", model,
                                                budget.chest_iterations, device, conditional=True,
                                                modality=chest.modality)
                                for model in MODELS}, train_set, log)
    for model in MODELS:
        run = runs[model]
        generators[f"+ {NAMES[model]}"] = Sampler(run["checkpoint"], device=device)
        training[model] = {k: v for k, v in run.items() if k != "history"}
    result = run_augmentation(chest, generators, seeds=range(budget.aug_seeds), settings=settings,
                              positive="nodule", split=split, progress=log)
    result["generator_training"] = training
    result["generator_train_count"] = len(train_set)
    return result


def _hardware(budget: Budget, log) -> dict:
    from .bench import bench

    memory: dict = {}
    speed: dict = {}
    for preset in budget.memory_presets:
        for b in budget.memory_batches:
            timed = b == budget.speed_batch
            its = budget.speed_iterations if timed else budget.memory_iterations
            reps = budget.speed_repeats if timed else 1
            log(f"bench {preset} batch {b} on {budget.bench_device} ({its} timed iterations, {reps} repeats)")
            t = time.perf_counter()
            r = bench(preset, batch_size=b, iterations=its, device=budget.bench_device, repeats=reps,
                      threads=budget.threads)
            r["seconds"] = round(time.perf_counter() - t, 1)
            memory.setdefault(preset, {})[b] = r
            if timed:
                speed[preset] = r
    cuda: dict = {}
    if budget.cuda_presets and torch.cuda.is_available():
        for preset in budget.cuda_presets:
            for b in budget.memory_batches:
                log(f"bench {preset} batch {b} on cuda")
                try:
                    r = bench(preset, batch_size=b, iterations=budget.speed_iterations, device="cuda",
                              repeats=1)
                except Exception as exc:  # out of memory in the worker, most likely
                    r = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
                cuda.setdefault(preset, {})[b] = r
    return {"memory": memory, "speed": speed, "cuda": cuda, "cuda_available": torch.cuda.is_available()}


# ----------------------------------------------------------------------------- figures

def _figures(plt, images: Path, realism: dict, real: np.ndarray, samples: dict, hardware: dict,
             augmentation: dict) -> dict[str, str]:
    from ..montage import orthogonal_slices

    images.mkdir(parents=True, exist_ok=True)
    paths = {}

    # samples: real / CRF-GAN / HA-GAN, three orthogonal middle slices of four volumes each
    rows = [("real (demo-brain)", real), *((NAMES[m], samples[m]) for m in MODELS)]
    n = min(4, *(len(v) for _, v in rows))
    fig, axes = plt.subplots(len(rows), n, figsize=(3.2 * n, 1.25 * len(rows) + 0.4), squeeze=False)
    for i, (name, vols) in enumerate(rows):
        for j in range(n):
            ax = axes[i][j]
            ax.imshow(orthogonal_slices(vols[j]), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("Middle axial / coronal / sagittal slices (generated: latent seeds 0-3)", fontsize=9)
    fig.tight_layout()
    paths["samples"] = _save(fig, plt, images / "results_samples.png")

    # GAN losses during the Table 1 training
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for model in MODELS:
        h = realism["models"][model]["history"]
        for ax, key in zip(axes, ("g", "d")):
            ax.plot(h["iteration"], h[key], label=NAMES[model])
    for ax, key in zip(axes, ("generator loss", "discriminator loss")):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths["training"] = _save(fig, plt, images / "results_training.png")

    # peak memory (Table 3)
    mem = hardware["memory"]
    labels, hv, cv = [], [], []
    for preset, per_batch in mem.items():
        for b, r in per_batch.items():
            labels.append(f"{preset}\nbatch {b}")
            hv.append(r["results"]["hagan"]["peak_memory_mb"])
            cv.append(r["results"]["crfgan"]["peak_memory_mb"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels)), 3.4))
    ax.bar(x - 0.2, hv, 0.4, label="HA-GAN")
    ax.bar(x + 0.2, cv, 0.4, label="CRF-GAN")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("peak training memory (MB, CPU RSS)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths["memory"] = _save(fig, plt, images / "results_memory.png")

    # augmentation (Table 5): F1 per seed and mean +- std
    arms = augmentation["arms"]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, (name, arm) in enumerate(arms.items()):
        f1 = [100 * r["f1"] for r in arm["runs"]]
        ax.scatter(np.full(len(f1), i) + np.linspace(-0.15, 0.15, len(f1)), f1, s=12, alpha=0.6)
        ax.errorbar(i, 100 * arm["f1"]["mean"], yerr=100 * arm["f1"]["std"], fmt="o", color="black", capsize=5)
    ax.set_xticks(range(len(arms)), list(arms), fontsize=8)
    ax.set_ylabel("test F1 (%), nodule positive")
    ax.set_ylim(-5, 105)
    ax.set_title(f"{len(augmentation['seeds'])} classifier seeds: points = seeds, bars = mean ± std", fontsize=9)
    fig.tight_layout()
    paths["augmentation"] = _save(fig, plt, images / "results_augmentation.png")
    return paths


def _save(fig, plt, path: Path) -> str:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------------------------- markdown

def _metric_cell(entry: dict | None, digits: int = 4) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    text = f"{entry['value']:.{digits}g}"
    if entry.get("std"):
        text += f" ± {entry['std']:.2g}"
    return text


def _table1(realism: dict) -> list[str]:
    res = {m: realism["models"][m]["metrics"] for m in MODELS}
    floor = res["crfgan"]["real_vs_real"]
    feats = [k for k in res["crfgan"] if k.startswith(("fd_", "kid_"))]
    cols = feats + ["mmd", "coverage", "sdr_d"]
    titles = {"mmd": "MMD (p)", "coverage": "coverage", "sdr_d": "SDR (D)"}
    head = "| | " + " | ".join(titles.get(c, c.replace("fd_", "FD ").replace("kid_", "KID ")) for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]

    def cell(entry, col):
        text = _metric_cell(entry)
        if col == "mmd" and entry and entry.get("p") is not None:
            text += f" (p={entry['p']:.2g})"
        return text

    for m in MODELS:
        lines.append(f"| {NAMES[m]} | " + " | ".join(cell(res[m].get(c), c) for c in cols) + " |")
    lines.append("| real vs real (floor) | " + " | ".join(cell(floor.get(c), c) for c in cols) + " |")
    return lines


def _table2(params: dict) -> list[str]:
    lines = ["| preset | HA-GAN | CRF-GAN | fewer | paper: fewer |", "|---|---|---|---|---|"]
    for preset, row in params.items():
        paper = PAPER["params_fewer_pct"].get(preset)
        lines.append(f"| {preset} | {row['hagan']['total']:,} | {row['crfgan']['total']:,} | "
                     f"{row['fewer_pct']:.2f}% | {'' if paper is None else f'{paper}%'} |")
    return lines


def _table3(hardware: dict, budget: Budget) -> list[str]:
    lines = ["| preset | device | batch | HA-GAN (MB) | CRF-GAN (MB) | less | paper (GPU): HA-GAN / CRF-GAN (MB) |",
             "|---|---|---|---|---|---|---|"]
    for source in ("memory", "cuda"):
        for preset, per_batch in hardware[source].items():
            for b, r in per_batch.items():
                paper = PAPER["memory_mb"].get(preset)
                pcell = ""
                if paper and b in (2, 4, 6):
                    ph, pc = paper["hagan"][b // 2 - 1], paper["crfgan"][b // 2 - 1]
                    pcell = "-" if ph is None else f"{ph:,} / {pc:,}"
                if "error" in r:
                    lines.append(f"| {preset} | cuda | {b} | {r['error']} | | | {pcell} |")
                    continue
                h = r["results"]["hagan"]["peak_memory_mb"]
                c = r["results"]["crfgan"]["peak_memory_mb"]
                less = _pct_less(c, h)
                lines.append(f"| {preset} | {r['device']} | {b} | {_fmt(h)} | {_fmt(c)} | "
                             f"{'n/a' if less is None else f'{less:.1f}%'} | {pcell} |")
    if not hardware["cuda_available"] and budget.cuda_presets:
        lines.append(f"| {', '.join(budget.cuda_presets)} | - | {', '.join(map(str, budget.memory_batches))} | "
                     "not measured: no CUDA device on this machine | | | |")
    return lines


def _table4(hardware: dict, realism: dict, budget: Budget) -> list[str]:
    lines = ["| preset | device | batch | HA-GAN (it/s) | CRF-GAN (it/s) | CRF-GAN faster | paper: faster |",
             "|---|---|---|---|---|---|---|"]
    for preset, r in hardware["speed"].items():
        h, c = r["results"]["hagan"]["iters_per_s"], r["results"]["crfgan"]["iters_per_s"]
        paper = PAPER["speed_faster_pct"].get(preset)
        lines.append(f"| {preset} | {r['device']} | {r['batch_size']} | {h:.4g} | {c:.4g} | {100 * (c / h - 1):+.1f}% "
                     f"| {'' if paper is None else f'{paper}%'} |")
    tr = {m: realism["models"][m]["train"] for m in MODELS}
    if all(t.get("iters_per_s") for t in tr.values()):
        h, c = tr["hagan"]["iters_per_s"], tr["crfgan"]["iters_per_s"]
        note = " (trained by an earlier run, reused)" if any(t.get("reused") for t in tr.values()) else ""
        lines.append(f"| {budget.gan_preset} (Table 1 training, whole run{note}) | {tr['crfgan']['device']} | "
                     f"{budget.gan_batch_size} | {h:.4g} | {c:.4g} | {100 * (c / h - 1):+.1f}% | |")
    return lines


def _differences(params, hardware, realism, augmentation, budget) -> list[str]:
    """Plain statements of where this run agrees with the paper and where it does not."""
    out = []
    # parameters
    diffs = [(p, row["fewer_pct"], PAPER["params_fewer_pct"][p]) for p, row in params.items()
             if p in PAPER["params_fewer_pct"]]
    worst = max((abs(a - b) for _, a, b in diffs), default=0)
    out.append("- **Parameters (Table 2)**: CRF-GAN has "
               + ", ".join(f"{a:.2f}% fewer at {p} (paper {b}%)" for p, a, b in diffs)
               + (f"; within {worst:.2f} percentage points of the paper." if worst < 0.1 else
                  f"; up to {worst:.2f} percentage points away from the paper."))
    # memory
    rows: dict[str, list[tuple[str, int, float]]] = {}
    for source in ("memory", "cuda"):
        for preset, per_batch in hardware[source].items():
            for b, r in per_batch.items():
                if "error" in r:
                    continue
                v = _pct_less(r["results"]["crfgan"]["peak_memory_mb"], r["results"]["hagan"]["peak_memory_mb"])
                if v is not None:
                    rows.setdefault(torch.device(r["device"].split()[0]).type, []).append((preset, b, v))
    for dev, items in rows.items():
        avg = float(np.mean([v for *_, v in items]))
        verdict = "less, as in the paper" if avg > 0 else "MORE, the opposite of the paper"
        detail = ", ".join(f"{p} batch {b}: {v:+.1f}%" for p, b, v in items)
        text = (f"- **Peak memory (Table 3)**: on {dev.upper()} CRF-GAN used {abs(avg):.1f}% {verdict} on average "
                f"(less per row: {detail}; paper: about {PAPER['memory_less_pct_avg']}% less on GPU).")
        if dev == "cpu":
            text += (" The paper measures the GPU allocator; here it is the worker's peak resident set on CPU, "
                     "which includes the allocator's and the runtime's overheads, so the sizes are not comparable "
                     "with the paper's MB, only the direction and rough size of the difference.")
        out.append(text)
    if not hardware["cuda_available"] and budget.cuda_presets:
        out.append(f"- **Peak memory at {', '.join(budget.cuda_presets)}**: not measured (no CUDA device here); "
                   "the paper's 256^3 figures have no counterpart in this run.")
    # speed
    for preset, r in hardware["speed"].items():
        h, c = r["results"]["hagan"]["iters_per_s"], r["results"]["crfgan"]["iters_per_s"]
        faster = 100 * (c / h - 1)
        paper = PAPER["speed_faster_pct"].get(preset)
        ref = f"paper: {paper}% faster on GPU" if paper is not None else "not in the paper"
        word = "faster" if faster >= 0 else "SLOWER"
        out.append(f"- **Speed (Table 4), {preset}**: CRF-GAN was {abs(faster):.1f}% {word} than HA-GAN on "
                   f"{r['device']} at batch {r['batch_size']} ({ref}); best of {r['repeats']} alternating runs "
                   f"of {r['iterations']} iterations.")
    # realism
    res = {m: realism["models"][m]["metrics"] for m in MODELS}
    floor = res["crfgan"]["real_vs_real"]
    parts = []
    for key in [k for k in res["crfgan"] if k.startswith(("fd_", "kid_"))] + ["mmd"]:
        c, h = res["crfgan"].get(key, {}).get("value"), res["hagan"].get(key, {}).get("value")
        f = floor.get(key, {}).get("value")
        if c is None or h is None:
            continue
        better = "CRF-GAN" if c < h else "HA-GAN"
        noise = max(res["crfgan"][key].get("std") or 0, res["hagan"][key].get("std") or 0)
        text = f"{key}: CRF-GAN {c:.3g}, HA-GAN {h:.3g} ({better} lower"
        if noise and abs(c - h) <= noise:
            text += ", within the std over feature seeds"
        parts.append(text + (f"; real-vs-real floor {f:.3g})" if f is not None else ")"))
    sd = {m: res[m].get("sdr_d") or {} for m in MODELS}
    if all(sd[m].get("value") is not None for m in MODELS):
        parts.append(f"seam ratio SDR (D): CRF-GAN {sd['crfgan']['value']:.3g}, HA-GAN {sd['hagan']['value']:.3g}, "
                     f"real {sd['crfgan'].get('real', float('nan')):.3g} (the paper reports no SDR)")
    out.append("- **Realism (Table 1)**: the paper reports CRF-GAN better on FID (0.047 vs 0.061) and MMD "
               "(0.084 vs 0.086) on LUNA16 at 256^3 with MedicalNet features. Here: " + "; ".join(parts) + ". "
               f"This run trains {budget.gan_preset} models for {budget.brain_iterations} iterations on "
               f"{realism['real_count']} synthetic demo-brain volumes and measures with random-network features; "
               "FD magnitudes depend on the extractor and cannot be compared with the paper's numbers, only "
               "the ranking, and a ranking whose gap is small next to the std over feature seeds or next to "
               "the real-vs-real floor is not a finding.")
    cov = {m: (res[m].get("coverage") or {}).get("value") for m in MODELS}
    div = {m: res[m].get("msssim_diversity") or {} for m in MODELS}
    cov_floor = (floor.get("coverage") or {}).get("value")
    collapsed = [m for m in MODELS if cov[m] is not None and cov_floor and cov[m] < 0.5 * cov_floor]
    if collapsed:
        detail = ", ".join(
            f"{NAMES[m]} coverage {cov[m]:.2f}"
            + (f", MS-SSIM between its samples {div[m]['value']:.2f} (real pairs {div[m]['real']:.2f})"
               if div[m].get("value") is not None and div[m].get("real") is not None else "")
            for m in collapsed)
        out.append(f"- **Mode collapse (Table 1)**: {detail}; real vs real coverage {cov_floor:.2f}. "
                   f"{' and '.join(NAMES[m] for m in collapsed)} cover{'s' if len(collapsed) == 1 else ''} "
                   "less than half of the real volumes' neighbourhoods: the samples look much alike (see the "
                   "figure). At this budget the models are far from converged, so Table 1 compares two "
                   "undertrained generators, not the systems as the paper trains them.")
    # augmentation
    arms = augmentation["arms"]
    f1 = {k: (100 * v["f1"]["mean"], 100 * v["f1"]["std"]) for k, v in arms.items()}
    base = f1.get("real only")
    text = ("- **Augmentation (Table 5)**: paper F1 (LIDC malignancy): real only 76.92 ± 5.27, + CRF-GAN "
            "79.21 ± 3.19 (better), + HA-GAN 75.79 ± 3.63 (worse). Here (demo-chest nodule / no-nodule): "
            + ", ".join(f"{k} {m:.2f} ± {s:.2f}" for k, (m, s) in f1.items()) + ".")
    if base:
        verdicts = []
        for k, (m, s) in f1.items():
            if k == "real only":
                continue
            d = m - base[0]
            noise = max(s, base[1])
            size = "within one std of" if abs(d) <= noise else ("above" if d > 0 else "below")
            verdicts.append(f"{k} is {size} real only ({d:+.2f} points)")
        text += " " + "; ".join(verdicts) + "."
        acc = 100 * arms["real only"]["accuracy"]["mean"]
        if acc < 65:
            text += (f" The real-only classifier reaches {acc:.1f}% test accuracy, close to chance (50%): with "
                     f"{augmentation['split']['counts']['train']} training volumes at {augmentation['size']}^3 "
                     f"({augmentation['voxel_mm']:.1f} mm voxels, so a nodule of 6-25 mm spans "
                     f"{6 / augmentation['voxel_mm']:.1f}-{25 / augmentation['voxel_mm']:.1f} voxels and looks much "
                     "like a vessel cross-section), the task is too hard for this classifier, so this table can "
                     "neither confirm nor refute the paper's result.")
    out.append(text)
    return out


def _timings_table(timings: dict) -> list[str]:
    lines = ["| part | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    return lines


def _write_markdown(path: Path, ctx: dict) -> None:
    b: Budget = ctx["budget"]
    m = ctx["machine"]
    realism, params, hardware, aug = ctx["realism"], ctx["params"], ctx["hardware"], ctx["augmentation"]
    img = ctx["image_rel"]
    n_syn = {k: v["synthetic"] for k, v in aug["arms"].items()}
    ev = realism["models"]["crfgan"]["metrics"]
    lines = [
        "# CRF-GAN vs HA-GAN: the paper's comparison, rerun",
        "",
        f"Produced by `{ctx['command']}` at commit `{ctx['commit']}` on {ctx['date']}, "
        f"budget **{b.name}** ({b.description}).",
        "",
        f"Machine: {m['cpu']} ({m['cpu_count']} logical CPUs), {m['torch_threads']} torch thread(s), "
        f"torch {m['torch']}, Python {m['python']}, {m['platform']}; "
        f"CUDA: {m['cuda'] or 'none'}. Training and sampling device: {ctx['device']}. "
        f"Total wall time {ctx['total_seconds'] / 60:.1f} min.",
        "",
        *([f"This page was rendered again from the run's raw JSON (same numbers) at commit {ctx['rendered']}.", ""]
          if ctx.get("rendered") else []),
        "Every number below comes from this run, except the columns and sentences marked \"paper\", quoted from "
        "the CRF-GAN paper (GPU, LUNA16 / LIDC). The demo data are synthetic (made on this machine, see "
        "`napari_crfgan/data/demo.py`), not patient scans.",
        "",
        "## Table 1: realism on demo-brain (unconditional)",
        "",
        f"Both systems: preset {b.gan_preset}, batch {b.gan_batch_size}, {b.brain_iterations} iterations, "
        f"training seed {b.seed}, on the same {realism['real_count']} demo-brain volumes. "
        f"{ev['counts']['fake']} generated volumes per system from latent seeds 0..{ev['counts']['fake'] - 1} "
        f"against all {ev['counts']['real']} real volumes; the floor compares two real halves of "
        f"{ev['counts']['real_half']}. Features: {', '.join(ev['meta']['features'])} random networks over seeds "
        f"{ev['meta']['seeds']} (mean ± std); MMD: Gaussian kernel on voxels pooled to 16^3 with a permutation "
        f"p-value; coverage: k = 5 on {ev['meta']['prdc_features']} features; SDR (D): seam discontinuity ratio "
        f"at the {ev['meta']['seam_period']}-slice slab borders along D (real volumes on the same grid: "
        f"{_metric_cell({'value': ev.get('sdr_d', {}).get('real')})}). Lower is better for FD, KID and MMD, higher "
        "for coverage; SDR should be near the real value (~1). FD / KID magnitudes depend on the extractor: do not "
        "compare them with the paper's MedicalNet FID.",
        "",
        *_table1(realism),
        "",
        f"![samples]({img}/results_samples.png)",
        "",
        f"![training losses]({img}/results_training.png)",
        "",
        "<details><summary>All metrics of Table 1 (evaluate() output)</summary>",
        "",
    ]
    from .report import to_markdown
    for model in MODELS:
        lines += [f"### {NAMES[model]}", "", to_markdown(realism["models"][model]["metrics"])]
    lines += [
        "</details>",
        "",
        "## Table 2: parameters (exact counts, all networks)",
        "",
        "Paper presets (the papers' widths), counted with `build_system(...).network_counts()`: generator, "
        "discriminators, encoders and, for CRF-GAN, the CRF.",
        "",
        *_table2(params),
        "",
        "## Table 3: peak training memory",
        "",
        f"`bench()`: each system trained in a fresh worker process on the same random batch "
        f"({b.threads or 'default'} torch thread(s)); CPU peak = the worker's peak resident set minus its resident "
        f"set before the model was built; CUDA peak = `torch.cuda.max_memory_allocated`. Rows at batch "
        f"{b.speed_batch} are the Table 4 runs ({b.speed_iterations} timed iterations after one warm-up step, "
        f"{b.speed_repeats} alternating repeats, largest peak kept); the other rows run one warm-up step and "
        f"{b.memory_iterations} timed iteration(s), once (repeats = 1), because at 128^3 and batch 6 a CPU step "
        f"takes tens of seconds. The paper's figures are GPU MB and not comparable in size.",
        "",
        *_table3(hardware, b),
        "",
        f"![peak memory]({img}/results_memory.png)",
        "",
        "## Table 4: training speed",
        "",
        f"Iterations/s at batch {b.speed_batch}: best of {b.speed_repeats} alternating runs of "
        f"{b.speed_iterations} timed iterations (after a warm-up step) per system, from `bench()`; the last row "
        f"is the whole Table 1 training run of each system, batch {b.gan_batch_size}, including data loading "
        + ("(the two systems trained at the same time, one process and one core each)."
           if b.parallel_training else "(run one after the other, so a busy neighbour can favour either)."),
        "",
        *_table4(hardware, realism, b),
        "",
        "## Table 5: augmentation on demo-chest (nodule / no-nodule)",
        "",
        f"Conditional {b.gan_preset} generators (batch {b.gan_batch_size}, {b.chest_iterations} iterations, seed "
        f"{b.seed}) trained on the {aug['generator_train_count']} real training volumes only; synthetic volumes: "
        f"{', '.join(f'{k}: {v}' for k, v in n_syn.items() if v)} (as many as the real training volumes, half "
        f"of each class, latent seeds fixed and shared by both generators). Classifier: a small 3D CNN "
        f"(`NoduleClassifier`, width {aug['settings']['width']}, Adam lr {aug['settings']['lr']}, batch "
        f"{aug['settings']['batch_size']}, random flips), trained from each of {len(aug['seeds'])} seeds; "
        "precision / recall / F1 on the held-out real test volumes (threshold 0.5).",
        "",
        augmentation_markdown(aug, {k: f"{m} ± {s}" for k, (m, s) in PAPER["f1"].items()}),
        f"![augmentation]({img}/results_augmentation.png)",
        "",
        "## Where this run differs from the paper",
        "",
        *_differences(params, hardware, realism, aug, b),
        "",
        "## Timings",
        "",
        *_timings_table(ctx["timings"]),
        "",
        f"Raw results (JSON): `{ctx['json_path']}`.",
        "",
    ]
    path.write_text("\n".join(lines))


# ----------------------------------------------------------------------------- entry point

def run_paper_tables(budget: str | Budget = "small", out: str | os.PathLike = "docs",
                     work: str | os.PathLike = "runs/paper-tables", device: str = "cpu",
                     threads: int | None = -1, fresh: bool = False, command: str | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Train both systems, measure, and write ``<out>/results.md`` with figures in ``<out>/images``.

    Args:
        budget: a name of :data:`BUDGETS` or a :class:`Budget`.
        out: folder of results.md (figures go to ``<out>/images/results_*.png``).
        work: folder for checkpoints and the raw JSON (``<work>/<budget>``).
        device: training and sampling device ("cpu" by default).
        threads: torch CPU threads; -1: the budget's (1 for tiny and small), None: torch's default.
        fresh: delete the budget's work folder first (else finished runs are reused, unfinished resumed).
        command: the command line recorded in results.md.
        progress: callable receiving a line per step.

    Returns:
        The raw results (also written as JSON to ``<work>/<budget>/results.json``).
    """
    from ..training.devices import resolve_device

    budget = BUDGETS[budget] if isinstance(budget, str) and budget in BUDGETS else budget
    if not isinstance(budget, Budget):
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if threads != -1:
        budget = dataclasses.replace(budget, threads=threads)
    if budget.needs_cuda and resolve_device(device).type != "cuda":
        raise PaperTablesError(f"the {budget.name} budget is GPU scale and needs a CUDA device (--device cuda); "
                               "use --budget small on a CPU")
    plt = _require_matplotlib()
    log = progress or (lambda msg: None)
    if budget.threads:
        torch.set_num_threads(budget.threads)
    if resolve_device(device).type == "cpu":
        torch.set_flush_denormal(True)
    out = Path(out)
    work = Path(work) / budget.name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "python -c 'run_paper_tables(...)'"
    machine = machine_info()
    commit = git_commit()
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        log(f"== {name}")
        t = time.perf_counter()
        result = fn(*args)
        timings[name] = time.perf_counter() - t
        log(f"== {name}: {timings[name]:.0f} s")
        return result

    params = timed("Table 2: parameter counts", param_counts, budget.param_presets)
    realism, real, samples = timed("Table 1: train on demo-brain, sample, evaluate", _realism, budget, work,
                                   device, log)
    augmentation = timed("Table 5: conditional training on demo-chest, classifier seeds", _augmentation,
                         budget, work, device, log)
    hardware = timed("Tables 3 and 4: bench", _hardware, budget, log)
    images = out / IMAGE_DIR
    figures = timed("figures", _figures, plt, images, realism, real, samples, hardware, augmentation)
    total = time.perf_counter() - t_start
    raw = {
        "budget": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                   for k, v in ((f.name, getattr(budget, f.name)) for f in dataclasses.fields(budget))},
        "command": command, "commit": commit, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine, "device": device, "timings": timings, "total_seconds": total,
        "params": params, "realism": realism, "hardware": hardware, "augmentation": augmentation,
        "figures": figures,
    }
    json_path = work / "results.json"
    json_path.write_text(json.dumps(raw, indent=1, default=_json_default))
    ctx = dict(raw, budget=budget, image_rel=IMAGE_DIR, json_path=str(json_path))
    _write_markdown(out / "results.md", ctx)
    log(f"wrote {out / 'results.md'} and {len(figures)} figures in {images} ({total / 60:.1f} min)")
    return raw


def render_markdown(json_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``<out>/results.md`` again from a run's raw ``results.json`` (figures are left as they are)."""
    raw = json.loads(Path(json_path).read_text())
    b = dict(raw["budget"])
    b["aug_settings"] = AugmentationSettings(**{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in b["aug_settings"].items()})
    budget = Budget(**{k: tuple(v) if isinstance(v, list) else v for k, v in b.items()})
    hardware = dict(raw["hardware"])
    for source in ("memory", "cuda"):  # JSON made the batch sizes strings
        hardware[source] = {p: {int(k): v for k, v in rows.items()} for p, rows in hardware[source].items()}
    ctx = dict(raw, hardware=hardware, budget=budget, image_rel=IMAGE_DIR, json_path=str(json_path),
               rendered=f"{git_commit()} on {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    path = Path(out) / "results.md"
    _write_markdown(path, ctx)
    return path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def command_line(budget: str, out, work, device: str, threads: int | None, fresh: bool) -> str:
    """The `crfgan paper-tables` command line that runs with these settings (recorded in results.md)."""
    parts = ["crfgan", "paper-tables", "--budget", budget, "--out", str(out), "--work", str(work),
             "--device", device]
    if threads is not None:
        parts += ["--threads", str(threads)]
    if fresh:
        parts.append("--fresh")
    return " ".join(shlex.quote(p) for p in parts)
