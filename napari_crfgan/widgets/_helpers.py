"""Small pieces the widgets share: form rows, scrolling forms, labels, image layers, warnings.

Nothing here imports torch (the widgets' modules must open a dock without it); background
work itself is `_workers`.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit,
                            QPushButton, QScrollArea, QSpinBox, QVBoxLayout, QWidget)

from .._reader import image_layer_kwargs
from ..data.nifti import display_orientation, make_geometry

log = logging.getLogger("napari_crfgan.widgets")
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: a combo box is at least this many characters wide, whatever its longest item (docks stay narrow)
COMBO_CHARS = 12
ZWSP = "\u200b"  # a zero-width space: where a long path may wrap


# ---- form rows ----------------------------------------------------------------------
def spin(value: int, lo: int, hi: int, tip: str = "") -> QSpinBox:
    w = QSpinBox()
    w.setRange(lo, hi)
    w.setValue(value)
    w.setToolTip(tip)
    return w


def rate_spin(tip: str) -> QDoubleSpinBox:
    """A learning-rate box whose 0 reads 'preset' (use the preset's value)."""
    w = QDoubleSpinBox()
    w.setDecimals(6)
    w.setRange(0.0, 1.0)
    w.setSingleStep(1e-5)
    w.setSpecialValueText("preset")
    w.setToolTip(tip)
    return w


def combo(items, current: str | None = None, tip: str = "") -> QComboBox:
    """A combo box; items are strings, or (text, data) pairs. Its width does not follow its longest item."""
    w = QComboBox()
    w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    w.setMinimumContentsLength(COMBO_CHARS)
    for item in items:
        text, data = item if isinstance(item, tuple) else (item, item)
        w.addItem(text, data)
    if current is not None:
        w.setCurrentIndex(max(w.findData(current), 0))
    w.setToolTip(tip)
    return w


def path_row(edit: QLineEdit, folder: bool, caption: str, filter: str = "") -> QWidget:
    """A line edit with a Browse button opening a folder or file dialog."""
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    button = QPushButton("Browse…")
    button.setToolTip(f"{caption}: choose with a file dialog")

    def browse() -> None:
        start = edit.text() or str(Path.home())
        if folder:
            path = QFileDialog.getExistingDirectory(row, caption, start)
        else:
            path, _ = QFileDialog.getOpenFileName(row, caption, start, filter)
        if path:
            edit.setText(path)

    button.clicked.connect(browse)
    layout.addWidget(edit)
    layout.addWidget(button)
    return row


def scroll_area(body: QWidget) -> QScrollArea:
    """`body` in a frameless vertical scroll area: a dock shorter than its form scrolls, never squeezes.

    No horizontal scrolling: the form follows the dock's width (labels wrap)."""
    area = QScrollArea()
    area.setWidget(body)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    return area


def scrolling_form(form, *below: QWidget) -> QScrollArea:
    """A dock's page: `form`, then `below` one under the other, top-aligned, in a `scroll_area`."""
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.addLayout(form)
    for w in below:
        layout.addWidget(w)
    layout.addStretch()
    return scroll_area(body)


def breakable(text: str) -> str:
    """`text` with a zero-width space after each path separator (outside HTML tags), so a path wraps."""
    return re.sub(r"(<[^>]*>)|([/\\])", lambda m: m.group(1) or m.group(2) + ZWSP, text)


class WrapLabel(QLabel):
    """A word-wrapping label on which long paths wrap too (they would widen the dock or be cut off).

    `text()` gives the text as it was set; only what is shown has the wrap points."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._raw = ""
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        self._raw = text
        super().setText(breakable(text))

    def text(self) -> str:
        return self._raw


# ---- warnings -----------------------------------------------------------------------
def is_own_warning(message, category, filename, *_) -> bool:
    """Whether a warning is napari-crfgan's own (shown to the user), not a library's (only logged).

    Its category is defined in napari_crfgan (SkippedFilesWarning, ...), or it is a built-in
    category issued by napari_crfgan's code outside the widgets (the widgets call only napari,
    Qt and the API: a warning pointing at them is a library's, e.g. matplotlib's warn_external)."""
    module = getattr(category, "__module__", "") or ""
    if module.split(".")[0] == "napari_crfgan":
        return True
    if module != "builtins":
        return False  # a category of another package (pydantic's, matplotlib's, torch's, ...)
    try:
        path = Path(str(filename)).resolve()
    except (OSError, ValueError):
        return False
    return path.is_relative_to(PACKAGE_DIR) and not path.is_relative_to(PACKAGE_DIR / "widgets")


def relay_own_warnings(worker) -> None:
    """Show only napari-crfgan's own warnings of `worker` as notifications; log the others.

    `WorkerGroup.start` relays every warning; while a worker runs, that includes the main
    thread's (the worker's warning capture is process-wide), such as napari's own pydantic
    deprecation warnings. Call it right after starting the worker."""
    link = worker.link
    try:
        worker.warned.disconnect()
    except (TypeError, RuntimeError):  # nothing connected
        pass

    def relay(args: tuple) -> None:
        if link.cut:
            return
        if is_own_warning(*args):
            notification_manager.receive_warning(*args)
        else:
            log.info("a library warned (not shown): %s:%s: %s: %s", args[2], args[3],
                     getattr(args[1], "__name__", args[1]), args[0])

    worker.warned.connect(relay)


def start_worker(group, func, *args, **slots):
    """`group.start(func, *args, **slots)` with only napari-crfgan's own warnings shown."""
    worker = group.start(func, *args, **slots)
    relay_own_warnings(worker)
    return worker


# ---- the viewer's grid and camera -----------------------------------------------------
def grid_of(viewer):
    """The viewer's grid settings (napari 0.9 moved them to `viewer.canvas.grid`)."""
    canvas = getattr(viewer, "canvas", None)
    return canvas.grid if canvas is not None and hasattr(canvas, "grid") else viewer.grid


def camera_of(viewer):
    """The viewer's camera (napari 0.9 moved it to `viewer.scene.camera`)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def frame_3d(viewer, angles) -> None:
    """Turn the 3D camera to `angles` and zoom and centre so every visible layer fits the canvas."""
    fit = getattr(viewer, "fit_to_view", None)
    if fit is None:  # napari before 0.9: reset_view fits (and resets the angles first)
        viewer.reset_view()
        camera_of(viewer).angles = angles
        return
    camera_of(viewer).angles = angles
    fit()


# ---- layers -------------------------------------------------------------------------
def show_volume(viewer, name: str, data, spacing, modality: str, metadata: dict | None = None,
                translate=None, direction=None):
    """Add an image layer (or replace the data of the layer called `name`), in mm, as the reader shows files.

    Its geometry is the spacing, `translate` (origin, mm) and `direction` (3x3, the training
    data's axis directions; None: axis-aligned), and its affine the display orientation
    (`CRFGAN_DISPLAY_ORIENTATION`), so a sample lies and looks like a training scan opened
    beside it, and the writer takes the display off again. Replacing sets only what
    changed (each change is a refresh of the layer)."""
    origin = tuple(float(o) for o in translate) if translate is not None else (0.0, 0.0, 0.0)
    kwargs = image_layer_kwargs(name, data, spacing, origin, modality, metadata,
                                geometry=make_geometry(spacing, origin, direction), display=display_orientation())
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.metadata.update(kwargs["metadata"])
        layer.data = data
        for key in ("scale", "translate", "rotate", "shear", "contrast_limits"):
            if not _same(getattr(layer, key), kwargs[key]):
                setattr(layer, key, kwargs[key])
        if not _same(layer.affine.affine_matrix, kwargs["affine"]):
            layer.affine = kwargs["affine"]
        return layer
    return viewer.add_image(data, **kwargs)


def _same(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b))
