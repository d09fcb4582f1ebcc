"""Checkpoints: one file holding config, weights, optimiser states, iteration, RNG.

Written atomically (temp file, fsync, rename: `files.atomic_path`), so a killed run never leaves a
truncated checkpoint behind. Loaded with `torch.load(weights_only=True)`: plain
tensors and containers only, no code from the file is executed. Anything that is
not plain data (config, training options, dataset summary) is stored as JSON text.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import atomic_path
from ..messages import load_error_reason, one_line
from ..model import SYSTEMS, GANSystem, ModelConfig, build_system
from .pretrained import is_pretrained, pretrained_path

FORMAT = "napari-crfgan-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
GENERATOR_ONLY = "generator"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line saying why."""


def check_weights(own: dict, state: dict, describe: str, needed: set[str] | None = None) -> None:
    """Refuse (CheckpointError naming the first key) weights that do not fit a model's state dict `own`:
    a missing key (of `needed`, default all), an unexpected one, a non-tensor or a wrong shape.
    `own` may come from a model on the meta device, so nothing is allocated before the check."""
    needed = set(own) if needed is None else needed
    for key, value in state.items():
        if key not in own:
            raise CheckpointError(f"weights do not fit a {describe} model (unexpected key {key})")
        if not torch.is_tensor(value):
            raise CheckpointError(f"weights do not fit a {describe} model ({key} is not a tensor)")
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"weights do not fit a {describe} model ({key} has shape "
                                  f"{tuple(value.shape)}, the model {tuple(own[key].shape)})")
    lacking = sorted(needed - set(state))
    if lacking:
        raise CheckpointError(f"weights do not fit a {describe} model (missing key {lacking[0]})")


def load_optimizers(optimizers: dict, states: dict, path) -> None:
    """Optimiser states of a resumed run, or one line naming the optimiser that does not fit."""
    for name, opt in optimizers.items():
        if name not in states:
            raise CheckpointError(f"{path} has no optimiser state for {name}")
        try:
            opt.load_state_dict(states[name])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the optimiser state of {name} does not fit ({one_line(e)})") from None


def sampling_keys(system: GANSystem) -> set[str]:
    """State-dict keys of the networks `system.generate` runs (G^A + G^H, or their moving average)."""
    names = {id(m): n for n, m in system.named_modules()}
    prefixes = [names[id(m)] + "." for m in system.sampling_networks()]
    return {k for k in system.state_dict() if k.startswith(tuple(prefixes))}


@dataclass
class Checkpoint:
    model: str
    preset: str
    config: ModelConfig
    iteration: int
    state: dict
    optimizers: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # training options (seed, batch size, ...)
    data: dict = field(default_factory=dict)  # dataset summary: source, modality, spacing, classes
    metrics: dict = field(default_factory=dict)  # iters_per_s, peak_memory_mb of the run
    # "full": every network, optimiser and RNG state (a training run); "generator": only the weights
    # that sampling uses (G^A + G^H, their moving average when there is one): a shipped, sample-only model
    contents: str = "full"

    @property
    def generator_only(self) -> bool:
        return self.contents == GENERATOR_ONLY

    def build(self, device: torch.device | str = "cpu") -> GANSystem:
        """The system with these weights, on `device`, in eval mode (a generator-only checkpoint fills
        the networks sampling uses; the others keep their initial weights and are never used).

        Keys and shapes are checked on a model built on the meta device first: a file whose config
        asks for huge networks is refused before anything is allocated."""
        with torch.device("meta"):
            probe = build_system(self.model, self.config)
        needed = sampling_keys(probe) if self.generator_only else None
        check_weights(probe.state_dict(), self.state, f"{self.model} {self.preset}", needed)
        system = build_system(self.model, self.config)
        system.load_state_dict(self.state, strict=not self.generator_only)
        return system.to(device).eval()

    def sampling_only(self) -> "Checkpoint":
        """This checkpoint with only the generator weights sampling uses: no discriminators, encoder, CRF,
        optimiser or RNG state (what a shipped pretrained model holds)."""
        system = build_system(self.model, self.config)
        keep = sampling_keys(system)
        return Checkpoint(model=self.model, preset=self.preset, config=self.config, iteration=self.iteration,
                          state={k: v for k, v in self.state.items() if k in keep}, options=self.options,
                          data=self.data, metrics=self.metrics, contents=GENERATOR_ONLY)

    def describe(self) -> str:
        return f"{self.model} {self.preset} at iteration {self.iteration}"


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": ckpt.model,
        "preset": ckpt.preset,
        "config": json.dumps(ckpt.config.to_dict()),
        "iteration": int(ckpt.iteration),
        "state": ckpt.state,
        "optimizers": ckpt.optimizers,
        "rng": ckpt.rng,
        "options": json.dumps(ckpt.options),
        "data": json.dumps(ckpt.data),
        "metrics": json.dumps(ckpt.metrics),
        "contents": ckpt.contents,
    }
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)
    return path


def load_checkpoint(path: str | Path, model: str | None = None, preset: str | None = None,
                    config: ModelConfig | None = None) -> Checkpoint:
    """Read a checkpoint, refusing (CheckpointError) one of another model, preset or config."""
    if is_pretrained(path):
        try:
            path = pretrained_path(path)
        except (ValueError, FileNotFoundError) as e:
            raise CheckpointError(str(e)) from None
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, foreign pickle: all unusable the same way
        raise CheckpointError(f"{path} is not a readable napari-crfgan checkpoint ({load_error_reason(e)})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-crfgan checkpoint")
    if raw.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {raw.get('version')}, this napari-crfgan reads {VERSION}")
    ckpt = _parse(raw, path)
    if model is not None and ckpt.model != model:
        raise CheckpointError(f"{path} holds a {ckpt.model} model, not {model}")
    if preset is not None and ckpt.preset != preset:
        raise CheckpointError(f"{path} holds preset {ckpt.preset}, not {preset}")
    if config is not None and ckpt.config != config:
        diff = [k for k, v in config.to_dict().items() if ckpt.config.to_dict().get(k) != v]
        raise CheckpointError(f"{path} was trained with different settings ({', '.join(diff)})")
    return ckpt


def _parse(raw: dict, path: Path) -> Checkpoint:
    """A Checkpoint from the file's payload, every key and value checked: one line naming the first bad one."""
    def get(key: str, kind: type):
        if key not in raw:
            raise CheckpointError(f"{path} lacks the key {key!r}: not a complete napari-crfgan checkpoint")
        value = raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{path}: {key!r} must be {kind.__name__}, not {type(value).__name__}")
        return value

    def mapping(key: str) -> dict:
        text = get(key, str)
        try:
            value = json.loads(text)
        except ValueError:
            raise CheckpointError(f"{path}: {key!r} is not valid JSON") from None
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: {key!r} must be a mapping, not {type(value).__name__}")
        return value

    model = get("model", str)
    if model not in SYSTEMS:
        raise CheckpointError(f"{path} holds an unknown model {model!r} (this napari-crfgan has "
                              f"{', '.join(SYSTEMS)})")
    config = mapping("config")
    try:
        config = ModelConfig.from_dict(config)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: {one_line(e)}") from None
    iteration = get("iteration", int)
    if iteration < 0:
        raise CheckpointError(f"{path}: iteration must be >= 0, not {iteration}")
    state = get("state", dict)
    bad = next((k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CheckpointError(f"{path} holds non-finite weights ({bad}): the run it comes from diverged; "
                              "use a checkpoint from before")
    data = mapping("data")
    _check_data(data, path)
    return Checkpoint(model=model, preset=get("preset", str), config=config, iteration=iteration, state=state,
                      optimizers=get("optimizers", dict), rng=get("rng", dict), options=mapping("options"),
                      data=data, metrics=mapping("metrics"), contents=raw.get("contents", "full"))


def _check_data(data: dict, path: Path) -> None:
    """The dataset record a sampler relies on: spacing, modality and class names of the right kinds."""
    spacing = data.get("spacing", [1.0, 1.0, 1.0])
    if not (isinstance(spacing, list) and len(spacing) == 3 and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
            for s in spacing)):
        raise CheckpointError(f"{path}: the recorded voxel spacing {spacing!r} is not three positive numbers")
    if data.get("modality", "mri") not in ("ct", "mri"):
        raise CheckpointError(f"{path}: the recorded modality {data.get('modality')!r} is not ct or mri")
    names = data.get("class_names", [])
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: the recorded class names {names!r} are not a list of names")
