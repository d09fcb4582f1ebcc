"""What a training run is asked to do (TrainOptions) and what it reports (TrainReport).

TrainOptions is the one source of the training flags: `crfgan train` builds its
argparse flags from these fields (type, default, help, choices from each field's
metadata), and the Train widget its defaults. A field's help is its CLI help text.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import DEMO_DATASETS, DEMO_MASKS, MASK_DEMOS
from ..model import PRESETS, SYSTEMS, get_config, uses_masks
from ..model.registry import system_fields
from ..model.presets import AUGMENTATIONS, HEAD_NORMS, LOSSES, STEPS, TRUNKS, UPSAMPLING
from ..model.recipes import RECIPES, recipe
from ..runtime import CHECKPOINT_NAME

PRECISIONS = ("fp32", "bf16", "fp16")
#: no: refuse an existing checkpoint; yes: continue it (it must exist); auto: continue one if
#: there is one (a finished run is reused as it is), start a new run otherwise
RESUME_MODES = ("no", "yes", "auto")
SEED_LIMIT = 2**63  # seeds are 64-bit signed integers in numpy and torch
#: TrainOptions fields that set a recipe field of the model config (None: the named recipe's value)
RECIPE_OPTIONS = ("loss", "augment", "ada_target", "r1_gamma", "ema_decay", "label_smoothing", "feature_matching",
                  "minibatch_std", "d_spectral_norm", "upsample", "trunk", "head_norm")


def option(default, help: str, choices=None, **kw):
    """A dataclass field with its CLI help and choices (a tuple, or a callable giving one)."""
    return field(default=default, metadata={"help": help, "choices": choices, **kw})


@dataclass
class TrainOptions:
    data: str = option("", "dataset folder (.nii, .nii.gz, .npy) or demo-brain|demo-chest", required=True)
    masks: str = option("", "folder of label masks, one per volume of --data under its name (the mask-to-volume "
                            "models pix2pix and spade); --masks alone with --data demo-chest: its own masks",
                        const=DEMO_MASKS)
    l1_weight: float | None = option(None, "mask models: weight of L1(G(mask), image) against the adversarial loss "
                                           "(default 100, pix2pix's)")
    mask_noise: bool | None = option(None, "mask models: a noise input channel, so one mask gives diverse volumes "
                                           "(default off: deterministic, as the seed paper)")
    out: str | Path = option("runs/crfgan", "run folder (its checkpoint.pt is written there)")
    model: str = option("crfgan", "GAN system", choices=lambda: tuple(SYSTEMS))
    preset: str = option("small-64", "model configuration", choices=lambda: tuple(PRESETS))
    iterations: int = option(2000, "train until this iteration")
    batch_size: int = option(4, "volumes per iteration (under torchrun: the global batch, split over the processes)")
    resume: str = option("no", "continue the checkpoint in --out (--resume alone: yes; auto: continue one "
                               "if there is one, reuse a finished run)", choices=RESUME_MODES, const="yes")
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    seed: int = option(0, "seed of the initial weights and of every random draw")
    checkpoint_every: int = option(250, "write the checkpoint every K iterations (and on stop and at the end)")
    modality: str | None = option(None, "preprocessing (default: detect)", choices=("ct", "mri"))
    conditional: bool = option(False, "class-conditional on the folder's labels.csv")
    precision: str = option("fp32", "fp32, or autocast: bf16 (CPU and CUDA) or fp16 (CUDA, with gradient scaling)",
                            choices=PRECISIONS)
    checkpoint_activations: bool = option(False, "recompute the trunk's and the discriminators' activations in "
                                                 "backward instead of keeping them: less memory, more time")
    step: str | None = option(None, "training step: reference (as the reference code; the presets' default) or "
                                    "fast (cheaper, not the paper's: the G and CRF steps reuse the D step's fake)",
                              choices=STEPS)
    lr_g: float | None = option(None, "generator learning rate (default: the preset's)")
    lr_d: float | None = option(None, "discriminator learning rate (default: the preset's)")
    lr_e: float | None = option(None, "encoder learning rate (default: the preset's)")
    # the training recipe: a named set (model/recipes.py), then any field given here on top of it
    recipe: str = option("paper", "named training recipe (paper: the papers' own; the others are what crfgan sweep "
                                  "compares, see docs/recipes.md)", choices=lambda: tuple(RECIPES))
    loss: str | None = option(None, "adversarial loss (default: the recipe's)", choices=LOSSES)
    augment: str | None = option(None, "DiffAugment operations for D's inputs, real and fake alike, comma-"
                                       f"separated from {', '.join(AUGMENTATIONS)} ('' : none)")
    ada_target: float | None = option(None, "adapt the augmentation probability so E[sign D(real)] stays near "
                                            "this (StyleGAN2-ADA; 0: fixed probability)")
    r1_gamma: float | None = option(None, "R1 penalty gamma on D's gradient at real volumes (lazy; 0: off)")
    ema_decay: float | None = option(None, "keep a moving average of the generator with this decay and sample "
                                           "from it (0: off)")
    label_smoothing: float | None = option(None, "one-sided label smoothing: D's real target 1 - this")
    feature_matching: float | None = option(None, "weight of D^H feature matching in the G loss (0: off)")
    minibatch_std: bool | None = option(None, "a minibatch standard-deviation channel in the discriminators")
    d_spectral_norm: bool | None = option(None, "spectral norm on the discriminators (the papers': on)")
    upsample: str | None = option(None, "generator upsampling (nearest: the papers', leaves a voxel grid)",
                                  choices=UPSAMPLING)
    trunk: str | None = option(None, "G^A: plain (the papers') or style (mapping network, modulated convs, "
                                     "noise)", choices=TRUNKS)
    head_norm: str | None = option(None, "G^H normalisation: group (the papers'; slab statistics in training, "
                                         "whole-volume ones when sampling) or pixel (voxel-wise, the same in both)",
                                   choices=HEAD_NORMS)
    preview_every: int = option(0, "a preview volume in the report every K iterations (0: never)", cli=False)
    demo_count: int | None = option(None, "number of demo volumes to generate (default: the demo's)")
    split: str = option("auto", "train on the train list of a split (crfgan split): auto: <out>/split.json when "
                                "it exists; none: every volume; or the path of a split.json")
    processes: int = option(1, "training processes on this machine, one per GPU, launched with torchrun (the Train "
                               "widget's 'all GPUs'; on the command line run torchrun yourself)", cli=False)
    threads: int | None = option(None, "torch CPU threads (default: torch's; 1 is much faster when other jobs "
                                       "share the cores)")
    fine_tune: bool = option(False, "resume a run with other data, seed or batch size on purpose (a fine-tune; "
                                    "the earlier ones are kept in the checkpoint)")

    def __post_init__(self) -> None:
        if isinstance(self.resume, bool):  # True / False read as yes / no
            self.resume = "yes" if self.resume else "no"

    @property
    def checkpoint_path(self) -> Path:
        """Where this run's checkpoint lives."""
        return Path(self.out) / CHECKPOINT_NAME

    def validate(self) -> None:
        """Every value in range, or a ValueError naming its flag (--lr-g, not lr_g)."""
        try:
            self._validate()
        except ValueError as e:
            names = "|".join(f.name for f in dataclasses.fields(self))
            raise ValueError(re.sub(rf"\b({names})(?= must)", lambda m: _flag(m.group(1)), str(e))) from None

    def _validate(self) -> None:
        if not self.data:
            raise ValueError("choose a data folder or a demo set (data)")
        if self.model not in SYSTEMS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(SYSTEMS)}")
        self._validate_masks()
        for name in ("iterations", "batch_size", "checkpoint_every", "demo_count", "threads", "processes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"seed must be in 0 .. 2^63 - 1, got {self.seed}")
        for name in ("lr_g", "lr_d", "lr_e"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if self.batch_size % self.processes:
            raise ValueError(f"batch_size {self.batch_size} is the global batch, split over {self.processes} "
                             f"processes: it must be a multiple of {self.processes}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be fp32, bf16 or fp16, not {self.precision!r}")
        if self.resume not in RESUME_MODES:
            raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}, not {self.resume!r}")
        get_config(self.preset, step=self.step, **self.config_fields())

    def _validate_masks(self) -> None:
        """A mask model needs masks, and only a mask model takes them (one sentence each, before any work)."""
        if uses_masks(self.model) and not self.masks:
            raise ValueError(f"--model {self.model} synthesizes volumes from label masks: give --masks DIR (a mask "
                             "per volume of --data, same name), or --masks alone with --data demo-chest")
        if self.masks and not uses_masks(self.model):
            raise ValueError(f"--masks is for the mask-to-volume models (pix2pix, spade); {self.model} generates "
                             "from a latent code and does not use masks")
        if self.masks == DEMO_MASKS and self.data not in MASK_DEMOS:
            raise ValueError(f"--masks without a folder means the demo set's own masks, and {self.data} has none "
                             f"({', '.join(MASK_DEMOS)} has); give the folder of its masks")
        if self.masks and self.conditional:
            raise ValueError(f"--conditional (classes from labels.csv) is for the latent models; {self.model} is "
                             "conditioned on its masks")
        if not uses_masks(self.model) and (self.l1_weight is not None or self.mask_noise is not None):
            raise ValueError(f"--l1-weight and --mask-noise are for the mask-to-volume models; {self.model} has "
                             "neither")
        if self.l1_weight is not None and not (math.isfinite(self.l1_weight) and self.l1_weight >= 0):
            raise ValueError(f"l1_weight must be >= 0, got {self.l1_weight}")
        if self.masks and self.checkpoint_activations:
            raise ValueError(f"--checkpoint-activations is for the latent models: recomputing {self.model}'s "
                             "BatchNorm layers would count every batch in their statistics twice")

    def recipe_fields(self) -> dict:
        """The config fields of the recipe: the named recipe's, then the fields set here."""
        return {**recipe(self.recipe), **{k: getattr(self, k) for k in RECIPE_OPTIONS if getattr(self, k) is not None}}

    def config_fields(self) -> dict:
        """The config fields these options set: the system's own (model.registry.system_fields), the recipe's,
        then the learning rates and mask-model fields given here on top."""
        given = {k: getattr(self, k) for k in ("lr_g", "lr_d", "lr_e", "l1_weight", "mask_noise")
                 if getattr(self, k) is not None}
        return {**system_fields(self.model, self.preset), **self.recipe_fields(), **given}

    def record(self) -> dict:
        """The options as plain JSON values (stored in the checkpoint), with the run's identity."""
        values = {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(self).items()}
        return {**values, "identity": run_identity(self)}


IDENTITY_FIELDS = ("data", "demo_count", "seed", "batch_size", "conditional", "masks")


def source_id(data: str) -> str:
    """A data source as a stable name: a demo set's name, or the folder's absolute path."""
    return data if data in DEMO_DATASETS else str(Path(data).expanduser().resolve())


def run_identity(options: TrainOptions) -> dict:
    """What a run folder is started with and must be resumed with (see training/identity.py)."""
    values = {name: getattr(options, name) for name in IDENTITY_FIELDS}
    values["data"] = source_id(options.data)
    values["masks"] = options.masks if options.masks in ("", DEMO_MASKS) else source_id(options.masks)
    if options.data not in DEMO_DATASETS:
        values["demo_count"] = None  # only means something for demo sets
    return values


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class TrainReport:
    iteration: int  # iterations finished
    iterations: int  # the run's target
    losses: dict[str, float]
    iters_per_s: float
    peak_memory_mb: float
    eta_s: float
    device: str
    checkpoint_path: str  # the run's checkpoint
    saved: bool = False  # the checkpoint was written after this step
    preview: np.ndarray | None = field(default=None, repr=False)  # [S, S, S] in modality units
