"""Checkpoints: one file holding config, weights, optimiser states, iteration, RNG.

Written atomically (temp file, fsync, rename: `files.atomic_path`), so a killed run never leaves a
truncated checkpoint behind. Loaded with `torch.load(weights_only=True)`: plain
tensors and containers only, no code from the file is executed. Anything that is
not plain data (config, training options, dataset summary) is stored as JSON text.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import atomic_path
from ..model import GANSystem, ModelConfig, build_system
from .pretrained import is_pretrained, pretrained_path

FORMAT = "napari-crfgan-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
GENERATOR_ONLY = "generator"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message is one line saying why."""


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
        the networks sampling uses; the others keep their initial weights and are never used)."""
        system = build_system(self.model, self.config)
        try:
            missing, unexpected = system.load_state_dict(self.state, strict=not self.generator_only)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise CheckpointError(f"weights do not fit a {self.model} {self.preset} model: {first}") from None
        if self.generator_only:
            needed = sampling_keys(system)
            lacking = sorted(k for k in missing if k in needed)
            if unexpected or lacking:
                key = (list(unexpected) + lacking)[0]
                raise CheckpointError(f"generator weights do not fit a {self.model} {self.preset} model "
                                      f"({'unexpected' if unexpected else 'missing'} key {key})")
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
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path} is not a readable napari-crfgan checkpoint ({reason[:160]})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a napari-crfgan checkpoint")
    if raw.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {raw.get('version')}, this napari-crfgan reads {VERSION}")
    ckpt = Checkpoint(
        model=raw["model"],
        preset=raw["preset"],
        config=ModelConfig.from_dict(json.loads(raw["config"])),
        iteration=raw["iteration"],
        state=raw["state"],
        optimizers=raw["optimizers"],
        rng=raw["rng"],
        options=json.loads(raw["options"]),
        data=json.loads(raw["data"]),
        metrics=json.loads(raw["metrics"]),
        contents=raw.get("contents", "full"),
    )
    if model is not None and ckpt.model != model:
        raise CheckpointError(f"{path} holds a {ckpt.model} model, not {model}")
    if preset is not None and ckpt.preset != preset:
        raise CheckpointError(f"{path} holds preset {ckpt.preset}, not {preset}")
    if config is not None and ckpt.config != config:
        diff = [k for k, v in config.to_dict().items() if ckpt.config.to_dict().get(k) != v]
        raise CheckpointError(f"{path} was trained with different settings ({', '.join(diff)})")
    return ckpt
