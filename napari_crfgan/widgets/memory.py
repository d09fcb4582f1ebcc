"""Memory and speed widget: parameters, an estimate before training, and what runs measured.

It renders the shared state: the model, preset, batch size and device chosen in the
Train widget, and the measurements of the last training run, sampling run or loaded
checkpoint. Parameter counts and the training-memory estimate come from
`napari_crfgan.model.parameter_counts` and
`napari_crfgan.experiments.memory_estimate` and run in workers.
"""
from __future__ import annotations

import napari
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from ..experiments.memory_estimate import estimate_training_memory
from ..model import display_name, parameter_counts
from ._workers import WorkerGroup, notify_error, one_sentence
from ._state import state_for

def _params_table(counts: dict[str, int]) -> str:
    rows = "".join(f"<tr><td>{name}</td><td align='right'>{n:,}</td></tr>" for name, n in counts.items())
    return f"<table>{rows}<tr><td><b>total</b></td><td align='right'><b>{sum(counts.values()):,}</b></td></tr></table>"


class MemoryWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.state = state_for(viewer)
        self.estimate = None
        self.counts: dict[str, int] = {}
        self._counting = None
        self.workers = WorkerGroup(self, on_close=self._closed)

        self.choice = QLabel()
        self.params = QLabel()
        self.estimate_label = QLabel("No estimate yet.")
        self.estimate_button = QPushButton("Estimate peak training memory")
        self.estimate_button.setToolTip("measures one training step of the chosen system in a fresh process")
        self.last_run = QLabel()
        for label in (self.choice, self.params, self.estimate_label, self.last_run):
            label.setWordWrap(True)
        layout = QVBoxLayout(self)
        for w in (self.choice, self.params, self.estimate_button, self.estimate_label, self.last_run):
            layout.addWidget(w)
        layout.addStretch()

        self.estimate_button.clicked.connect(self.run_estimate)
        for name in ("model", "preset", "batch_size", "device"):
            getattr(self.state.events, name).connect(self._choice_changed)
        self.state.events.last_run.connect(self._render_run)
        self._choice_changed()
        self._render_run(self.state.last_run)

    def _key(self) -> tuple:
        s = self.state
        return s.model, s.preset, s.batch_size, s.device

    def _choice_changed(self, *_) -> None:
        model, preset, batch, device = self._key()
        self.choice.setText(f"<b>{display_name(model)}</b>, preset {preset}, batch {batch}, "
                            f"device {device} (as chosen in Train)")
        self.estimate_label.setText(self._estimate_text() if self._estimate_fits()
                                    else "No estimate for this choice yet.")
        if self._counting != (model, preset):
            self._counting = (model, preset)
            self.workers.start(parameter_counts, model, preset,
                               returned=lambda c, k=(model, preset): self._counted(c, k))

    def _counted(self, counts: dict[str, int], key: tuple) -> None:
        if key != self._counting:
            return  # the choice changed meanwhile
        self.counts = counts
        self.params.setText(f"Parameters per network:{_params_table(counts)}")

    def _estimate_fits(self) -> bool:
        e = self.estimate
        model, preset, batch, device = self._key()
        return e is not None and (e.model, e.preset, e.batch_size) == (model, preset, batch) and \
            (device == "auto" or e.device == device)

    def run_estimate(self) -> None:
        model, preset, batch, device = self._key()
        self.estimate_button.setEnabled(False)
        self.estimate_label.setText(f"Measuring one training step of {model} {preset} at batch {batch}…")
        self.workers.start(estimate_training_memory, model, preset, batch, device, returned=self._estimated,
                           errored=self._failed, finished=lambda: self.estimate_button.setEnabled(True))

    def _estimated(self, estimate) -> None:
        self.estimate = estimate
        self.estimate_label.setText(self._estimate_text())

    def _estimate_text(self) -> str:
        e = self.estimate
        return f"Estimated peak training memory on {e.device}: {e.describe()}."

    def _failed(self, exc: BaseException) -> None:
        notify_error(exc)
        self.estimate_label.setText(f"No estimate: {one_sentence(exc)}")

    def _closed(self) -> None:
        """The widget went while counting or estimating (`WorkerGroup` stopped those): count again next time."""
        self._counting = None
        self.estimate_button.setEnabled(True)

    def _render_run(self, run) -> None:
        if run is None:
            self.last_run.setText("No run measured yet: train, sample, or load a checkpoint.")
            return
        speed = f", {run.iters_per_s:.2f} it/s" if run.iters_per_s else ""
        took = f", {run.seconds:.1f} s" if run.seconds is not None else ""
        peak = f"{run.peak_memory_mb:.0f} MB" if run.peak_memory_mb >= 0 else "not measurable here"
        self.last_run.setText(f"<b>Last {run.kind}</b> ({run.detail}) on {run.device}: "
                              f"peak memory {peak}{speed}{took}.")
