"""Small pieces the widgets share: form rows and image layers (background work: `_workers`)."""
from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton,
                            QSpinBox, QWidget)

from .._reader import image_layer_kwargs


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
    """A combo box; items are strings, or (text, data) pairs."""
    w = QComboBox()
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


# ---- layers -------------------------------------------------------------------------
def show_volume(viewer, name: str, data, spacing, modality: str, metadata: dict | None = None,
                translate=None):
    """Add an image layer (or replace the data of the layer called `name`), scaled in mm."""
    kwargs = image_layer_kwargs(name, data, spacing, translate, modality, metadata)
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.data = data
        layer.scale = kwargs["scale"]
        layer.contrast_limits = kwargs["contrast_limits"]
        layer.metadata.update(kwargs["metadata"])
        return layer
    return viewer.add_image(data, **kwargs)
