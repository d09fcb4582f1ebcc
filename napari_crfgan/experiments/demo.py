"""`crfgan demo`: the main job on the embedded demo data.

Trains a small CRF-GAN with the recommended recipe on the train list of a split of
demo-brain (synthetic T1 MRIs made from the MNI152 template; the split is recorded in the
run folder, so `crfgan eval --fake <out>` scores the run on held-out volumes), samples
full-resolution volumes, writes them as NIfTI, and writes a PNG montage of the samples
(top row) above the training volume nearest to each (bottom row). A second run in the same folder continues the
checkpoint, or samples from it when it is finished.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..data import make_split, write_split
from ..data.split import SPLIT_NAME
from ..evaluation.memorisation import nearest_training
from ..model.recipes import RECIPES, RECOMMENDED
from ..sampling import Sampler, sample_path
from ..training import TrainOptions, TrainReport, decide_start, prepare_dataset, run_training
from ..training.options import option
from .montage import montage, write_png

DEMO_COUNT = 60


@dataclass
class DemoOptions:
    out: str = option("runs/demo", "run folder: checkpoint, samples/ and montage.png")
    iterations: int = option(1000, "training iterations (held-out quality was best near 1000 in the runs of "
                                   "docs/recipes.md)")
    batch_size: int = option(TrainOptions.batch_size, "volumes per iteration")
    num: int = option(4, "volumes to sample")
    device: str = option(TrainOptions.device, "auto, cpu, cuda, cuda:N or mps")
    seed: int = option(TrainOptions.seed, "training seed and first latent seed")
    data: str = option("demo-brain", "demo set to train on", cli=False)
    preset: str = option(TrainOptions.preset, "model configuration", cli=False)
    threads: int | None = option(TrainOptions.threads, "torch CPU threads (default: torch's)")
    recipe: str = option(RECOMMENDED, "training recipe (see docs/recipes.md)", choices=lambda: tuple(RECIPES))
    demo_count: int = option(DEMO_COUNT, "demo volumes (split 70 / 10 / 20 % into train / val / test)")

    def train_options(self) -> TrainOptions:
        return TrainOptions(data=self.data, out=self.out, model="crfgan", preset=self.preset,
                            iterations=self.iterations, batch_size=self.batch_size, device=self.device,
                            seed=self.seed, resume="auto", threads=self.threads, recipe=self.recipe,
                            demo_count=self.demo_count, split=str(Path(self.out) / SPLIT_NAME))


DEMO_ENTRIES = {"checkpoint.pt", SPLIT_NAME, "samples", "montage.png"}  # what a demo run folder holds


def check_demo_folder(options: TrainOptions) -> None:
    """Refuse, before anything is written, an --out that is not a demo run: a folder holding other files, or
    a run started with other data or settings (decide_start names the difference)."""
    folder = Path(options.out)
    if (folder / "checkpoint.pt").is_file():
        decide_start(options)
    elif folder.is_dir():
        other = sorted(p.name for p in folder.iterdir() if p.name not in DEMO_ENTRIES and not p.name.startswith("."))
        if other:
            raise FileExistsError(f"{folder} is not a demo run folder (it holds {other[0]}"
                                  f"{f' and {len(other) - 1} more' if len(other) > 1 else ''}); choose another --out")


def ensure_split(options: TrainOptions, seed: int = 0) -> None:
    """The run folder's split.json (the default 70 / 10 / 20 % one), written when missing."""
    folder = Path(options.out)
    if not (folder / SPLIT_NAME).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        write_split(make_split(options.data, seed=seed, demo_count=options.demo_count), folder)


def run_demo(options: DemoOptions | None = None, on_report: Callable[[TrainReport], None] | None = None,
             should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = lambda msg: None,
             dataset=None) -> dict:
    """Train (or continue, or reuse) the demo run, sample it and write NIfTI files and the montage."""
    options = options or DemoOptions()
    train_options = options.train_options()
    check_demo_folder(train_options)
    ensure_split(train_options)
    dataset = dataset if dataset is not None else prepare_dataset(train_options)
    result = run_training(train_options, dataset, on_report=on_report, should_stop=should_stop)
    if result.reused:
        log(f"{result.checkpoint_path} already trained for {result.iteration} iterations; sampling from it")

    sampler = Sampler(result.checkpoint_path, device=options.device)
    volumes = sampler.sample(options.num, seed=options.seed)
    sample_dir = Path(options.out) / "samples"
    paths = [v.save(sample_path(sample_dir, v.seed)) for v in volumes]  # the demo's own folder: replaced
    # beside each sample the training volume nearest to it, so a reader sees the samples are new
    train = dataset.volumes()
    fake = [v.model_units for v in volumes]
    nearest = [train[nearest_training(f, train)["index"]] for f in fake]
    png = write_png(Path(options.out) / "montage.png", montage([fake, nearest]))
    log(f"samples ({sampler.cfg.size}^3, {sampler.spacing[0]:.2f} mm voxels): {sample_dir}")
    log(f"montage (top: generated, bottom: the training volume nearest to each): {png}")
    log(f"checkpoint: {result.checkpoint_path}")
    log(f"score it on the held-out test volumes: crfgan eval --fake {options.out}")
    return {"checkpoint": result.checkpoint_path, "samples": paths, "montage": png, "run": result}

