"""Small pieces the widgets share: workers, error notifications, form rows, layers."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from napari.qt.threading import create_worker
from napari.utils.notifications import notification_manager, show_error
from qtpy.QtWidgets import (QComboBox, QDoubleSpinBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton,
                            QSpinBox, QWidget)
from superqt.utils import FunctionWorker, GeneratorWorker

from .._reader import image_layer_kwargs
from ..data import DatasetError
from ..runtime import CheckpointError
from ..training import TrainingError

#: errors the API raises with a message meant for the user (one sentence)
USER_ERRORS = (DatasetError, TrainingError, CheckpointError, ValueError, MemoryError, OSError)


def one_sentence(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def notify_error(exc: BaseException) -> None:
    """A user error as one sentence; anything else with its traceback in the notification."""
    if isinstance(exc, USER_ERRORS):
        show_error(one_sentence(exc))
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)


def _relay_warning(args: tuple) -> None:
    notification_manager.receive_warning(*args)


class ClosingGeneratorWorker(GeneratorWorker):
    """A generator worker whose `quit()` closes the generator in the worker thread.

    superqt's loop only stops iterating; closing the generator here lets the trainer
    write its checkpoint (it does so on GeneratorExit) before `finished` is emitted.
    Errors are reported by the widget (`notify_error`), not relayed a second time.
    """

    def work(self):
        try:
            return super().work()
        finally:
            self._gen.close()


def start_worker(func: Callable, *args, yielded: Callable | None = None, returned: Callable | None = None,
                 errored: Callable | None = None, finished: Callable | None = None, **kwargs):
    """Run `func(*args, **kwargs)` (a generator function or a plain one) in a napari worker."""
    import inspect

    cls = ClosingGeneratorWorker if inspect.isgeneratorfunction(func) else FunctionWorker
    worker = create_worker(func, *args, _worker_class=cls, _start_thread=False, _ignore_errors=True, **kwargs)
    worker.warned.connect(_relay_warning)
    worker.errored.connect(errored or notify_error)
    for signal, slot in (("yielded", yielded), ("returned", returned), ("finished", finished)):
        if slot is not None:
            getattr(worker, signal).connect(slot)
    worker.start()
    return worker


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
