"""CRF consistency widget: the trained CRF's per-patch view of a volume, as an overlay layer.

`Sampler.consistency(volume)` gives one value per embedding patch and the layer
geometry placing each patch over its voxels; the overlay adds the source layer's
translate (and its scale relative to the model's spacing) so it lines up with the
volume in world coordinates.
"""
from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QFileDialog, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ..sampling import Sampler
from ._helpers import combo
from ._workers import WorkerGroup, notify_error, one_sentence
from ._state import state_for

MAPS = {
    "verdicts": "Verdict: the CRF's real/fake verdict per patch after mean field (sigmoid of its logit). "
                "It is D^H's verdict on the slabs the patch spans, re-weighted by the learned pairwise terms: "
                "near 1 taken for real, near 0 for generated, 0.5 where D^H is undecided (the CRF adds no "
                "signal of its own there). Not a calibrated probability of consistency.",
    "agreement": "Agreement: the mean learned pairwise potential cos(f_i, f_j)·W_ij between a patch and its "
                 "face neighbours; higher values tie the patch more strongly to its neighbours.",
}
COLORMAPS = ["magma", "viridis", "turbo", "inferno", "PiYG"]


def overlay_geometry(cmap, source_layer, spacing) -> tuple[tuple, tuple]:
    """(scale, translate) of the map layer, in the world frame of `source_layer`."""
    ratio = np.asarray(source_layer.scale[-3:], dtype=float) / np.asarray(spacing, dtype=float)
    scale = np.asarray(cmap.scale) * ratio
    translate = np.asarray(cmap.translate) * ratio + np.asarray(source_layer.translate[-3:], dtype=float)
    return tuple(scale), tuple(translate)


class ConsistencyWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = state_for(viewer)
        self.result = None  # (ConsistencyMap, source layer name)
        self.overlay = None
        self.worker = None
        self.workers = WorkerGroup(self, on_close=self._idle)

        self.model = QLabel()
        self.model.setWordWrap(True)
        self.open_button = QPushButton("Open checkpoint…")
        self.layer = combo([], tip="a volume at the model's size (generated or loaded)")
        self.kind = combo(list(MAPS), "verdicts")
        self.colormap = combo(COLORMAPS, "magma")
        self.opacity = QDoubleSpinBox()
        self.opacity.setRange(0.0, 1.0)
        self.opacity.setSingleStep(0.05)
        self.opacity.setValue(0.5)
        self.blending = combo(["translucent", "additive"], "translucent")
        self.compute_button = QPushButton("Compute consistency map")
        self.legend = QLabel(MAPS["verdicts"])
        self.legend.setWordWrap(True)

        form = QFormLayout()
        form.addRow(self.model)
        form.addRow("", self.open_button)
        form.addRow("Volume", self.layer)
        form.addRow("Map", self.kind)
        form.addRow("Colormap", self.colormap)
        form.addRow("Opacity", self.opacity)
        form.addRow("Blending", self.blending)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.compute_button)
        layout.addWidget(self.legend)
        layout.addStretch()

        self.open_button.clicked.connect(self.open_checkpoint)
        self.compute_button.clicked.connect(self.compute)
        self.kind.currentIndexChanged.connect(self._show)
        for w in (self.colormap, self.blending):
            w.currentIndexChanged.connect(self._style)
        self.opacity.valueChanged.connect(self._style)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self.state.events.sampler.connect(self._show_model)
        self._refresh_layers()
        self._show_model(self.state.sampler)

    # ---- model and layers ------------------------------------------------------------
    def open_checkpoint(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Checkpoint", "", "Checkpoints (*.pt);;All files (*)")
        if path:
            self.load(path)

    def load(self, path: str) -> None:
        self.model.setText(f"Loading {path}…")

        def loaded(sampler) -> None:
            self.state.sampler_path = path
            self.state.sampler = sampler

        self.worker = self.workers.start(Sampler, path, "auto", returned=loaded, errored=self._failed,
                                         finished=self._idle)

    def _show_model(self, sampler) -> None:
        if sampler is None:
            self.model.setText("No model: load a CRF-GAN checkpoint here or in 'Model and sample'.")
        elif not sampler.has_crf:
            self.model.setText(f"{sampler.checkpoint.describe()}: {sampler.no_crf_reason()}, so it has no "
                               "consistency map. Load a CRF-GAN training checkpoint.")
        else:
            size = sampler.cfg.size
            self.model.setText(f"{sampler.checkpoint.describe()}: CRF over a {'×'.join(map(str, sampler.cfg.crf_grid))}"
                               f" patch grid; volumes must be {size}×{size}×{size}.")
        self.compute_button.setEnabled(sampler is not None and sampler.has_crf and self.worker is None)

    def _refresh_layers(self, *_) -> None:
        current = self.layer.currentText()
        self.layer.clear()
        names = [lay.name for lay in self.viewer.layers
                 if isinstance(lay, napari.layers.Image) and lay.ndim == 3 and "map" not in lay.metadata]
        self.layer.addItems(names)
        active = self.viewer.layers.selection.active
        pick = current if current in names else (active.name if active is not None and active.name in names else None)
        if pick:
            self.layer.setCurrentText(pick)

    # ---- compute and show ------------------------------------------------------------
    def compute(self) -> None:
        name = self.layer.currentText()
        if not name:
            notify_error(ValueError("Choose a 3D image layer (generate or open a volume first)."))
            return
        source = self.viewer.layers[name]
        sampler = self.state.sampler
        self.compute_button.setEnabled(False)
        self.legend.setText("Computing…")
        self.worker = self.workers.start(sampler.consistency, np.asarray(source.data, dtype=np.float32),
                                         returned=lambda m: self._computed(m, source, sampler),
                                         errored=self._failed, finished=self._idle)

    def _computed(self, cmap, source, sampler) -> None:
        self.result = (cmap, source, sampler)
        self._show()

    def _show(self, *_) -> None:
        kind = self.kind.currentData()
        if self.result is None:
            self.legend.setText(MAPS[kind])
            return
        cmap, source, sampler = self.result
        data = getattr(cmap, kind)
        scale, translate = overlay_geometry(cmap, source, sampler.spacing)
        limits = (0.0, 1.0) if kind == "verdicts" else (float(data.min()), float(max(data.max(), data.min() + 1e-6)))
        name = f"{source.name} CRF {kind}"
        meta = {"source": source.name, "map": kind, "checkpoint": self.state.sampler_path}
        if self.overlay is not None and self.overlay in self.viewer.layers:
            self.viewer.layers.remove(self.overlay)
        self.overlay = self.viewer.add_image(data, name=name, scale=scale, translate=translate,
                                             contrast_limits=limits, metadata=meta, interpolation3d="nearest")
        self._style()
        self.legend.setText(f"{MAPS[kind]}<br>Here {data.min():.3g} to {data.max():.3g} over "
                            f"{data.size} patches of {'×'.join(f'{s:.3g}' for s in scale)} mm.")

    def _style(self, *_) -> None:
        if self.overlay is None or self.overlay not in self.viewer.layers:
            return
        self.overlay.colormap = self.colormap.currentData()
        self.overlay.opacity = self.opacity.value()
        self.overlay.blending = self.blending.currentData()

    def _failed(self, exc: BaseException) -> None:
        notify_error(exc)
        self.legend.setText(f"Failed: {one_sentence(exc)}")

    def _idle(self) -> None:
        self.worker = None
        self._show_model(self.state.sampler)
