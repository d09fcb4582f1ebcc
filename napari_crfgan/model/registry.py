"""The system registry: one entry per GAN system, read by everything that lists systems.

An entry says what a user sees (display name, what each logged loss means) and what
the code needs (the class, which networks form the generator). The CLI's choices,
the widgets' system lists, parameter tables and paper tables all read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .crfgan import CRFGAN, NoCRFGAN
from .hagan import HAGAN
from .maskgan import SPADEGAN, Pix2Pix
from .presets import MASK_PRESET_FIELDS, ModelConfig, get_config
from .system import GANSystem

#: what a system generates from: a latent code (and a class), or a label mask
CONDITIONINGS = ("latent", "mask")
#: the mask systems' config under every recipe that does not say otherwise: the seed paper's least squares
#: with a BatchNorm PatchGAN (no spectral norm), pix2pix's Adam (2e-4, beta1 0.5)
MASK_DEFAULTS = {"loss": "lsgan", "d_spectral_norm": False, "lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999)}


@dataclass(frozen=True)
class SystemSpec:
    name: str  # the key used in checkpoints, flags and file names
    display_name: str
    cls: type[GANSystem]
    generator_parts: tuple[str, ...]  # network attributes that together make the generator
    loss_labels: dict[str, str]  # train_step's loss keys -> labels for plots and status lines
    summary: str = ""
    diagnostic_labels: dict[str, str] = field(default_factory=dict)  # other logged values worth a plot
    conditioning: str = "latent"  # CONDITIONINGS
    config_defaults: dict = field(default_factory=dict)  # config fields under the recipe's and the flags'


SYSTEMS: dict[str, SystemSpec] = {
    "crfgan": SystemSpec(
        "crfgan", "CRF-GAN", CRFGAN, ("trunk", "head"),
        {"d": "D", "g": "G", "encoder": "encoder", "crf": "CRF"},
        "trunk G^A + sub-volume head G^H, D^H, half-encoder E^H, mean-field patch CRF",
        {"crf_w_mean": "|W| mean", "crf_w_max": "|W| max", "crf_minus_d": "CRF logit - D^H logit",
         "crf_grad_share": "CRF share of G^A gradient"}),
    "hagan": SystemSpec(
        "hagan", "HA-GAN", HAGAN, ("trunk", "low_head", "head"),
        {"d": "D", "g": "G", "encoder": "encoder", "global_encoder": "global encoder"},
        "the baseline: G^A + G^L + G^H, D^H + D^L, E^H, global encoder E^G"),
    "crfgan-nocrf": SystemSpec(
        "crfgan-nocrf", "CRF-GAN without CRF", NoCRFGAN, ("trunk", "head"),
        {"d": "D", "g": "G", "encoder": "encoder"},
        "the ablation: CRF-GAN's networks and steps with the CRF left out (weight 0)"),
    "pix2pix": SystemSpec(
        "pix2pix", "pix2pix U-Net", Pix2Pix, ("generator",), {"d": "D", "g": "G"},
        "mask to volume, the seed paper's: 3D U-Net G(mask), PatchGAN D(image, mask), adversarial + L1",
        {"l1": "L1", "g_adversarial": "G adversarial"}, conditioning="mask", config_defaults=MASK_DEFAULTS),
    "spade": SystemSpec(
        "spade", "SPADE", SPADEGAN, ("generator",), {"d": "D", "g": "G"},
        "mask to volume: G with spatially-adaptive normalisation by the mask, PatchGAN D(image, mask), "
        "adversarial + L1", {"l1": "L1", "g_adversarial": "G adversarial"}, conditioning="mask",
        config_defaults=MASK_DEFAULTS),
}


def system_spec(model: str) -> SystemSpec:
    try:
        return SYSTEMS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(SYSTEMS)}") from None


def display_name(model: str) -> str:
    """'CRF-GAN' for 'crfgan'; an unknown name is shown as it is."""
    spec = SYSTEMS.get(model)
    return spec.display_name if spec else model


def uses_masks(model: str) -> bool:
    """Whether `model` generates from label masks (and trains on image / mask pairs)."""
    return system_spec(model).conditioning == "mask"


def system_fields(model: str, preset: str) -> dict:
    """Config fields `model` sets on `preset` before any recipe or flag: its defaults, and a mask system's
    network sizes at the CPU presets."""
    sizes = MASK_PRESET_FIELDS.get(preset, {}) if uses_masks(model) else {}
    return {**system_spec(model).config_defaults, **sizes}


def system_config(model: str, preset: str, **overrides) -> ModelConfig:
    """The config `model` trains with on `preset`: `system_fields`, then the overrides (None: not set)."""
    return get_config(preset, **{**system_fields(model, preset),
                                 **{k: v for k, v in overrides.items() if v is not None}})


def build_system(model: str, cfg: ModelConfig) -> GANSystem:
    """A freshly initialised system `model` for `cfg`."""
    return system_spec(model).cls(cfg)


def parameter_counts(model: str, cfg: ModelConfig | str) -> dict[str, int]:
    """Learnable parameters per network, built on the meta device (no memory, no time); a preset name means
    the system's config on it (`system_config`)."""
    cfg = system_config(model, cfg) if isinstance(cfg, str) else cfg
    with torch.device("meta"):
        return build_system(model, cfg).network_counts()


def parameter_summary(model: str, cfg: ModelConfig | str) -> dict:
    """Counts with the generator's parts summed: {"networks", "generator_parts", "total"}."""
    counts = parameter_counts(model, cfg)
    parts = system_spec(model).generator_parts
    networks = {"generator": sum(counts[k] for k in parts), **{k: v for k, v in counts.items() if k not in parts}}
    return {"networks": networks, "generator_parts": {k: counts[k] for k in parts}, "total": sum(counts.values())}
