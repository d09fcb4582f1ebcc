"""Synthesize-from-labels widget: a volume from a Labels layer, through a mask-to-volume checkpoint.

Choose a Labels layer (opened, from the demo-chest sample, or painted) and a pix2pix or
SPADE checkpoint; the generated volume becomes an Image layer on exactly the Labels
layer's grid: its data has the mask's shape, and the layer copies the mask layer's
scale, translate, rotate, shear and affine, so the two overlay in world coordinates. The
voxel size given to the generator is the Labels layer's scale (mm; the synthesizer
resamples to the training spacing and back). With "re-run on edit" every paint stroke
or fill (after a short pause) synthesizes again; only the newest request's volume is
shown. Loading and synthesis run in workers: the viewer never waits for them.
The module imports no torch: `_bind` does (see `_loading`).
"""
from __future__ import annotations

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QFormLayout, QLineEdit, QPushButton

from .._reader import display_limits
from ._helpers import WrapLabel, combo, path_row, scrolling_form, start_worker
from ._loading import LazyWidget, bound_getattr

MODULES = ("torch", "napari_crfgan.synthesis", "napari_crfgan.widgets._workers")
#: after an edit, wait this long (ms) for the next stroke before synthesizing again
EDIT_PAUSE_MS = 400
_bound = False


def _bind() -> None:
    """Import what the widget needs (torch among it) as this module's globals, once (see `_loading`)."""
    global _bound, Synthesizer, WorkerGroup, notify_error, one_sentence
    if _bound:
        return
    from ..synthesis import Synthesizer
    from ._workers import WorkerGroup, notify_error, one_sentence

    _bound = True


__getattr__ = bound_getattr(_bind, MODULES, globals())


def result_name(labels_name: str) -> str:
    return f"synthesized from {labels_name}"


def copy_grid(source, target) -> None:
    """Put `target` on `source`'s grid: the same data-to-world transform, part by part."""
    for key in ("scale", "translate", "rotate", "shear"):
        setattr(target, key, np.asarray(getattr(source, key)))
    target.affine = source.affine.affine_matrix


class SynthesizeWidget(LazyWidget):
    _bind = staticmethod(_bind)
    _modules = MODULES

    def _setup(self) -> None:
        self.synthesizer = None
        self.loading = None  # the load worker under way
        self.running = None  # the synthesis worker under way
        self.request = 0  # number of the newest synthesis asked for; older results are dropped
        self._watched = None  # the Labels layer whose edits re-run

    def _build(self) -> None:
        viewer = self.viewer
        self.workers = WorkerGroup(self, on_close=self._closed)
        self.path = QLineEdit()
        self.path.setToolTip("a pix2pix or SPADE run folder or checkpoint file (crfgan train --model pix2pix|spade)")
        self.load_button = QPushButton("Load")
        self.load_button.setToolTip("load the checkpoint (in the background)")
        self.model = WrapLabel("No model: load a pix2pix or SPADE checkpoint.")
        self.layer = combo([], tip="the 3D Labels layer to synthesize from (opened, sample data, or painted)")
        self.live = QCheckBox("re-run on edit")
        self.live.setChecked(True)
        self.live.setToolTip("synthesize again after each paint stroke or fill of the chosen layer")
        self.run_button = QPushButton("Synthesize")
        self.run_button.setToolTip("generate the volume of the chosen labels (in the background)")
        self.status = WrapLabel("")

        form = QFormLayout()
        form.addRow("Checkpoint", path_row(self.path, False, "Checkpoint", "Checkpoints (*.pt);;All files (*)"))
        form.addRow("", self.load_button)
        form.addRow(self.model)
        form.addRow("Labels", self.layer)
        form.addRow("", self.live)
        self.layout().addWidget(scrolling_form(form, self.run_button, self.status))

        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(EDIT_PAUSE_MS)
        self._pause.timeout.connect(self.synthesize)
        self.load_button.clicked.connect(lambda: self.load(self.path.text().strip()))
        self.run_button.clicked.connect(self.synthesize)
        self.layer.currentIndexChanged.connect(self._watch)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()

    # ---- model and layers ------------------------------------------------------------
    def load(self, path: str) -> None:
        if not path:
            notify_error(ValueError("Choose a pix2pix or SPADE checkpoint first."))
            return
        self.path.setText(path)
        self.model.setText(f"Loading {path}…")
        self.load_button.setEnabled(False)
        self.loading = start_worker(self.workers, Synthesizer, path, returned=self._loaded, errored=self._failed,
                                    finished=self._load_ended)

    def _loaded(self, synthesizer) -> None:
        self.synthesizer = synthesizer
        names = ", ".join(synthesizer.label_names)
        self.model.setText(f"{synthesizer.checkpoint.describe()}: {synthesizer.modality.upper()} from labels "
                           f"({names}), trained at {'×'.join(f'{s:g}' for s in synthesizer.spacing)} mm.")
        self._enable()

    def _load_ended(self) -> None:
        self.loading = None
        self.load_button.setEnabled(True)

    def _labels_layers(self) -> list[str]:
        return [lay.name for lay in self.viewer.layers
                if isinstance(lay, napari.layers.Labels) and np.ndim(lay.data) == 3]

    def _refresh_layers(self, *_) -> None:
        current = self.layer.currentText()
        names = self._labels_layers()
        self.layer.blockSignals(True)
        self.layer.clear()
        self.layer.addItems(names)
        self.layer.setPlaceholderText("no 3D Labels layer: open a mask, add demo-chest, or paint one")
        if names:
            self.layer.setCurrentIndex(names.index(current) if current in names else 0)
        self.layer.blockSignals(False)
        self.layer.setEnabled(bool(names))
        self._watch()
        self._enable()

    def _watch(self, *_) -> None:
        """Follow the edits of the chosen Labels layer (and stop following the previous one)."""
        name = self.layer.currentText()
        layer = self.viewer.layers[name] if name in self.viewer.layers else None
        if layer is self._watched:
            return
        if self._watched is not None:
            for event in _edit_events(self._watched):
                event.disconnect(self._edited)
        self._watched = layer
        if layer is not None:
            for event in _edit_events(layer):
                event.connect(self._edited)

    def _edited(self, *_) -> None:
        if self.live.isChecked() and self.synthesizer is not None:
            self._pause.start()  # (re)started by each stroke: one synthesis once the painting pauses

    def _enable(self) -> None:
        self.run_button.setEnabled(self.synthesizer is not None and bool(self.layer.currentText()))

    # ---- synthesize and show ---------------------------------------------------------
    def synthesize(self) -> None:
        name = self.layer.currentText()
        if self.synthesizer is None or name not in self.viewer.layers:
            notify_error(ValueError("Load a pix2pix or SPADE checkpoint and choose a 3D Labels layer first."))
            return
        source = self.viewer.layers[name]
        self.request += 1
        number = self.request
        labels = np.array(source.data, copy=True)  # a snapshot: painting may go on while the worker runs
        spacing = tuple(float(s) for s in source.scale)
        self.status.setText(f"Synthesizing {name} ({'×'.join(map(str, labels.shape))} voxels)…")
        self.running = start_worker(self.workers, self.synthesizer.volume, labels, spacing,
                                    returned=lambda volume: self._show(volume, source, number),
                                    errored=self._failed, finished=self._run_ended)

    def _show(self, volume: np.ndarray, source, number: int) -> None:
        if number != self.request or source not in self.viewer.layers:
            return  # a newer request is on its way, or the mask went
        name = result_name(source.name)
        modality = self.synthesizer.modality
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = volume
        else:
            layer = self.viewer.add_image(volume, name=name, colormap="gray",
                                          contrast_limits=display_limits(volume, modality))  # as the reader's
            self.viewer.layers.move(self.viewer.layers.index(layer), self.viewer.layers.index(source))
        copy_grid(source, layer)
        layer.metadata["synthesized_from"] = source.name
        self.status.setText(f"{name}: {'×'.join(map(str, volume.shape))} voxels in {modality.upper()} units, on "
                            f"the grid of {source.name}.")

    def _run_ended(self) -> None:
        self.running = None

    def _failed(self, exc: BaseException) -> None:
        notify_error(exc)
        self.status.setText(f"Failed: {one_sentence(exc)}")
        if self.synthesizer is None:
            self.model.setText("No model: load a pix2pix or SPADE checkpoint.")

    def _closed(self) -> None:
        self._pause.stop()
        self.loading = self.running = None


def _edit_events(layer) -> list:
    """The events a Labels layer emits when its voxels change (painting, filling, erasing)."""
    return [getattr(layer.events, name) for name in ("paint", "labels_update") if hasattr(layer.events, name)]
