"""State shared by the widgets of one viewer: an evented dataclass.

The Train widget writes what is chosen (model, preset, batch size, device, precision,
processes) and what
a run measured; the Model and sample widget writes the loaded sampler and the
measurements of a sampling run; the Memory and Consistency widgets subscribe and render.
Only the main thread writes it.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

from psygnal import evented

from ..training import TrainOptions


@dataclass(frozen=True)
class RunMetrics:
    """Measurements of the last training run, sampling run, or a loaded checkpoint's run."""

    kind: str  # "training", "sampling" or "checkpoint"
    device: str
    peak_memory_mb: float
    iters_per_s: float | None = None  # training iterations/s (None for sampling)
    seconds: float | None = None  # wall time of a sampling run
    detail: str = ""


@evented
@dataclass(eq=False)
class PluginState:
    model: str = TrainOptions.model
    preset: str = TrainOptions.preset
    batch_size: int = TrainOptions.batch_size
    device: str = TrainOptions.device
    precision: str = TrainOptions.precision
    processes: int = TrainOptions.processes  # > 1: the Train widget's "all GPUs (N)"
    training: bool = False
    last_run: RunMetrics | None = None
    checkpoint: str = ""  # the checkpoint the last training run wrote
    sampler_path: str = ""  # the checkpoint the sampler was loaded from (set before `sampler`)
    sampler: object = None  # the napari_crfgan.Sampler loaded in the sample or consistency widget


_STATES: dict[int, tuple[weakref.ref, PluginState]] = {}


def state_for(viewer) -> PluginState:
    """The one PluginState of `viewer` (napari hands widgets a proxy; the real viewer is the key)."""
    real = getattr(viewer, "__wrapped__", viewer)
    entry = _STATES.get(id(real))
    if entry is None or entry[0]() is not real:
        forget = lambda _, key=id(real): _STATES.pop(key, None)  # noqa: B008, E731 (the key is bound now)
        entry = (weakref.ref(real, forget), PluginState())
        _STATES[id(real)] = entry
    return entry[1]
