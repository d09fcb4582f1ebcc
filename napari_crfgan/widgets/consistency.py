"""CRF consistency widget: the trained CRF's per-patch view of a volume, as an overlay layer.

`Sampler.consistency(volume)` gives one value per embedding patch and the layer
geometry placing each patch over its voxels; the overlay's affine takes that through
the source layer's whole data-to-world transform (scale, translate, rotate, shear,
affine), so it lines up with the volume in world coordinates however the volume is
oriented. Only image layers of the model's size are offered (a map of
another size would not line up); when there is none, the widget says so.
The module imports no torch: `_bind` does (see `_loading`).
"""
from __future__ import annotations

import napari
import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QFileDialog, QFormLayout, QPushButton

from ._helpers import WrapLabel, combo, grid_of, scrolling_form, start_worker
from ._loading import LazyWidget, bound_getattr

MODULES = ("torch", "napari_crfgan.sampling", "napari_crfgan.widgets._workers", "napari_crfgan.widgets._state")
_bound = False


def _bind() -> None:
    """Import what the widget needs (torch among it) as this module's globals, once (see `_loading`)."""
    global _bound, Sampler, WorkerGroup, notify_error, one_sentence, state_for
    if _bound:
        return
    from ..sampling import Sampler
    from ._state import state_for
    from ._workers import WorkerGroup, notify_error, one_sentence

    _bound = True


__getattr__ = bound_getattr(_bind, MODULES, globals())

MAPS = {
    "verdicts": "Verdict: the CRF's real/fake verdict per patch after mean field (sigmoid of its logit). "
                "It is D^H's verdict on the slabs the patch spans, re-weighted by the learned pairwise terms: "
                "near 1 taken for real, near 0 for generated, 0.5 where D^H is undecided (the CRF adds no "
                "signal of its own there). Not a calibrated probability of consistency.",
    "agreement": "Agreement: the mean learned pairwise potential cos(f_i, f_j)·W_ij between a patch and its "
                 "face neighbours; higher values tie the patch more strongly to its neighbours.",
}
COLORMAPS = ["magma", "viridis", "turbo", "inferno", "PiYG"]


def overlay_affine(cmap, source_layer, spacing) -> np.ndarray:
    """The map layer's 4x4 data-to-world affine: each patch over the voxels it covers in `source_layer`.

    The map's geometry (mm in the model's spacing) is first taken to the source's voxels,
    then through the source's whole data-to-world transform (its scale, translate, rotate,
    shear and affine, as napari composes them), so the map follows an oblique, flipped or
    moved volume."""
    from napari.utils.transforms import Affine

    spacing = np.asarray(spacing, dtype=float)
    to_voxels = Affine(scale=np.asarray(cmap.scale) / spacing, translate=np.asarray(cmap.translate) / spacing)
    layer = Affine(scale=source_layer.scale, translate=source_layer.translate, rotate=source_layer.rotate,
                   shear=source_layer.shear)
    return source_layer.affine.affine_matrix @ layer.affine_matrix @ to_voxels.affine_matrix


def patch_size_mm(affine: np.ndarray) -> np.ndarray:
    """The world length of one map voxel along each of its axes."""
    return np.linalg.norm(affine[:3, :3], axis=0)


class ConsistencyWidget(LazyWidget):
    _bind = staticmethod(_bind)
    _modules = MODULES

    def _setup(self) -> None:
        self.result = None  # (ConsistencyMap, source layer, sampler)
        self.overlay = None
        self.worker = None

    def _build(self) -> None:
        viewer = self.viewer
        self.state = state_for(viewer)
        self.workers = WorkerGroup(self, on_close=self._idle)

        self.model = WrapLabel()
        self.open_button = QPushButton("Open checkpoint…")
        self.open_button.setToolTip("load a CRF-GAN training checkpoint here (or load one in 'Model and sample')")
        self.layer = combo([], tip="a 3D image layer at the model's size (generated or opened); only those are "
                                   "listed")
        self.kind = combo(list(MAPS), "verdicts", "verdicts: the CRF's real/fake verdict per patch; agreement: its "
                                                  "pairwise ties to the neighbouring patches")
        self.colormap = combo(COLORMAPS, "magma", "colormap of the map layer")
        self.opacity = QDoubleSpinBox()
        self.opacity.setRange(0.0, 1.0)
        self.opacity.setSingleStep(0.05)
        self.opacity.setValue(0.5)
        self.opacity.setToolTip("opacity of the map layer over the volume")
        self.blending = combo(["translucent", "additive"], "translucent", "how the map layer mixes with the volume")
        self.compute_button = QPushButton("Compute consistency map")
        self.compute_button.setToolTip("run the trained CRF over the chosen volume (in the background)")
        self.legend = WrapLabel(MAPS["verdicts"])

        form = QFormLayout()
        form.addRow(self.model)
        form.addRow("", self.open_button)
        form.addRow("Volume", self.layer)
        form.addRow("Map", self.kind)
        form.addRow("Colormap", self.colormap)
        form.addRow("Opacity", self.opacity)
        form.addRow("Blending", self.blending)
        self.layout().addWidget(scrolling_form(form, self.compute_button, self.legend))

        self.open_button.clicked.connect(self.open_checkpoint)
        self.compute_button.clicked.connect(self.compute)
        self.kind.currentIndexChanged.connect(self._show)
        for w in (self.colormap, self.blending):
            w.currentIndexChanged.connect(self._style)
        self.opacity.valueChanged.connect(self._style)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self.state.events.sampler.connect(self._show_model)
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

        self.worker = start_worker(self.workers, Sampler, path, "auto", returned=loaded, errored=self._failed,
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
        self._refresh_layers()

    def _model_size(self) -> int | None:
        sampler = self.state.sampler
        return sampler.cfg.size if sampler is not None and sampler.has_crf else None

    def _refresh_layers(self, *_) -> None:
        """List the 3D image layers of the model's size (none without a CRF model), and say when there is none."""
        current = self.layer.currentText()
        size = self._model_size()
        names = [] if size is None else [
            lay.name for lay in self.viewer.layers
            if isinstance(lay, napari.layers.Image) and tuple(lay.data.shape) == (size,) * 3
            and "map" not in lay.metadata]
        self.layer.clear()
        self.layer.addItems(names)
        if size is None:
            self.layer.setPlaceholderText("load a CRF-GAN model first")
        else:
            self.layer.setPlaceholderText(f"no {size}×{size}×{size} image layer: generate or open one")
        active = self.viewer.layers.selection.active
        pick = current if current in names else (active.name if active is not None and active.name in names else None)
        if names:  # (with a placeholder text set, Qt 6 chooses no item by itself)
            self.layer.setCurrentIndex(names.index(pick) if pick else 0)
        self.layer.setEnabled(bool(names))
        self._enable()

    def _enable(self) -> None:
        # with a CRF model and no volume of its size, a click says which size is needed
        self.compute_button.setEnabled(self._model_size() is not None and self.worker is None)

    # ---- compute and show ------------------------------------------------------------
    def compute(self) -> None:
        name = self.layer.currentText()
        if not name or name not in self.viewer.layers:
            size = self._model_size()
            notify_error(ValueError(f"Choose a {size}×{size}×{size} image layer (generate or open a volume first)."
                                    if size else "Load a CRF-GAN checkpoint first."))
            return
        source = self.viewer.layers[name]
        sampler = self.state.sampler
        self.compute_button.setEnabled(False)
        self.legend.setText("Computing…")
        self.worker = start_worker(self.workers, sampler.consistency, np.asarray(source.data, dtype=np.float32),
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
        affine = overlay_affine(cmap, source, sampler.spacing)
        limits = (0.0, 1.0) if kind == "verdicts" else (float(data.min()), float(max(data.max(), data.min() + 1e-6)))
        name = f"{source.name} CRF {kind}"
        meta = {"source": source.name, "map": kind, "checkpoint": self.state.sampler_path}
        if self.overlay is not None and self.overlay in self.viewer.layers:
            self.viewer.layers.remove(self.overlay)
        self.overlay = self.viewer.add_image(data, name=name, affine=affine, contrast_limits=limits, metadata=meta,
                                             interpolation3d="nearest")
        self._style()
        note = ""
        grid = grid_of(self.viewer)
        if grid.enabled:  # in grid mode the map would get a view of its own, beside its volume
            grid.enabled = False
            note = "<br>Grid mode is off, so the map lies over its volume."
        self.legend.setText(f"{MAPS[kind]}<br>Here {data.min():.3g} to {data.max():.3g} over "
                            f"{data.size} patches of {'×'.join(f'{s:.3g}' for s in patch_size_mm(affine))} mm.{note}")

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
        self._enable()
