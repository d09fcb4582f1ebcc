"""Model configuration: one frozen dataclass, and the named presets.

Every size in the networks derives from a `ModelConfig`; a preset is just a named
instance. The config is stored inside every checkpoint, so a checkpoint fully
describes the networks it holds.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


TRUNK_UPSAMPLING = ("early", "late")
STEPS = ("reference", "fast")
#: adversarial losses (model/losses.py): non-saturating BCE (the papers'), least squares,
#: Wasserstein with gradient penalty, hinge
LOSSES = ("bce", "lsgan", "wgan-gp", "hinge")
#: how the generators upsample x2: nearest (the papers'; it leaves a grid of 2- and 4-voxel
#: blocks), trilinear, or nearest followed by a fixed [1, 2, 1] blur
UPSAMPLING = ("nearest", "trilinear", "blur")
HEAD_NORMS = ("group", "pixel")
TRUNKS = ("plain", "style")  # G^A: the papers' conv trunk, or a style-based one (model/style.py)
AUGMENTATIONS = ("translation", "cutout", "intensity")  # DiffAugment operations (model/augment.py)
#: what a stored config without these fields was trained with (napari-crfgan 0.1)
LEGACY = {"trunk_upsampling": "late", "step": "fast", "crf_damping": 0.0}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimisation settings shared by CRF-GAN and HA-GAN.

    Volumes are cubes of side `size`; the embedding made by the trunk G^A is a cube
    of side `size // 4` with `trunk_channels[-1]` channels; training slabs are
    `size // 8` slices thick along D.
    """

    size: int = 256
    latent_dim: int = 1024
    # G^A: a Linear to trunk_channels[0] x 4^3, then one conv per entry; log2(size / 16)
    # of them are preceded by a nearest x2 upsampling: "early" (the reference code: the
    # convs right after the first, so later convs run at the embedding size) or "late"
    # (the last convs: about 4x less compute at 128^3, the layout of napari-crfgan 0.1).
    trunk_channels: tuple[int, ...] = (512, 512, 256, 128, 64)
    trunk_upsampling: str = "early"
    # G^H: embedding channels -> head_channel (after x2 up) -> 1 (after x2 up).
    head_channel: int = 32
    # G^L (HA-GAN low-res head): embedding channels -> ... -> 1 at the embedding size.
    low_head_channels: tuple[int, ...] = (32, 16)
    groups: int = 8  # GroupNorm groups in generator and encoders
    # D^H: widest conv of the sub-volume discriminator; earlier convs halve it.
    d_high_width: int = 512
    d_high_feature: int = 128  # channels of the last conv, before the crop position
    d_high_hidden: int = 64  # hidden units of the SNLinear tail
    # D^L and E^G: widest conv; earlier convs halve it.
    d_low_width: int = 256
    e_global_width: int = 256
    # CRF over the embedding: patch grid (nodes along D, H, W); N = product.
    crf_grid: tuple[int, int, int] = (4, 4, 4)
    crf_iterations: int = 10
    crf_decay_iterations: int = 60000  # CRF weight w = max(0.5 - 0.5 * it / this, 0)
    # mean-field damping a: logits <- (1 - a) * update + a * logits. 0 is the reference's
    # plain synchronous update, which oscillates with period 2 once |W| is large.
    crf_damping: float = 0.0
    # training step: "reference" (as both reference train.py files: fresh latents for the
    # G and CRF steps, the CRF step after the D update, E^G on slab-wise E^H features) or
    # "fast" (napari-crfgan 0.1: the G and CRF steps reuse the D step's fake and graph)
    step: str = "reference"
    num_classes: int = 0  # > 0: class-conditional (AC-GAN) variant
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    lr_e: float = 1e-4
    lr_crf: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.999)
    class_loss_weight: float = 0.1  # weight of the fake-class CE in the G loss
    # ---- the training recipe (defaults: the papers'; see model/recipes.py for named sets) ----
    loss: str = "bce"
    gp_weight: float = 10.0  # WGAN-GP gradient penalty weight (loss "wgan-gp" only)
    r1_gamma: float = 0.0  # R1 penalty gamma / 2 * |grad D(real)|^2 (0: off), applied lazily:
    r1_every: int = 16  # every this many iterations, scaled by it
    augment: str = ""  # DiffAugment: comma-separated AUGMENTATIONS applied to every D input, real and fake
    augment_p: float = 1.0  # probability per volume and operation (the start value when adaptive)
    ada_target: float = 0.0  # > 0: adapt augment_p so that E[sign D(real)] stays near this (StyleGAN2-ADA)
    ada_images: int = 2000  # images over which the adaptive probability can move by 1
    d_spectral_norm: bool = True  # spectral norm on every discriminator layer (the papers')
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of G^A + G^H; sampling uses it
    label_smoothing: float = 0.0  # one-sided: real target 1 - this (losses bce and lsgan)
    feature_matching: float = 0.0  # weight of |mean D^H features(real) - (fake)|^2 in the G loss
    minibatch_std: bool = False  # a minibatch standard-deviation channel before D's last convs
    upsample: str = "nearest"  # UPSAMPLING
    # G^H's normalisation: "group" (the papers' GroupNorm: in training its statistics are the slab's, at
    # inference the whole volume's, so the decoded volume is not what D^H saw) or "pixel" (each voxel's
    # channel vector scaled to unit RMS, then a per-channel affine: the same in training and inference)
    head_norm: str = "group"
    trunk: str = "plain"  # TRUNKS
    style_mapping_layers: int = 4  # style trunk: MLP layers from z (+ class) to the style vector w
    # ---- mask-to-volume systems (pix2pix, spade: model/maskgan.py); the latent systems ignore these ----
    mask_classes: int = 2  # label values 0 .. mask_classes - 1, one-hot encoded (set from the training masks)
    mask_noise: bool = False  # one N(0, 1) input channel more, for diverse volumes (the seed paper has none)
    l1_weight: float = 100.0  # weight of L1(G(mask), image) against the adversarial loss (pix2pix's lambda)
    # stride-2 levels of both mask generators: the seed paper's 7 conv / deconv layers, capped at
    # log2(size) so that the innermost level keeps at least one voxel (mask_levels)
    mask_depth: int = 7
    mask_g_width: int = 64  # generator channels at the first level, doubled per level up to 8x
    mask_d_width: int = 64  # PatchGAN channels of the first conv, doubled per conv up to 8x
    spade_hidden: int = 128  # channels of the small conv net that makes each SPADE's scale and shift

    def __post_init__(self) -> None:
        for name, allowed in (("trunk_upsampling", TRUNK_UPSAMPLING), ("step", STEPS), ("loss", LOSSES),
                              ("upsample", UPSAMPLING), ("trunk", TRUNKS),
                              ("head_norm", HEAD_NORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        unknown = [a for a in self.augmentations if a not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"augment: unknown operation(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(AUGMENTATIONS)}")
        for name, lo, hi in (("augment_p", 0.0, 1.0), ("ada_target", 0.0, 1.0), ("ema_decay", 0.0, 1.0),
                             ("label_smoothing", 0.0, 0.5)):
            if not lo <= getattr(self, name) <= hi or (name == "ema_decay" and self.ema_decay == 1.0):
                raise ValueError(f"{name} must be in [{lo}, {hi}{')' if name == 'ema_decay' else ']'}, "
                                 f"got {getattr(self, name)}")
        for name in ("lr_g", "lr_d", "lr_e", "lr_crf"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)}")
        for name in ("gp_weight", "r1_gamma", "feature_matching"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.r1_every < 1 or self.ada_images < 1 or self.style_mapping_layers < 1:
            raise ValueError("r1_every, ada_images and style_mapping_layers must be at least 1")
        for name in ("mask_depth", "mask_g_width", "mask_d_width", "spade_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.mask_classes < 2:
            raise ValueError(f"mask_classes must be at least 2 (background and one structure), got {self.mask_classes}")
        if not (math.isfinite(self.l1_weight) and self.l1_weight >= 0):
            raise ValueError(f"l1_weight must be >= 0, got {self.l1_weight}")
        if self.label_smoothing and self.loss not in ("bce", "lsgan"):
            raise ValueError(f"label smoothing needs a loss with a real target (bce or lsgan), not {self.loss}")
        if self.ada_target and not self.augmentations:
            raise ValueError("adaptive augmentation (ada_target) needs augment operations to adapt")
        if not 0.0 <= self.crf_damping < 1.0:
            raise ValueError(f"crf_damping must be in [0, 1), got {self.crf_damping}")
        if self.size < 32 or self.size > 1024 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two from 32 to 1024, got {self.size}")
        needed = self.trunk_upsamplings + (self.trunk_upsampling == "early")  # early: none before conv 1
        if needed > len(self.trunk_channels):
            raise ValueError(f"size {self.size} needs at least {needed} trunk convs")
        for name, c in [("trunk", self.trunk_channels), ("head", (self.head_channel,))]:
            if any(ch % self.groups for ch in c):
                raise ValueError(f"{name} channels {c} must be multiples of groups={self.groups}")
        e = self.embedding_size
        if any(e % g for g in self.crf_grid):
            raise ValueError(f"crf_grid {self.crf_grid} must divide the embedding side {e}")

    @property
    def augmentations(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.augment.split(",") if a.strip())

    @property
    def embedding_size(self) -> int:
        return self.size // 4

    @property
    def embedding_channels(self) -> int:
        return self.trunk_channels[-1]

    @property
    def trunk_upsamplings(self) -> int:
        return int(math.log2(self.embedding_size // 4))

    @property
    def slab(self) -> int:
        """Thickness (slices along D) of a training sub-volume."""
        return self.size // 8

    @property
    def max_crop(self) -> int:
        """Largest slab start; also the crop-position normaliser fed to D^H."""
        return self.size - self.slab

    @property
    def mask_levels(self) -> int:
        """Stride-2 levels of the mask generators: mask_depth, at most log2(size)."""
        return min(self.mask_depth, int(math.log2(self.size)))

    @property
    def crf_nodes(self) -> int:
        return math.prod(self.crf_grid)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        kw.update({k: v for k, v in LEGACY.items() if k not in kw})
        defaults = cls()
        for name, value in kw.items():  # a file's values: the type of each default, or a clear error
            expected = getattr(defaults, name)
            if not _same_kind(value, expected):
                raise ValueError(f"config field {name} must be {_kind_name(expected)}, not {value!r}")
        return cls(**kw)


def _same_kind(value, expected) -> bool:
    """`value` has the type of the default `expected` (an int where a float is expected is fine)."""
    if isinstance(expected, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(expected, bool)
    if isinstance(expected, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(expected, tuple):
        return (isinstance(value, tuple) and len(value) > 0
                and all(_same_kind(v, expected[0]) for v in value) if expected else isinstance(value, tuple))
    return isinstance(value, type(expected))


def _kind_name(expected) -> str:
    if isinstance(expected, tuple):
        return "a list of " + {int: "integers", float: "numbers", str: "strings"}[type(expected[0])] if expected \
            else "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(expected)]


def _paper(size: int, grid: tuple[int, int, int], **kw) -> ModelConfig:
    return ModelConfig(size=size, crf_grid=grid, **kw)


PRESETS: dict[str, ModelConfig] = {
    # The papers' widths. CRF patch grids: 4x4x4 patches of 16^3 at 256 (N = 64),
    # 2x4x4 of 16x8x8 at 128 (N = 32), 1x4x4 of 16x4x4 at 64 (N = 16): the node
    # counts of the reference code, with nodes as spatial patches.
    "paper-256": _paper(256, (4, 4, 4)),
    "paper-128": _paper(128, (2, 4, 4)),
    "paper-64": _paper(64, (1, 4, 4)),
    # Beyond the papers, for sampling (and training on a large GPU). The grid continues the
    # scheme: 4x4 in-plane, patches 16 embedding slices deep, so 8x4x4 patches of 16x32x32
    # (N = 128, doubling with the size as below). The reference trunk layout has only four
    # upsampling convs (the first runs at 4^3), one short of 512; "late" upsamples before all
    # five, so the trunk keeps the papers' widths and parameters, its last conv at 128^3.
    "paper-512": _paper(512, (8, 4, 4), trunk_upsampling="late"),
    # Narrow CPU presets: a few iterations per second on 2 cores. Their trunks upsample
    # late (5.0 instead of 30.8 GMAC per small-64 iteration at batch 4); the paper
    # presets keep the reference layout.
    "small-64": ModelConfig(
        size=64,
        trunk_upsampling="late",
        latent_dim=128,
        trunk_channels=(128, 128, 64, 32, 16),
        head_channel=8,
        low_head_channels=(8, 8),
        d_high_width=128,
        d_high_feature=64,
        d_high_hidden=32,
        d_low_width=64,
        e_global_width=64,
        crf_grid=(2, 2, 2),
        crf_decay_iterations=20000,
    ),
    # For tests: the smallest volume the layout allows.
    "tiny-32": ModelConfig(
        size=32,
        trunk_upsampling="late",
        latent_dim=32,
        trunk_channels=(32, 16, 16, 8, 8),
        head_channel=8,
        low_head_channels=(8, 8),
        d_high_width=32,
        d_high_feature=16,
        d_high_hidden=16,
        d_low_width=16,
        e_global_width=16,
        crf_grid=(2, 2, 2),
        crf_decay_iterations=1000,
    ),
}


#: the mask systems' network sizes at the CPU presets (the paper presets keep ModelConfig's, the seed's).
#: Not in the presets themselves: a latent system's config, and so every checkpoint's, stays as it was.
MASK_PRESET_FIELDS: dict[str, dict] = {
    "small-64": {"mask_depth": 4, "mask_g_width": 16, "mask_d_width": 16, "spade_hidden": 16},
    "tiny-32": {"mask_depth": 3, "mask_g_width": 8, "mask_d_width": 8, "spade_hidden": 8},
}


def get_config(preset: str, **overrides) -> ModelConfig:
    """The named preset, with optional field overrides (e.g. num_classes=2); an override of None
    means "the preset's value" (no config field is optional), so flags left unset pass straight in."""
    try:
        cfg = PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
