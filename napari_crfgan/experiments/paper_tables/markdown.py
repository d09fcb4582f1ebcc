"""results.md: the six tables, their method notes, the commentary and the timings.

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
from ..mask_eval import settings_from_record
from ..mask_report import mask_markdown
from .budgets import MODELS, PAPER, Budget
from .parts import HEADLINE
from .commentary import differences
from .compare import bench_pct, pct_cell
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

_TITLES = {"mmd": "MMD", "coverage": "coverage", "msssim_diversity": "MS-SSIM between samples",
           "seams": "seams (p)", "grid": "grid (p)", "memorisation": "memorised"}


def _title(key: str) -> str:
    return _TITLES.get(key, key.replace("fd_", "FD ").replace("kid_", "KID "))


def _table1(realism: dict) -> list[str]:
    """Mean ± std over training seeds per system; the floor row: two halves of the held-out test set."""
    over = {m: realism["models"][m]["over_seeds"] for m in MODELS}
    cols = [k for k in HEADLINE if k in over["crfgan"]]
    lines = ["| | " + " | ".join(_title(c) for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def p_values(model, col):  # the permutation p of every seed's run
        ps = [e["metrics"][col].get("p") for e in realism["models"][model]["seeds"].values()]
        return f" (p {', '.join(f'{p:.2g}' for p in ps if p is not None)})" if col in ("seams", "grid") else ""

    for m in MODELS:
        lines.append(f"| {display_name(m)} | " + " | ".join(
            cell(over[m][c]["mean"], over[m][c]["std"]) + p_values(m, c) for c in cols) + " |")
    floor = realism["models"]["crfgan"]["metrics"]["real_vs_real"]
    null = realism["models"]["crfgan"]["metrics"]["memorisation"]["null"]
    lines.append("| real vs real (floor) | " + " | ".join(
        f"{null} (null)" if c == "memorisation" else cell((floor.get(c) or {}).get("value")) for c in cols) + " |")
    return lines


def _paired_table(realism: dict) -> list[str]:
    """Per pair and metric: each seed's difference with its paired bootstrap interval, and the verdict."""
    seeds = list(next(iter(realism["paired"].values())))
    lines = ["| difference | metric | " + " | ".join(f"seed {s}: a - b [95% CI]" for s in seeds)
             + " | verdict |", "|---" * (len(seeds) + 3) + "|"]
    for pair, per_seed in realism["paired"].items():
        a, b = pair.split(" - ")
        keys = [k for k in per_seed[seeds[0]] if isinstance(per_seed[seeds[0]][k], dict)
                and "diff" in per_seed[seeds[0]][k]]
        for key in keys:
            cells = [f"{d['diff']:.3g} [{d['low']:.3g}, {d['high']:.3g}]" for d in (per_seed[s][key] for s in seeds)]
            lines.append(f"| {display_name(a)} - {display_name(b)} | {_title(key)} | " + " | ".join(cells)
                         + f" | {_verdict([per_seed[s][key] for s in seeds], a, b)} |")
    return lines


def _verdict(diffs: list[dict], a: str, b: str) -> str:
    """A ranking only where every seed's interval excludes zero on the same side."""
    better = {d.get("better") for d in diffs}
    if len(better) == 1 and None not in better:
        return f"{display_name(a if better == {'a'} else b)} better in every seed"
    return "no consistent difference"


def _table2(params: dict) -> list[str]:
    names = " | ".join(display_name(m) for m in MODELS)
    lines = [f"| preset | {names} | CRF-GAN fewer than HA-GAN | paper: fewer |", "|---" * (len(MODELS) + 3) + "|"]
    for preset, row in params.items():
        paper = PAPER["params_fewer_pct"].get(preset)
        lines.append(f"| {preset} | " + " | ".join(f"{row[m]['total']:,}" for m in MODELS)
                     + f" | {row['fewer_pct']:.2f}% | {'' if paper is None else f'{paper}%'} |")
    return lines


def _memory_cell(res: dict) -> str:
    """'peak (static + activations)' in MB; activations are n/a where the peak could not be read."""
    act = res.get("activation_mb")
    return (f"{cell(res['peak_memory_mb'], spec=',.1f')} ({cell(res.get('static_mb'), spec=',.1f')} + "
            f"{cell(act, spec=',.1f')})")


#: "less" columns of Table 3 and "faster" columns of Table 4: (system, reference, header)
_VERSUS = (("crfgan", "hagan", "than HA-GAN"), ("crfgan", "crfgan-nocrf", "than without CRF"))


def _table3(hardware: dict, budget: Budget) -> list[str]:
    width = len(MODELS) + len(_VERSUS) + 4
    lines = ["| preset | device | batch | " + " | ".join(f"{display_name(m)}: peak (static + activations), MB"
                                                     for m in MODELS)
             + " | " + " | ".join(f"CRF-GAN less {h}" for *_, h in _VERSUS)
             + " | paper (GPU): HA-GAN / CRF-GAN (MB) |", "|---" * width + "|"]
    for source in ("memory", "cuda"):
        for preset, per_batch in hardware[source].items():
            for b, r in per_batch.items():
                paper = PAPER["memory_mb"].get(preset)
                pcell = ""
                if paper and b in (2, 4, 6):
                    ph, pc = paper["hagan"][b // 2 - 1], paper["crfgan"][b // 2 - 1]
                    pcell = "-" if ph is None else f"{ph:,} / {pc:,}"
                if "error" in r:
                    lines.append(f"| {preset} | cuda | {b} | {r['error']} |" + " |" * (width - 5) + f" {pcell} |")
                    continue
                less = [pct_cell(bench_pct(r, a, ref, "peak_memory"), r["repeats"]) for a, ref, _ in _VERSUS]
                lines.append(f"| {preset} | {r['device']} | {b} | "
                             + " | ".join(_memory_cell(r["results"][m]) for m in MODELS)
                             + f" | {' | '.join(less)} | {pcell} |")
    if not hardware["cuda_available"] and budget.cuda_presets:
        lines.append(f"| {', '.join(budget.cuda_presets)} | - | {', '.join(map(str, budget.memory_batches))} | "
                     "not measured: no CUDA device on this machine |" + " |" * (width - 4))
    return lines


def _speed_cell(res: dict, repeats: int) -> str:
    text = f"{res['iters_per_s']:.4g}"
    lo, hi = res.get("iters_per_s_range") or (None, None)
    return text + (f" [{lo:.4g}, {hi:.4g}]" if repeats > 1 and lo is not None else "")


def _table4(hardware: dict, realism: dict, budget: Budget) -> list[str]:
    width = len(MODELS) + len(_VERSUS) + 4
    lines = ["| preset | device | batch | " + " | ".join(f"{display_name(m)} (it/s)" for m in MODELS)
             + " | " + " | ".join(f"CRF-GAN faster {h}" for *_, h in _VERSUS) + " | paper: faster |",
             "|---" * width + "|"]
    cuda_speed = {p: rows[budget.speed_batch] for p, rows in hardware["cuda"].items()
                  if budget.speed_batch in rows and "error" not in rows[budget.speed_batch]}
    for preset, r in [*hardware["speed"].items(), *cuda_speed.items()]:
        n = r["repeats"]
        paper = PAPER["speed_faster_pct"].get(preset)
        faster = [pct_cell(bench_pct(r, a, ref, "speed"), n) for a, ref, _ in _VERSUS]
        lines.append(f"| {preset} | {r['device']} | {r['batch_size']} | "
                     + " | ".join(_speed_cell(r["results"][m], n) for m in MODELS)
                     + f" | {' | '.join(faster)} | {'' if paper is None else f'{paper}%'} |")
    if not hardware["cuda_available"] and budget.cuda_presets:
        lines.append(f"| {', '.join(budget.cuda_presets)} | - | {budget.speed_batch} | not measured: no CUDA device "
                     "on this machine |" + " |" * (width - 4))
    tr = {m: realism["models"][m]["train"] for m in MODELS}
    if all(t.get("iters_per_s") for t in tr.values()):
        its = {m: t["iters_per_s"] for m, t in tr.items()}
        note = " (trained by an earlier run, reused)" if any(t.get("reused") for t in tr.values()) else ""
        faster = [f"{100 * (its[a] / its[ref] - 1):+.1f}%" for a, ref, _ in _VERSUS]
        lines.append(f"| {budget.gan_preset} (Table 1 training, whole run{note}) | {tr['crfgan']['device']} | "
                     f"{budget.gan_batch_size} | " + " | ".join(f"{its[m]:.4g}" for m in MODELS)
                     + f" | {' | '.join(faster)} | |")
    return lines


# ----------------------------------------------------------------------------- sections

def _header(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    m = ctx["machine"]
    return [
        "# CRF-GAN vs HA-GAN: the paper's comparison, rerun, with CRF-GAN without CRF",
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
         "`napari_crfgan/data/demo.py`), not patient scans. CRF-GAN without CRF (not in the paper) is the "
         "ablation: CRF-GAN's networks and training step with the CRF left out (weight 0), so CRF-GAN vs it is "
         "the CRF's own effect and it vs HA-GAN is what dropping HA-GAN's G^L / D^L / E^G does."),
        "",
    ]


def _realism_section(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    realism, img = ctx["realism"], ctx["image_rel"]
    ev = realism["models"]["crfgan"]["metrics"]
    sp = realism["split"]
    seeds = list(b.gan_seeds)
    lines = [
        "## Table 1: realism on demo-brain (unconditional), against held-out volumes",
        "",
        (f"demo-brain ({b.brain_count} volumes) split once (seed {sp['seed']}): train {sp['counts']['train']}, "
         f"validation {sp['counts']['val']}, test {sp['counts']['test']}; the split is `split.json` in the work "
         f"folder. {', '.join(display_name(m) for m in MODELS)}: preset {b.gan_preset}, batch {b.gan_batch_size}, "
         f"{b.brain_iterations} iterations on the train list only, each from training seeds {seeds}. From every "
         f"run {ev['counts']['fake']} generated volumes (latent seeds 0..{ev['counts']['fake'] - 1}, the same for "
         f"every run) against the {ev['counts']['real']} test volumes, which no generator saw."),
        "",
        ("**What the ± means here: the std over the training seeds (ddof=1)**, nothing else. Features: "
         f"{', '.join(ev['meta']['features'])} random networks over extractor seeds {ev['meta']['seeds']} "
         "(averaged within a run; their spread is in the details below). MMD: Gaussian kernel on voxels pooled "
         "to 16^3, bandwidth from the test set only. Coverage: k = 5 on "
         f"{ev['meta']['prdc_features']} features. Seams: slab-border excess along D at the strongest phase, "
         "fake minus real (p: permutation test, one per seed); grid: period-4 component of in-plane plane gaps, "
         "fake minus real (see docs/evaluation.md for their validation). Memorised: fraction of samples closer "
         "to a training volume than the 5th percentile of test-to-train distances (null 0.05). The floor row "
         "compares two halves of the test set. FD / KID magnitudes depend on the extractor: do not compare them "
         "with the paper's MedicalNet FID."),
        "",
        *_table1(realism),
        "",
        "### Paired differences",
        "",
        ("Each seed's systems are paired: the same latent codes and the same test volumes; the interval is a "
         f"paired bootstrap over samples and test volumes ({b.paired_boot} replicates, 95% percentile, "
         f"{', '.join(b.eval_options.get('features', ('shallow',))[:1])} features). A system is called better "
         "only where the interval excludes zero in every seed, on the same side."),
        "",
        *_paired_table(realism),
        "",
        f"![samples]({img}/results_samples.png)",
        "",
        ("Memorisation, by eye: each generated volume (training seed "
         f"{seeds[0]}) beside the training volume nearest to it in the memorisation space (volumes pooled to "
         "16^3), with that distance and the 5th percentile of the test volumes' nearest-training distances; a "
         "copy of a training scan would look the same as its neighbour and fall below that percentile."),
        "",
        f"![nearest training volumes]({img}/results_nearest.png)",
        "",
        f"![training losses]({img}/results_training.png)",
        "",
        f"<details><summary>All metrics of Table 1, training seed {seeds[0]} (evaluate() output)</summary>",
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
         "discriminators, encoders and, for CRF-GAN, the CRF (CRF-GAN without CRF has all of CRF-GAN's "
         "networks but the CRF)."),
        "",
        *_table2(ctx["params"]),
        "",
    ]


def _table3_note(b: Budget) -> str:
    cuda = (f" CUDA rows: {b.speed_iterations} timed iterations, {b.speed_repeats} repeats at every batch."
            if b.cuda_presets else "")
    return (f"`bench()`: each system trained in a fresh worker process on the same random batch and seed "
            f"({b.bench_threads or 'default'} torch thread(s)), the runs alternating between the systems. Peak: on CPU "
            "the worker's peak resident set minus its resident set before the model was built (so it also holds "
            "allocator and runtime overheads); on CUDA `torch.cuda.max_memory_allocated`, with "
            "`cudnn.benchmark` on as in the reference code. Static memory is counted exactly (parameters, their "
            "gradients, the Adam state and buffers); activations = peak - static. Medians over runs; \"less\" "
            "is taken per repeat (the systems of one repeat ran back to back), median [smallest, largest]. Rows "
            f"at batch {b.speed_batch} are the Table 4 runs ({b.speed_repeats} alternating repeats of "
            f"{b.speed_iterations} timed iterations after a warm-up step); the other rows run a warm-up step and "
            f"{b.memory_iterations} timed iteration(s), once, because at 128^3 and batch 6 a CPU step takes tens "
            f"of seconds.{cuda} The paper's figures are GPU MB and not comparable in size.")


def _table4_note(b: Budget, machine: dict) -> str:
    if b.parallel_training:
        shared = (f", more processes than the {machine['cpu_count']} logical CPUs, so they shared cores and "
                  "this row is rough" if (machine.get("cpu_count") or 0) < len(MODELS) else "")
        training = (f"(the {len(MODELS)} systems trained at the same time, one process and one torch thread "
                    f"each{shared}).")
    else:
        training = "(run one after the other, so a busy neighbour can favour any of them)."
    return (f"Iterations/s at batch {b.speed_batch} from `bench()`: a run's speed is 1 / the median time of its "
            f"{b.speed_iterations} timed iterations (after a warm-up step, each timed alone, synchronised on "
            f"CUDA); a system's figure is the median over {b.speed_repeats} alternating runs, [smallest, largest] "
            "beside it (never the best alone). \"Faster\" is taken per repeat, median [smallest, largest]. "
            f"The last row is the whole Table 1 training run of each system, batch {b.gan_batch_size}, including "
            f"data loading {training}")


def _hardware_sections(ctx: dict) -> list[str]:
    b: Budget = ctx["budget"]
    hardware, img = ctx["hardware"], ctx["image_rel"]
    return [
        "## Table 3: peak training memory",
        "",
        _table3_note(b),
        "",
        *_table3(hardware, b),
        "",
        f"![peak memory]({img}/results_memory.png)",
        "",
        "## Table 4: training speed",
        "",
        _table4_note(b, ctx["machine"]),
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
        (f"For each of {len(b.chest_splits)} splits of demo-chest ({b.chest_count} volumes, split seeds "
         f"{list(b.chest_splits)}): conditional {b.gan_preset} generators (batch {b.gan_batch_size}, "
         f"{b.chest_iterations} iterations, training seeds {list(b.chest_gan_seeds)}) trained on that split's "
         f"{aug['generator_train_count']} real training volumes only; synthetic volumes: "
         f"{', '.join(f'{k}: {v}' for k, v in n_syn.items() if v)} (as many as the real training volumes, half "
         f"of each class, latent seeds fixed and shared by all generators). Classifier (`NoduleClassifier`): a "
         "fixed, not learned, bright-blob filter (Hessian at sigma "
         f"{aug['settings'].get('blob_sigma', 1.0)} voxel, bone clipped) and a small learned CNN on its response "
         f"(width {aug['settings']['width']}, Adam lr {aug['settings']['lr']}, batch "
         f"{aug['settings']['batch_size']}, random flips), trained from each of {len(aug['seeds'])} seeds per "
         "split; precision / recall / F1 / accuracy on that split's held-out real test volumes (threshold 0.5). "
         "The fixed filter is there because a learned 3D CNN does not get off chance on this task from 40 "
         "volumes at 64^3 (it memorises the training volumes); with so few learned weights, the classifier "
         "may gain less from extra synthetic volumes than a larger one would."),
        "",
        augmentation_markdown(aug, {k: f"{m} ± {s}" for k, (m, s) in PAPER["f1"].items()}),
        f"![augmentation]({ctx['image_rel']}/results_augmentation.png)",
        "",
    ]


def _mask_section(ctx: dict) -> list[str]:
    """Table 6 (absent from runs made before it existed)."""
    mask = ctx.get("mask_synthesis")
    return mask_markdown(mask, ctx["command"]).splitlines() if mask else []


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


SECTIONS = (_header, _realism_section, _parameters_section, _hardware_sections, _augmentation_section, _mask_section,
            _closing)


def write_markdown(path: Path, ctx: dict) -> None:
    """Write results.md from a run's context: the raw results plus budget, image_rel and json_path."""
    path.write_text("\n".join(line for section in SECTIONS for line in section(ctx)))


def render_markdown(json_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``<out>/results.md`` again from a run's raw ``results.json`` (figures are left as they are)."""
    raw = json.loads(Path(json_path).read_text())
    b = dict(raw["budget"])
    b["aug_settings"] = AugmentationSettings(**{k: tuple(v) if isinstance(v, list) else v
                                                for k, v in b["aug_settings"].items()})
    if "mask_eval" in b:
        b["mask_eval"] = settings_from_record(b["mask_eval"])
    budget = Budget(**{k: tuple(v) if isinstance(v, list) else v for k, v in b.items()})
    hardware = dict(raw["hardware"])
    for source in ("memory", "cuda"):  # JSON made the batch sizes strings
        hardware[source] = {p: {int(k): v for k, v in rows.items()} for p, rows in hardware[source].items()}
    ctx = dict(raw, hardware=hardware, budget=budget, image_rel=IMAGE_DIR, json_path=str(json_path),
               rendered=f"{git_commit()} on {_dt.datetime.now().astimezone().isoformat(timespec='seconds')}")
    path = Path(out) / "results.md"
    write_markdown(path, ctx)
    return path
