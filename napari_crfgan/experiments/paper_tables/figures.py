"""The five PNG figures beside results.md, drawn with matplotlib (Agg, no display needed).

``images/results_samples.png`` (slices of real and generated volumes), ``results_nearest.png``
(generated volumes beside their nearest training volume, the memorisation check), ``results_training.png``
(GAN losses of the Table 1 runs), ``results_memory.png`` (Table 3) and
``results_augmentation.png`` (Table 5, F1 per classifier seed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...model import display_name
from ..montage import orthogonal_slices
from .budgets import MODELS, PaperTablesError

IMAGE_DIR = "images"  # beside results.md, which links the figures relative to itself


def require_matplotlib():
    """pyplot on the Agg backend, or PaperTablesError saying how to install matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise PaperTablesError("paper-tables draws its figures with matplotlib, which is not installed; "
                               "install it (pip install matplotlib, or the package's [test] extra)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def draw_figures(plt, images: Path, realism: dict, real: np.ndarray, samples: dict, train: np.ndarray,
                 hardware: dict, augmentation: dict) -> dict[str, str]:
    """Write the five figures into `images`; returns their paths by name."""
    images.mkdir(parents=True, exist_ok=True)
    figures = {
        "samples": (_samples, (real, samples)),
        "nearest": (_nearest, (realism, samples, train)),
        "training": (_losses, (realism,)),
        "memory": (_memory, (hardware,)),
        "augmentation": (_augmentation, (augmentation,)),
    }
    paths = {}
    for name, (draw, args) in figures.items():
        fig = draw(plt, *args)
        fig.savefig(images / f"results_{name}.png", dpi=110)
        plt.close(fig)
        paths[name] = str(images / f"results_{name}.png")
    return paths


def _samples(plt, real: np.ndarray, samples: dict):
    """Real, then a row per system: three orthogonal middle slices of four volumes each."""
    rows = [("real (demo-brain)", real), *((display_name(m), samples[m]) for m in MODELS)]
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
    return fig


NEAREST_PAIRS = 3  # generated volumes per system in the nearest-neighbour montage


def _nearest(plt, realism: dict, samples: dict, train: np.ndarray):
    """A row per system: generated volumes (latent seeds 0-2, first training seed), each beside the training
    volume nearest to it in the memorisation space, with both distances."""
    n = min(NEAREST_PAIRS, *(len(samples[m]) for m in MODELS))
    fig, axes = plt.subplots(len(MODELS), 2 * n, figsize=(2.6 * 2 * n, 1.5 * len(MODELS) + 0.5), squeeze=False)
    for i, model in enumerate(MODELS):
        mem = realism["models"][model]["metrics"]["memorisation"]
        for j in range(n):
            k, d, limit = mem["nearest_train"][j], mem["fake_to_train"][j], mem["threshold"]
            closer = "<" if d < limit else ">="
            panels = ((samples[model][j], f"sample {j}"), (train[k], f"train #{k}: {d:.1f} {closer} {limit:.1f}"))
            for c, (vol, title) in enumerate(panels):
                ax = axes[i][2 * j + c]
                ax.imshow(orthogonal_slices(vol), cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(title, fontsize=6)
                if j == 0 and c == 0:
                    ax.set_ylabel(display_name(model), fontsize=8)
    fig.suptitle("Generated volume, then its nearest training volume (distance at 16^3; in brackets the 5th "
                 "percentile of held-out scans' distances: below it = closer than new scans)", fontsize=8)
    fig.tight_layout()
    return fig


def _losses(plt, realism: dict):
    """Generator and discriminator losses during the Table 1 training."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for model in MODELS:
        h = realism["models"][model]["history"]
        for ax, key in zip(axes, ("g", "d")):
            ax.plot(h["iteration"], h[key], label=display_name(model))
    for ax, key in zip(axes, ("generator loss", "discriminator loss")):
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _memory(plt, hardware: dict):
    """Peak training memory per preset and batch (Table 3): a bar per system, its static part hatched."""
    rows = [(f"{preset}\nbatch {b}", r) for preset, per_batch in hardware["memory"].items()
            for b, r in per_batch.items()]
    x = np.arange(len(rows))
    width = 0.8 / len(MODELS)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(MODELS) * len(rows) + 1.5) + 2.0, 3.4))
    for i, model in enumerate(MODELS):
        res = [r["results"][model] for _, r in rows]
        pos = x + (i - (len(MODELS) - 1) / 2) * width
        ax.bar(pos, [v["peak_memory_mb"] for v in res], width, label=display_name(model), color=f"C{i}")
        # static memory (weights, gradients, Adam state) is counted exactly; the rest of the bar is activations
        ax.bar(pos, [v.get("static_mb") or 0 for v in res], width, fill=False, hatch="//", edgecolor="white",
               linewidth=0)
    ax.set_xticks(x, [label for label, _ in rows], fontsize=7)
    devices = {r["device"].split()[0] for _, r in rows}
    unit = "CPU RSS" if devices == {"cpu"} else "CUDA allocated" if "cpu" not in devices else "RSS / allocated"
    ax.set_ylabel(f"peak training memory (MB, {unit})", fontsize=8)
    ax.set_title("hatched: static (weights, gradients, optimiser state); above it: activations", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    return fig


def _augmentation(plt, augmentation: dict):
    """Test F1 per classifier seed and mean ± std per arm (Table 5)."""
    arms = augmentation["arms"]
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for i, arm in enumerate(arms.values()):
        f1 = [100 * r["f1"] for r in arm["runs"]]
        ax.scatter(np.full(len(f1), i) + np.linspace(-0.15, 0.15, len(f1)), f1, s=12, alpha=0.6)
        ax.errorbar(i, 100 * arm["f1"]["mean"], yerr=100 * arm["f1"]["std"], fmt="o", color="black", capsize=5)
    ax.set_xticks(range(len(arms)), list(arms), fontsize=8)
    ax.set_ylabel("test F1 (%), nodule positive")
    ax.set_ylim(-5, 105)
    ax.set_title(f"{len(augmentation['seeds'])} classifier seeds: points = seeds, bars = mean ± std", fontsize=9)
    fig.tight_layout()
    return fig
