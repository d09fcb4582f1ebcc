"""Model and sample widget: load a checkpoint into a `Sampler`, generate volumes and latent walks.

Loading, sampling and interpolation run in workers; each `GeneratedVolume` they
yield becomes an image layer scaled by the model's spacing (mm), with its seed and
checkpoint in the layer metadata. The loaded sampler is published in the shared
state, so the consistency widget uses the same model.

"Nearest training volume" is the check before sharing synthetic data: it finds the
training volume of the loaded checkpoint nearest to a sampled volume (the space of
`evaluation.memorisation`), shows it beside the sample and says whether the sample
is closer to it than held-out scans are to the training set.

"Show in 3D" switches to 3D with an oblique camera fitted to the volumes; several
sampled volumes are laid out side by side (napari's grid mode), not stacked.
The module imports no torch: `_bind` does (see `_loading`).
"""
from __future__ import annotations

import time

import napari
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout, QWidget

from ._helpers import (WrapLabel, combo, frame_3d, grid_of, path_row, scroll_area, show_volume, spin,
                       start_worker)
from ._loading import LazyWidget, bound_getattr

#: the 3D camera of "Show in 3D" (napari's Euler angles in degrees): from above the front, turned a little
CAMERA_ANGLES = (0.0, 30.0, 60.0)

MODULES = ("torch", "napari_crfgan.sampling", "napari_crfgan.experiments.sources", "napari_crfgan.runtime.pretrained",
           "napari_crfgan.widgets._workers", "napari_crfgan.widgets._state", "scipy.ndimage")
_bound = False


def _bind() -> None:
    """Import what the widget needs (torch among it) as this module's globals, once (see `_loading`)."""
    global _bound, from_modality_units, to_modality_units, nearest_training_volume, display_name, PeakMemory
    global available_devices, PRETRAINED, SCHEME, available, Sampler, WorkerGroup, notify_error, one_sentence
    global RunMetrics, state_for
    if _bound:
        return
    import scipy.ndimage  # noqa: F401 (napari imports it for the first image layer: here, off the main thread)

    from ..data import from_modality_units, to_modality_units
    from ..experiments.sources import nearest_training_volume
    from ..model import display_name
    from ..runtime import PeakMemory, available_devices
    from ..runtime.pretrained import PRETRAINED, SCHEME, available
    from ..sampling import Sampler
    from ._state import RunMetrics, state_for
    from ._workers import WorkerGroup, notify_error, one_sentence

    _bound = True


__getattr__ = bound_getattr(_bind, MODULES, globals())


def sampling_steps(sampler: Sampler, count: int, seed: int, label, chunk: int | None):
    """Yield one GeneratedVolume per seed; return (peak memory MB, seconds) of the run."""
    memory = PeakMemory(sampler.device)
    t0 = time.perf_counter()
    for i in range(count):
        yield sampler.sample(1, seed=seed + i, label=label, chunk=chunk)[0]
    return memory.peak_mb(), time.perf_counter() - t0


def describe(sampler: Sampler) -> str:
    """A few lines about a loaded model: system, preset, iteration, training data."""
    info = sampler.info()
    data = info["data"]
    lines = [f"<b>{display_name(info['model'])}</b> {info['preset']}, "
             f"iteration {info['iteration']}, {info['size']}³ voxels",
             f"Trained on {data.get('count', '?')} {info['modality'].upper()} volumes from {data.get('source', '?')}",
             f"Spacing {' × '.join(f'{s:.3g}' for s in info['spacing'])} mm"]
    if info["num_classes"]:
        lines.append(f"Classes: {', '.join(info['class_names']) or info['num_classes']}")
    if sampler.checkpoint.generator_only:
        lines.append("Generator only (a pretrained model): no CRF map")
    else:
        lines.append("Has a CRF" if sampler.has_crf else "No CRF")
    return "<br>".join(lines)


class SampleWidget(LazyWidget):
    _bind = staticmethod(_bind)
    _modules = MODULES

    def _setup(self) -> None:
        self.sampler = None
        self._loading = ""
        self.worker = None
        self._last_sample = ""  # name of the layer of the last generated volume
        self._references: tuple | None = None  # (sampler, (train, test)) prepared for that sampler

    def _build(self) -> None:
        self.state = state_for(self.viewer)
        self.workers = WorkerGroup(self, on_close=self._idle)

        self.path = QLineEdit(self.state.checkpoint)
        self.path.setPlaceholderText("checkpoint.pt, its run folder or pretrained:<name>")
        self.path.setToolTip("the checkpoint to load: a checkpoint.pt, the run folder holding it, or "
                             "pretrained:<name> (a generator shipped with napari-crfgan)")
        # the generators shipped with the package: choosing one loads it, no training needed
        self.pretrained = combo([("choose…", None), *((f"{n}: {d}", SCHEME + n) for n, d in PRETRAINED.items()
                                                      if SCHEME + n in available())],
                                tip="a demo generator shipped with napari-crfgan (crfgan pretrain rebuilds them)")
        self.device = combo(available_devices(), "auto", "where the model runs: auto (a GPU when there is one), "
                                                         "cpu, cuda:N or mps")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("load the checkpoint in the background")
        self.info = WrapLabel("No model loaded.")
        self.seed = spin(0, 0, 2**31 - 1, "latent seed of the first volume: volume i uses seed + i")
        self.count = spin(1, 1, 256, "number of volumes to generate (one layer each)")
        self.label = combo([], tip="class of a conditional model")
        self.chunked = QCheckBox("chunked decoding (less memory)")
        self.chunked.setToolTip("decode the volume a few slices at a time: the same volume with less memory")
        self.chunk = spin(32, 4, 1024, "image slices decoded at a time")
        self.chunk.setSingleStep(4)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("generate Count volumes in the background, one image layer each")
        self.view3d_button = QPushButton("Show in 3D")
        self.view3d_button.setToolTip("3D view with an oblique camera fitted to the volumes; several sampled "
                                      "volumes side by side (napari's grid mode)")
        self.nearest_button = QPushButton("Nearest training volume")
        self.nearest_button.setToolTip("before sharing a sample: show the training volume nearest to the selected "
                                       "(or last) sample beside it, and compare the distance with held-out scans")
        self.seed_a = spin(0, 0, 2**31 - 1, "latent seed where the walk starts")
        self.seed_b = spin(1, 0, 2**31 - 1, "latent seed where the walk ends")
        self.steps = spin(8, 2, 256, "volumes along the walk, both ends included")
        self.interpolate_button = QPushButton("Interpolate")
        self.interpolate_button.setToolTip("a latent walk between the two seeds, as one 4D layer")
        self.status = WrapLabel("")

        form = QFormLayout()
        form.addRow("Checkpoint", path_row(self.path, False, "Checkpoint", "Checkpoints (*.pt);;All files (*)"))
        form.addRow("Pretrained", self.pretrained)
        form.addRow("Device", self.device)
        form.addRow("", self.load_button)
        form.addRow(self.info)
        form.addRow("Seed", self.seed)
        form.addRow("Count", self.count)
        form.addRow("Class", self.label)
        chunk_row = QHBoxLayout()
        chunk_row.addWidget(self.chunked)
        chunk_row.addWidget(self.chunk)
        form.addRow(chunk_row)
        buttons = QHBoxLayout()
        buttons.addWidget(self.generate_button)
        buttons.addWidget(self.view3d_button)
        walk = QGroupBox("Latent walk")
        walk_form = QFormLayout(walk)
        walk_form.addRow("From seed", self.seed_a)
        walk_form.addRow("To seed", self.seed_b)
        walk_form.addRow("Steps", self.steps)
        walk_form.addRow("", self.interpolate_button)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.nearest_button)
        layout.addWidget(walk)
        layout.addWidget(self.status)
        layout.addStretch()
        self.layout().addWidget(scroll_area(body))

        self.load_button.clicked.connect(self.load)
        self.pretrained.currentIndexChanged.connect(self._choose_pretrained)
        self.generate_button.clicked.connect(self.generate)
        self.interpolate_button.clicked.connect(self.interpolate)
        self.view3d_button.clicked.connect(self.show_3d)
        self.nearest_button.clicked.connect(self.nearest)
        self.state.events.checkpoint.connect(self._new_checkpoint)
        self.state.events.sampler.connect(self._show_model)
        self._show_model(self.state.sampler)

    # ---- model -----------------------------------------------------------------------
    def _new_checkpoint(self, path: str) -> None:
        self.path.setText(path)

    def _choose_pretrained(self) -> None:
        spec = self.pretrained.currentData()
        if spec:
            self.path.setText(spec)
            self.load()

    def load(self) -> None:
        path = self.path.text().strip()
        if not path:
            self.status.setText("Choose a checkpoint first.")
            return
        self._loading = path
        self._busy(f"Loading {path}…")
        self._run(Sampler, path, self.device.currentData(), returned=self._loaded)

    def _loaded(self, sampler: Sampler) -> None:
        self.state.sampler_path = self._loading
        self.state.sampler = sampler
        metrics = sampler.info()["metrics"]
        if metrics.get("peak_memory_mb") is not None:
            self.state.last_run = RunMetrics("checkpoint", str(sampler.checkpoint.options.get("device", "?")),
                                             metrics["peak_memory_mb"], metrics.get("iters_per_s"),
                                             detail=f"the training run of {sampler.checkpoint.describe()}")

    def _show_model(self, sampler) -> None:
        self.sampler = sampler
        if self._references is not None and self._references[0] is not sampler:
            self._references = None  # another model: other training volumes (and let the old one go)
        self._enable()
        if sampler is None:
            return
        self.info.setText(describe(sampler))
        self.label.clear()
        for i, name in enumerate(sampler.class_names or [str(i) for i in range(sampler.cfg.num_classes)]):
            self.label.addItem(name, i)
        self.label.setEnabled(sampler.cfg.num_classes > 0)

    # ---- sampling --------------------------------------------------------------------
    def _args(self) -> tuple:
        label = self.label.currentData() if self.sampler.cfg.num_classes else None
        return label, (self.chunk.value() if self.chunked.isChecked() else None)

    def generate(self) -> None:
        label, chunk = self._args()
        self._busy("Sampling…")
        self._run(sampling_steps, self.sampler, self.count.value(), self.seed.value(), label, chunk,
                  yielded=self._add_volume, returned=self._sampled)

    def _add_volume(self, v) -> None:
        s = self.sampler
        meta = {"seed": v.seed, "label": v.label, "modality": v.modality,
                "checkpoint": self.state.sampler_path, "model": s.checkpoint.describe()}
        layer = show_volume(self.viewer, f"{display_name(s.checkpoint.model)} seed {v.seed}", v.data, v.spacing,
                            v.modality, meta, direction=s.direction)
        self._last_sample = layer.name
        self.status.setText(f"Generated seed {v.seed}.")

    def _sampled(self, result) -> None:
        peak, seconds = result
        self.state.last_run = RunMetrics("sampling", str(self.sampler.device), peak, seconds=seconds,
                                         detail=f"{self.count.value()} volume(s) of "
                                                f"{self.sampler.checkpoint.describe()}")

    def interpolate(self) -> None:
        label, chunk = self._args()
        a, b = self.seed_a.value(), self.seed_b.value()
        self._busy(f"Walking from seed {a} to seed {b}…")
        self._run(self.sampler.interpolate, a, b, self.steps.value(), label, chunk,
                  returned=lambda walk: self._add_walk(walk, a, b))

    def _add_walk(self, walk, a: int, b: int) -> None:
        s = self.sampler
        show_volume(self.viewer, f"walk {a} to {b}", walk, s.spacing, s.modality,
                    {"seeds": (a, b), "checkpoint": self.state.sampler_path, "model": s.checkpoint.describe()},
                    direction=s.direction)
        self.status.setText(f"Latent walk of {walk.shape[0]} steps: browse it with the first slider.")

    def _sampled_layers(self) -> list:
        """The visible sampled volumes (3D image layers with a seed in their metadata)."""
        return [layer for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Image) and layer.visible and "seed" in layer.metadata
                and layer.ndim == 3]

    def show_3d(self) -> None:
        """3D, an oblique camera fitted to the volumes; several samples side by side (grid mode), not stacked."""
        samples = self._sampled_layers()
        viewer = self.viewer
        viewer.dims.ndisplay = 3
        grid = grid_of(viewer)
        grid.enabled = len(samples) > 1
        if grid.enabled:
            grid.stride = 1
        frame_3d(viewer, CAMERA_ANGLES)
        where = (f"{len(samples)} sampled volumes side by side (napari's grid mode; turn it off to stack them)"
                 if len(samples) > 1 else "drag to turn the volume")
        self.status.setText(f"3D view: {where}.")

    # ---- memorisation check ----------------------------------------------------------
    def _sample_layer(self):
        """The selected sampled volume, else the last one generated here (None when there is neither)."""
        size = (self.sampler.cfg.size,) * 3

        def sampled(layer) -> bool:
            return (isinstance(layer, napari.layers.Image) and "seed" in layer.metadata
                    and tuple(layer.data.shape) == size)

        active = self.viewer.layers.selection.active
        if active is not None and sampled(active):
            return active
        last = self.viewer.layers[self._last_sample] if self._last_sample in self.viewer.layers else None
        return last if last is not None and sampled(last) else None

    def nearest(self) -> None:
        if self.sampler is None:
            self.status.setText("Load a checkpoint first: its training volumes are the ones searched.")
            return
        layer = self._sample_layer()
        if layer is None:
            self.status.setText("Generate a volume (or select a sampled volume layer) first.")
            return
        sampler = self.sampler
        modality = layer.metadata.get("modality", sampler.modality)
        # the layer shows modality units; distances are measured in the model's [-1, 1]
        volume = from_modality_units(layer.data.astype("float32"), modality)
        cached = self._references[1] if self._references and self._references[0] is sampler else None
        self._busy(f"Finding the training volume nearest to {layer.name}"
                   f"{'' if cached else ' (the training set is prepared the first time)'}…")
        self._run(nearest_training_volume, sampler, volume, cached,
                  returned=lambda out: self._show_nearest(sampler, layer, modality, *out))

    def _show_nearest(self, sampler: Sampler, layer, modality: str, references: tuple, found: dict) -> None:
        self._references = (sampler, references)
        d, t = found["distance"], found["test_threshold"]
        held_out = "" if t is None else f"; held-out 5th pct {t:.3g}"
        name = f"nearest training: {found['file']} (distance {d:.3g}{held_out})"
        width = layer.data.shape[-1] * float(sampler.spacing[-1])
        translate = [float(x) for x in layer.translate]
        translate[-1] += width * 1.1  # beside the sample along x, a gap of a tenth of its width
        meta = {"nearest_training": found["file"], "distance": d, "test_threshold": t,
                "closer_than_test": found["closer_than_test"], "sample": layer.name,
                "checkpoint": self.state.sampler_path}
        show_volume(self.viewer, name, to_modality_units(found["volume"], modality), sampler.spacing, modality, meta,
                    translate=translate, direction=sampler.direction)
        text = f"{layer.name}: nearest training volume {found['file']}, distance {d:.3g} (pooled to 16³). "
        if t is None:
            text += ("No held-out test list is recorded with this checkpoint (train on a split, crfgan split), "
                     "so there is no distance of new scans to compare with: judge the two side by side.")
        elif found["closer_than_test"]:
            text += (f"That is closer than 95% of held-out scans are to the training set (5th percentile {t:.3g}): "
                     "the sample may copy this training scan; do not share it as synthetic.")
        else:
            text += (f"Held-out scans: 5th percentile {t:.3g}; the sample is no closer to the training set "
                     "than new scans are.")
        sampled_from = layer.metadata.get("checkpoint")
        if sampled_from and sampled_from != self.state.sampler_path:
            text += f" Note: it was sampled from {sampled_from}, not the loaded checkpoint."
        self.status.setText(text)

    def _run(self, func, *args, **slots) -> None:
        self.worker = start_worker(self.workers, func, *args, errored=self._failed, finished=self._idle, **slots)

    def _failed(self, exc: BaseException) -> None:
        notify_error(exc)
        self.status.setText(f"Failed: {one_sentence(exc)}")

    def _busy(self, text: str) -> None:
        self.status.setText(text)
        for w in (self.load_button, self.generate_button, self.interpolate_button, self.nearest_button):
            w.setEnabled(False)

    def _enable(self) -> None:
        idle = self.worker is None
        self.load_button.setEnabled(idle)
        self.nearest_button.setEnabled(idle)  # without a model or a sample, a click says what is missing
        for w in (self.generate_button, self.interpolate_button):
            w.setEnabled(idle and self.sampler is not None)

    def _idle(self) -> None:
        self.worker = None
        self._enable()
        if self.status.text().endswith("…"):
            self.status.setText("Done." if self.sampler else "")
