"""`crfgan pretrain`: (re)build a shipped pretrained demo generator.

Trains the recommended recipe on the demo set of the same name (demo-brain unconditional,
demo-chest conditional on nodule / no-nodule) on the train list of a split recorded in
the work folder, then writes only the sampled generator weights (`Checkpoint.sampling_only`)
to ``napari_crfgan/weights/<name>.pt`` (or ``--out``). The generator file records the split,
so ``crfgan eval --fake pretrained:<name>`` scores it on the held-out test list on any
machine (a demo set is regenerated from its recorded name, count and seed). The work folder
keeps the full run: a killed rebuild resumes, and a finished one is only exported again.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data.split import SPLIT_NAME
from ..model.recipes import RECOMMENDED
from ..runtime import load_checkpoint, save_checkpoint
from ..runtime.pretrained import PRETRAINED, WEIGHTS_DIR, weights_file
from ..files import check_writable
from ..training import TrainOptions, decide_start, prepare_dataset, run_training
from ..training.options import option
from .demo import DEMO_COUNT, ensure_split


@dataclass
class PretrainOptions:
    name: str = option("demo-brain", "which pretrained model to build", choices=tuple(PRETRAINED))
    iterations: int = option(1000, "training iterations (the shipped models: 1000)")
    work: str = option("runs/pretrain", "folder of the full training run (<work>/<name>; resumable)")
    out: str = option(str(WEIGHTS_DIR), "folder the generator file <name>.pt is written to")
    recipe: str = option(RECOMMENDED, "training recipe")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    seed: int = option(0, "training seed")
    threads: int | None = option(None, "torch CPU threads (default: torch's)")
    preset: str = option("small-64", "model configuration", cli=False)
    demo_count: int = option(DEMO_COUNT, "demo volumes (split 70 / 10 / 20 %)", cli=False)

    def train_options(self) -> TrainOptions:
        folder = Path(self.work) / self.name
        return TrainOptions(data=self.name, out=str(folder), preset=self.preset, iterations=self.iterations,
                            resume="auto", device=self.device, seed=self.seed, threads=self.threads,
                            recipe=self.recipe, conditional=self.name == "demo-chest", demo_count=self.demo_count,
                            split=str(folder / SPLIT_NAME))


def run_pretrain(options: PretrainOptions, log: Callable[[str], None] = lambda msg: None, on_report=None,
                 should_stop=None) -> dict:
    """Train (or resume, or reuse) the run and export its generator; returns what was written."""
    train_options = options.train_options()
    folder = Path(train_options.out)
    target = weights_file(options.name, options.out)
    check_writable(target.parent, "weights folder")  # found now, not after the training
    decide_start(train_options)
    ensure_split(train_options)
    t0 = time.perf_counter()
    result = run_training(train_options, prepare_dataset(train_options), on_report=on_report,
                          should_stop=should_stop)
    if result.stopped:
        log(f"stopped at iteration {result.iteration}; {result.checkpoint_path} kept, nothing exported")
        return {"stopped": True, "checkpoint": str(result.checkpoint_path)}
    ckpt = load_checkpoint(result.checkpoint_path)
    path = save_checkpoint(target, ckpt.sampling_only())
    summary = {"name": options.name, "file": str(path), "megabytes": round(path.stat().st_size / 2**20, 2),
               "iterations": ckpt.iteration, "recipe": options.recipe,
               "train_seconds": None if result.reused else round(time.perf_counter() - t0),
               "iters_per_s": ckpt.metrics.get("iters_per_s"), "device": ckpt.metrics.get("device")}
    log(f"wrote {path} ({summary['megabytes']} MB, {ckpt.iteration} iterations of {options.recipe})")
    (folder / "pretrain.json").write_text(json.dumps(summary, indent=1))
    return summary
