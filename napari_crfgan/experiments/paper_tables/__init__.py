"""`crfgan paper-tables`: the CRF-GAN paper's comparison with HA-GAN, rerun, with the no-CRF ablation.

The systems of :data:`~.budgets.MODELS` (CRF-GAN, HA-GAN and CRF-GAN without CRF) are
trained on the same demo data, with the same preset, batch size, iterations and seed,
then compared in six tables written to ``results.md`` (with PNG figures beside it,
under ``images/``):

1. realism on ``demo-brain`` (unconditional): FD, KID, MMD, coverage and the seam
   ratio SDR from :func:`~napari_crfgan.evaluation.evaluate`, the same number of
   generated volumes per system from the same latent seeds, with the real-vs-real row;
2. exact parameter counts of the paper presets at 64^3, 128^3 and 256^3;
3. peak training memory at batch 2, 4 and 6, split into static (weights, gradients,
   optimiser state) and activations (CPU at 64^3 and 128^3; 256^3 only where a CUDA
   device is present);
4. training iterations/s at batch 2 (paper-64 and paper-128), medians with their range;
5. the augmentation task on ``demo-chest`` (nodule / no-nodule) with conditional
   generators trained on the real training split only
   (:func:`~napari_crfgan.experiments.downstream.run_augmentation`);
6. mask synthesis on ``demo-chest`` with its masks (pix2pix): a segmenter's Dice on held-out real pairs when
   trained on real, real + synthetic and synthetic pairs, FD / KID, mean HU per structure and a painted
   nodule (:mod:`~napari_crfgan.experiments.mask_eval`; ``crfgan mask-eval`` reruns this table alone).

Budgets (:data:`BUDGETS`): ``tiny`` (tiny-32, a few iterations: for tests),
``small`` (small-64 on a 2-core CPU), ``paper``
(GPU scale, needs CUDA). Every number in ``results.md`` comes from the run, except
the columns marked "paper", quoted from the CRF-GAN paper (:data:`PAPER`).

Trained checkpoints are kept in the work folder (``runs/paper-tables/<budget>``);
a rerun reuses a finished one and resumes an unfinished one.

Modules: ``budgets`` (sizes and the paper's numbers), ``provenance`` (machine, commit,
command line), ``parts`` (the measurements; GAN training through ``experiments.runs``),
``compare`` (the pairs compared, bench ratios as percentages, "as in the paper" only where close),
``figures``, ``markdown`` (results.md) and ``commentary`` (how the run compares with the paper).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...runtime import resolve_device, torch_threads
from .budgets import BUDGETS, PAPER, Budget, PaperTablesError
from .figures import IMAGE_DIR, draw_figures, require_matplotlib
from .markdown import render_markdown, write_markdown
from ..mask_report import mask_markdown, put_section
from .parts import count_parameters, measure_augmentation, measure_hardware, measure_mask_synthesis, measure_realism
from .provenance import command_line, git_commit, machine_info

__all__ = ["BUDGETS", "PAPER", "Budget", "PaperTablesError", "command_line", "machine_info", "render_markdown",
           "run_paper_tables", "run_mask_table"]


def _resolve_budget(budget: str | Budget, threads: int | None, device: str) -> Budget:
    if not isinstance(budget, Budget):
        try:
            budget = BUDGETS[budget]
        except (KeyError, TypeError):  # TypeError: an unhashable argument
            raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}") from None
    if threads != -1:
        budget = dataclasses.replace(budget, threads=threads)
    if budget.needs_cuda and resolve_device(device).type != "cuda":
        raise PaperTablesError(f"the {budget.name} budget is GPU scale and needs a CUDA device (--device cuda); "
                               "use --budget small on a CPU")
    return budget


def run_paper_tables(budget: str | Budget = "small", out: str | os.PathLike = "docs",
                     work: str | os.PathLike = "runs/paper-tables", device: str = "cpu",
                     threads: int | None = -1, fresh: bool = False, command: str | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Train the systems, measure, and write ``<out>/results.md`` with figures in ``<out>/images``.

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
    budget = _resolve_budget(budget, threads, device)
    plt = require_matplotlib()
    log = progress or (lambda msg: None)
    out = Path(out)
    work = Path(work) / budget.name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    command = command or "python -c 'run_paper_tables(...)'"
    # the settings hold for this run only: the caller's process (a napari session, a test) gets its own back
    with torch_threads(budget.threads or None, flush_denormal=resolve_device(device).type == "cpu"):
        return _run(budget, plt, out, work, device, command, log)


def _run(budget: Budget, plt, out: Path, work: Path, device: str, command: str, log) -> dict:
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

    params = timed("Table 2: parameter counts", count_parameters, budget.param_presets)
    realism, real, samples, train = timed("Table 1: train on demo-brain, sample, evaluate", measure_realism,
                                          budget, work, device, log)
    augmentation = timed("Table 5: conditional training on demo-chest, classifier seeds", measure_augmentation,
                         budget, work, device, log)
    mask = timed("Table 6: mask synthesis on demo-chest", measure_mask_synthesis, budget, work, device, log)
    hardware = timed("Tables 3 and 4: bench", measure_hardware, budget, log)
    images = out / IMAGE_DIR
    figures = timed("figures", draw_figures, plt, images, realism, real, samples, train, hardware,
                    augmentation)
    total = time.perf_counter() - t_start
    raw = {
        "budget": {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                   for k, v in ((f.name, getattr(budget, f.name)) for f in dataclasses.fields(budget))},
        "command": command, "commit": commit, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine, "device": device, "timings": timings, "total_seconds": total,
        "params": params, "realism": realism, "hardware": hardware, "augmentation": augmentation,
        "mask_synthesis": mask, "figures": figures,
    }
    json_path = work / "results.json"
    json_path.write_text(json.dumps(raw, indent=1, default=_json_default))
    ctx = dict(raw, budget=budget, image_rel=IMAGE_DIR, json_path=str(json_path))
    write_markdown(out / "results.md", ctx)
    log(f"wrote {out / 'results.md'} and {len(figures)} figures in {images} ({total / 60:.1f} min)")
    return raw


def run_mask_table(budget: str | Budget = "small", out: str | os.PathLike = "docs",
                   work: str | os.PathLike = "runs/paper-tables", device: str = "cpu", threads: int | None = -1,
                   command: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """`crfgan mask-eval`: Table 6 alone (the same code and work folder as paper-tables), put into
    ``<out>/results.md`` in place of an earlier Table 6; returns the result with its section as "markdown"."""
    budget = _resolve_budget(budget, threads, device)
    log = progress or (lambda msg: None)
    command = command or "python -c 'run_mask_table(...)'"
    with torch_threads(budget.threads or None, flush_denormal=resolve_device(device).type == "cpu"):
        result = measure_mask_synthesis(budget, Path(work) / budget.name, device, log)
        result["provenance"] = {"commit": git_commit(), "machine": machine_info(),  # the threads it ran with
                                "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    section = mask_markdown(result, command)
    put_section(Path(out) / "results.md", section)
    return {**result, "markdown": section}


def _json_default(obj):
    """JSON for what json cannot write: numpy scalars as numbers, tuples and sets as lists, the rest as text."""
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)
