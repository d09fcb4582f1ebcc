"""results.md: the five tables, their method notes, the commentary and the timings.

:func:`write_markdown` renders a run's context (the raw results plus the Budget, the image
folder and the JSON path) one section at a time; :func:`render_markdown` rebuilds that
context from ``results.json``, so the page can be written again without rerunning anything.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

from ...evaluation import to_markdown
from ...model import display_name
from ..downstream import AugmentationSettings, augmentation_markdown
from .budgets import MODELS, PAPER, Budget
from .commentary import differences, pct_less
from .figures import IMAGE_DIR
from .provenance import git_commit


def cell(value, std=None, spec: str = ".4g") -> str:
    """A table cell: `value` formatted with `spec`, then "± std" when std is non-zero; "n/a" without a value."""
    if value is None:
        return "n/a"
    text = format(value, spec)
    if std:
        text += f" ± {std:.2g}"
    return text


# ----------------------------------------------------------------------------- tables

def _table1(realism: dict) -> list[str]:
    res = {m: realism["models"][m]["metrics"] for m in MODELS}
    floor = res["crfgan"]["real_vs_real"]
    feats = [k for k in res["crfgan"] if k.startswith(("fd_", "kid_"))]
    cols = feats + ["mmd", "coverage", "sdr_d"]
    titles = {"mmd": "MMD (p)", "coverage": "coverage", "sdr_d": "SDR (D)"}
    head = "| | " + " | ".join(titles.get(c, c.replace("fd_", "FD ").replace("kid_", "KID ")) for c in cols) + " |"
    lines = [head, "|---" * (len(cols) + 1) + "|"]

    def metric(entry, col):
        entry = entry or {}
        text = cell(entry.get("value"), entry.get("std"))
        if col == "mmd" and entry.get("p") is not None:
            text += f" (p={entry['p']:.2g})"
        return text

    for m in MODELS:
        lines.append(f"| {display_name(m)} | " + " | ".join(metric(res[m].get(c), c) for c in cols) + " |")
    lines.append("| real vs real (floor) | " + " | ".join(metric(floor.get(c), c) for c in cols) + " |")
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
                less = pct_less(c, h)
                lines.append(f"| {preset} | {r['device']} | {b} | {cell(h, spec=',.1f')} | {cell(c, spec=',.1f')} | "
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


# ----------------------------------------------------------------------------- sections

def _header(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    m = ctx["machine"]
    return [
        "# CRF-GAN vs HA-GAN: the paper's comparison, rerun",
        "",
        (f"Produced by `{ctx['command']}` at commit `{ctx['commit']}` on {ctx['date']}, "
         f"budget **{b.name}** ({b.description})."),
        "",
        (f"Machine: {m['cpu']} ({m['cpu_count']} logical CPUs), {m['torch_threads']} torch thread(s), "
         f"torch {m['torch']}, Python {m['python']}, {m['platform']}; "
         f"CUDA: {m['cuda'] or 'none'}. Training and sampling device: {ctx['device']}. "
         f"Total wall time {ctx['total_seconds'] / 60:.1f} min."),
        "",
        *([f"This page was rendered again from the run's raw JSON (same numbers) at commit {ctx['rendered']}.", ""]
          if ctx.get("rendered") else []),
        ("Every number below comes from this run, except the columns and sentences marked \"paper\", quoted from "
         "the CRF-GAN paper (GPU, LUNA16 / LIDC). The demo data are synthetic (made on this machine, see "
         "`napari_crfgan/data/demo.py`), not patient scans."),
        "",
    ]


def _realism_section(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    realism, img = ctx["realism"], ctx["image_rel"]
    ev = realism["models"]["crfgan"]["metrics"]
    lines = [
        "## Table 1: realism on demo-brain (unconditional)",
        "",
        (f"Both systems: preset {b.gan_preset}, batch {b.gan_batch_size}, {b.brain_iterations} iterations, "
         f"training seed {b.seed}, on the same {realism['real_count']} demo-brain volumes. "
         f"{ev['counts']['fake']} generated volumes per system from latent seeds 0..{ev['counts']['fake'] - 1} "
         f"against all {ev['counts']['real']} real volumes; the floor compares two real halves of "
         f"{ev['counts']['real_half']}. Features: {', '.join(ev['meta']['features'])} random networks over seeds "
         f"{ev['meta']['seeds']} (mean ± std); MMD: Gaussian kernel on voxels pooled to 16^3 with a permutation "
         f"p-value; coverage: k = 5 on {ev['meta']['prdc_features']} features; SDR (D): seam discontinuity ratio "
         f"at the {ev['meta']['seam_period']}-slice slab borders along D (real volumes on the same grid: "
         f"{cell(ev.get('sdr_d', {}).get('real'))}). Lower is better for FD, KID and MMD, higher "
         "for coverage; SDR should be near the real value (~1). FD / KID magnitudes depend on the extractor: do not "
         "compare them with the paper's MedicalNet FID."),
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
    for model in MODELS:
        lines += [f"### {display_name(model)}", "", to_markdown(realism["models"][model]["metrics"])]
    return lines + ["</details>", ""]


def _parameters_section(ctx: dict) -> list[str]:
    return [
        "## Table 2: parameters (exact counts, all networks)",
        "",
        ("Paper presets (the papers' widths), counted with `build_system(...).network_counts()`: generator, "
         "discriminators, encoders and, for CRF-GAN, the CRF."),
        "",
        *_table2(ctx["params"]),
        "",
    ]


def _hardware_sections(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    hardware, img = ctx["hardware"], ctx["image_rel"]
    return [
        "## Table 3: peak training memory",
        "",
        (f"`bench()`: each system trained in a fresh worker process on the same random batch "
         f"({b.threads or 'default'} torch thread(s)); CPU peak = the worker's peak resident set minus its resident "
         f"set before the model was built; CUDA peak = `torch.cuda.max_memory_allocated`. Rows at batch "
         f"{b.speed_batch} are the Table 4 runs ({b.speed_iterations} timed iterations after one warm-up step, "
         f"{b.speed_repeats} alternating repeats, largest peak kept); the other rows run one warm-up step and "
         f"{b.memory_iterations} timed iteration(s), once (repeats = 1), because at 128^3 and batch 6 a CPU step "
         f"takes tens of seconds. The paper's figures are GPU MB and not comparable in size."),
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
        *_table4(hardware, ctx["realism"], b),
        "",
    ]


def _augmentation_section(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    aug = ctx["augmentation"]
    n_syn = {k: v["synthetic"] for k, v in aug["arms"].items()}
    return [
        "## Table 5: augmentation on demo-chest (nodule / no-nodule)",
        "",
        (f"Conditional {b.gan_preset} generators (batch {b.gan_batch_size}, {b.chest_iterations} iterations, seed "
         f"{b.seed}) trained on the {aug['generator_train_count']} real training volumes only; synthetic volumes: "
         f"{', '.join(f'{k}: {v}' for k, v in n_syn.items() if v)} (as many as the real training volumes, half "
         f"of each class, latent seeds fixed and shared by both generators). Classifier: a small 3D CNN "
         f"(`NoduleClassifier`, width {aug['settings']['width']}, Adam lr {aug['settings']['lr']}, batch "
         f"{aug['settings']['batch_size']}, random flips), trained from each of {len(aug['seeds'])} seeds; "
         "precision / recall / F1 on the held-out real test volumes (threshold 0.5)."),
        "",
        augmentation_markdown(aug, {k: f"{m} ± {s}" for k, (m, s) in PAPER["f1"].items()}),
        f"![augmentation]({ctx['image_rel']}/results_augmentation.png)",
        "",
    ]


def _closing(ctx: dict) -> list[str]:
    return [
        "## Where this run differs from the paper",
        "",
        *differences(ctx["params"], ctx["hardware"], ctx["realism"], ctx["augmentation"], ctx["budget"]),
        "",
        "## Timings",
        "",
        "| part | seconds |",
        "|---|---|",
        *(f"| {k} | {v:.0f} |" for k, v in ctx["timings"].items()),
        "",
        f"Raw results (JSON): `{ctx['json_path']}`.",
        "",
    ]


SECTIONS = (_header, _realism_section, _parameters_section, _hardware_sections, _augmentation_section, _closing)


def write_markdown(path: Path, ctx: dict) -> None:
    """Write results.md from a run's context: the raw results plus budget, image_rel and json_path."""
    path.write_text("\n".join(line for section in SECTIONS for line in section(ctx)))


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
    write_markdown(path, ctx)
    return path
