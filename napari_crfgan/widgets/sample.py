"""Model and sample widget: load a checkpoint into a `Sampler`, generate volumes and latent walks.

Loading, sampling and interpolation run in workers; each `GeneratedVolume` they
yield becomes an image layer scaled by the model's spacing (mm), with its seed and
checkpoint in the layer metadata. The loaded sampler is published in the shared
state, so the consistency widget uses the same model.
"""
from __future__ import annotations

import time

import napari
from qtpy.QtWidgets import (QCheckBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                            QVBoxLayout, QWidget)

from ..model import display_name
from ..runtime import PeakMemory, available_devices
from ..sampling import Sampler
from ._helpers import combo, notify_error, one_sentence, path_row, show_volume, spin, start_worker
from ._state import RunMetrics, state_for

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
    lines.append("Has a CRF" if sampler.has_crf else "No CRF")
    return "<br>".join(lines)


class SampleWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = state_for(viewer)
        self.sampler: Sampler | None = None
        self._loading = ""
        self.worker = None

        self.path = QLineEdit(self.state.checkpoint)
        self.path.setPlaceholderText("checkpoint.pt or its run folder")
        self.device = combo(available_devices(), "auto")
        self.load_button = QPushButton("Load")
        self.info = QLabel("No model loaded.")
        self.info.setWordWrap(True)
        self.seed = spin(0, 0, 2**31 - 1, "volume i uses latent seed seed + i")
        self.count = spin(1, 1, 256)
        self.label = combo([], tip="class of a conditional model")
        self.chunked = QCheckBox("chunked decoding (less memory)")
        self.chunk = spin(32, 4, 1024, "image slices decoded at a time")
        self.chunk.setSingleStep(4)
        self.generate_button = QPushButton("Generate")
        self.view3d_button = QPushButton("Show in 3D")
        self.seed_a, self.seed_b = spin(0, 0, 2**31 - 1), spin(1, 0, 2**31 - 1)
        self.steps = spin(8, 2, 256)
        self.interpolate_button = QPushButton("Interpolate")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Checkpoint", path_row(self.path, False, "Checkpoint", "Checkpoints (*.pt);;All files (*)"))
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
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(walk)
        layout.addWidget(self.status)
        layout.addStretch()

        self.load_button.clicked.connect(self.load)
        self.generate_button.clicked.connect(self.generate)
        self.interpolate_button.clicked.connect(self.interpolate)
        self.view3d_button.clicked.connect(self.show_3d)
        self.state.events.checkpoint.connect(self._new_checkpoint)
        self.state.events.sampler.connect(self._show_model)
        self._show_model(self.state.sampler)

    # ---- model -----------------------------------------------------------------------
    def _new_checkpoint(self, path: str) -> None:
        self.path.setText(path)

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
        show_volume(self.viewer, f"{display_name(s.checkpoint.model)} seed {v.seed}", v.data, v.spacing,
                    v.modality, meta)
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
                    {"seeds": (a, b), "checkpoint": self.state.sampler_path, "model": s.checkpoint.describe()})
        self.status.setText(f"Latent walk of {walk.shape[0]} steps: browse it with the first slider.")

    def show_3d(self) -> None:
        self.viewer.dims.ndisplay = 3

    def _run(self, func, *args, **slots) -> None:
        self.worker = start_worker(func, *args, errored=self._failed, finished=self._idle, **slots)

    def _failed(self, exc: BaseException) -> None:
        notify_error(exc)
        self.status.setText(f"Failed: {one_sentence(exc)}")

    def _busy(self, text: str) -> None:
        self.status.setText(text)
        for w in (self.load_button, self.generate_button, self.interpolate_button):
            w.setEnabled(False)

    def _enable(self) -> None:
        idle = self.worker is None
        self.load_button.setEnabled(idle)
        for w in (self.generate_button, self.interpolate_button):
            w.setEnabled(idle and self.sampler is not None)

    def _idle(self) -> None:
        self.worker = None
        self._enable()
        if self.status.text().endswith("…"):
            self.status.setText("Done." if self.sampler else "")
