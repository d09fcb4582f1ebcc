"""Training recipes: named sets of the loss, tricks and generator options of `ModelConfig`.

A recipe is applied on top of a preset (`get_config(preset, **RECIPES[name])`); every
field it sets is stored in the checkpoint's config like any other, so a checkpoint
says how it was trained. "paper" is the papers' own recipe (the ModelConfig
defaults), the default of every preset and of paper-tables. The others are the
recipes `crfgan sweep` compares (docs/recipes.md ranks them on held-out data).
"""
from __future__ import annotations

from .presets import ModelConfig

#: the ModelConfig fields a recipe may set (everything else is architecture size or optimisation)
RECIPE_FIELDS = ("loss", "gp_weight", "r1_gamma", "r1_every", "augment", "augment_p", "ada_target", "ada_images",
                 "d_spectral_norm", "ema_decay", "label_smoothing", "feature_matching", "minibatch_std",
                 "upsample", "trunk", "style_mapping_layers", "head_norm",
                 "lr_d")  # D's rate: the papers' two time-scale 4x G's, or G's own (a D that does not outrun G)

DIFFAUGMENT = "translation,cutout,intensity"

RECIPES: dict[str, dict] = {
    "paper": {},  # BCE, spectral norm in D, nearest upsampling, no augmentation, no EMA
    "lsgan": {"loss": "lsgan"},
    "wgan-gp": {"loss": "wgan-gp", "d_spectral_norm": False},  # the critic's constraint is the penalty
    "hinge": {"loss": "hinge"},
    "label-smoothing": {"label_smoothing": 0.1},
    "feature-matching": {"feature_matching": 1.0},
    "minibatch-std": {"minibatch_std": True},
    "r1": {"r1_gamma": 1.0},
    "ema": {"ema_decay": 0.99},
    "diffaugment": {"augment": DIFFAUGMENT},
    "ada": {"augment": DIFFAUGMENT, "ada_target": 0.6},
    "trilinear": {"upsample": "trilinear"},
    "blur": {"upsample": "blur"},
    "style": {"trunk": "style"},
    # combinations: the tricks that compose in the literature
    "blur-ema": {"upsample": "blur", "ema_decay": 0.999},
    "pixelnorm": {"head_norm": "pixel"},
    "pixelnorm-blur-ema": {"head_norm": "pixel", "upsample": "blur", "ema_decay": 0.999},
    # the same with D learning at G's rate (1e-4) instead of the papers' 4e-4
    "pixelnorm-blur-ema-slow-d": {"head_norm": "pixel", "upsample": "blur", "ema_decay": 0.999, "lr_d": 1e-4},
    "hinge-diffaugment-ema": {"loss": "hinge", "augment": DIFFAUGMENT, "ema_decay": 0.99, "upsample": "blur"},
    "style-r1-ada-ema": {"trunk": "style", "r1_gamma": 1.0, "augment": DIFFAUGMENT, "ada_target": 0.6,
                         "ema_decay": 0.99, "minibatch_std": True, "upsample": "blur"},
}


#: the recipe of `crfgan demo`, `crfgan pretrain` and the Train widget's "recommended" choice
RECOMMENDED = "pixelnorm-blur-ema-slow-d"


def recipe(name: str) -> dict:
    """The fields of the named recipe; ValueError naming the choices for an unknown one."""
    try:
        return dict(RECIPES[name])
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


def recipe_of(cfg: ModelConfig) -> dict:
    """The recipe fields of `cfg` that differ from the papers' (what `crfgan sweep` and reports show)."""
    paper = ModelConfig()
    return {f: getattr(cfg, f) for f in RECIPE_FIELDS if getattr(cfg, f) != getattr(paper, f)}

