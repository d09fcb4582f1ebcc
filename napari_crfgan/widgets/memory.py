"""Memory and speed widget: parameters, an estimate before training, and what runs measured.

It renders the shared state: the model, preset, batch size and device chosen in the
Train widget, and the measurements of the last training run, sampling run or loaded
checkpoint. Parameter counts and the training-memory estimate come from
`napari_crfgan.model.parameter_counts` and
`napari_crfgan.experiments.memory_estimate` and run in workers.

The figures say what they are: the estimate is the peak of one training step, after one
warm-up step, on a synthetic batch in a fresh process, and the speed of that one step is
not the speed of a run (no data loading or checkpoints; one step on a machine that may be
busy: it was measured while a run trained, when it was). A run's peak on CPU is what the
process grew by during the run (above what it held before: napari, a loaded model), so a
sampling run of a small model shows a few MB; the memory the process holds now is shown
beside it. The module imports no torch: `_bind` does (see `_loading`).
"""
from __future__ import annotations

import threading

from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from ._helpers import WrapLabel, scroll_area, start_worker
from ._loading import LazyWidget, bound_getattr

MODULES = ("torch", "napari_crfgan.experiments.memory_estimate", "napari_crfgan.widgets._workers",
           "napari_crfgan.widgets._state")
_bound = False


def _bind() -> None:
    """Import what the widget needs (torch among it) as this module's globals, once (see `_loading`)."""
    global _bound, estimate_training_memory, display_name, parameter_counts, WorkerGroup, notify_error
    global one_sentence, state_for
    if _bound:
        return
    from ..experiments.memory_estimate import estimate_training_memory
    from ..model import display_name, parameter_counts
    from ._state import state_for
    from ._workers import WorkerGroup, notify_error, one_sentence

    _bound = True


__getattr__ = bound_getattr(_bind, MODULES, globals())


def process_memory_mb() -> float | None:
    """The resident memory of this process now (napari, models, layers), in MB; None when unknown."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # no psutil, or no such figure on this system
        return None

def _params_table(counts: dict[str, int]) -> str:
    rows = "".join(f"<tr><td>{name}</td><td align='right'>{n:,}</td></tr>" for name, n in counts.items())
    return f"<table>{rows}<tr><td><b>total</b></td><td align='right'><b>{sum(counts.values()):,}</b></td></tr></table>"


class MemoryWidget(LazyWidget):
    _bind = staticmethod(_bind)
    _modules = MODULES

    def _setup(self) -> None:
        self.estimate = None
        self.counts: dict[str, int] = {}
        self._counting = None
        self._estimating_while_training = False  # the estimate being measured shares the machine with a run
        self._estimate_while_training = False  # the estimate shown was measured while a run trained

    def _build(self) -> None:
        self.state = state_for(self.viewer)
        self.workers = WorkerGroup(self, on_close=self._closed)

        self.choice = WrapLabel()
        self.params = WrapLabel()
        self.estimate_label = WrapLabel("No estimate yet.")
        self.estimate_button = QPushButton("Estimate peak training memory")
        self.estimate_button.setToolTip("measures one training step (after one warm-up step) of the chosen system "
                                        "on a synthetic batch, in a fresh process")
        self.last_run = WrapLabel()
        body = QWidget()
        layout = QVBoxLayout(body)
        for w in (self.choice, self.params, self.estimate_button, self.estimate_label, self.last_run):
            layout.addWidget(w)
        layout.addStretch()
        self.layout().addWidget(scroll_area(body))

        self.estimate_button.clicked.connect(self.run_estimate)
        for name in ("model", "preset", "batch_size", "device", "precision", "processes"):
            getattr(self.state.events, name).connect(self._choice_changed)
        self.state.events.last_run.connect(self._render_run)
        self._choice_changed()
        self._render_run(self.state.last_run)

    def _key(self) -> tuple:
        s = self.state
        return s.model, s.preset, s.batch_size, s.device, s.precision, s.processes

    def _choice_changed(self, *_) -> None:
        model, preset, batch, device, precision, processes = self._key()
        on = f"{processes} processes on {device} (one per GPU)" if processes > 1 else f"device {device}"
        self.choice.setText(f"<b>{display_name(model)}</b>, preset {preset}, batch {batch}, {on}, {precision} "
                            f"(as chosen in Train)")
        self.estimate_label.setText(self._estimate_text() if self._estimate_fits()
                                    else "No estimate for this choice yet.")
        if self._counting != (model, preset):
            self._counting = (model, preset)
            start_worker(self.workers, parameter_counts, model, preset,
                         returned=lambda c, k=(model, preset): self._counted(c, k))

    def _counted(self, counts: dict[str, int], key: tuple) -> None:
        if key != self._counting:
            return  # the choice changed meanwhile
        self.counts = counts
        self.params.setText(f"Parameters per network:{_params_table(counts)}")

    def _estimate_fits(self) -> bool:
        e = self.estimate
        model, preset, batch, device, precision, processes = self._key()
        return e is not None and (e.model, e.preset, e.batch_size, e.precision, e.processes) == \
            (model, preset, batch, precision, processes) and (device == "auto" or e.device.startswith(device))

    def run_estimate(self) -> None:
        model, preset, batch, device, precision, processes = self._key()
        self.estimate_button.setEnabled(False)
        self._estimating_while_training = self.state.training
        self.estimate_label.setText(f"Measuring one training step of {model} {preset} at batch {batch}…")
        cancel = threading.Event()  # closing the widget kills the measuring process at once
        start_worker(self.workers, estimate_training_memory, model, preset, batch, device, precision, processes,
                     cancel=cancel,
                     returned=self._estimated, errored=self._failed, on_quit=cancel.set,
                     finished=lambda: self.estimate_button.setEnabled(True))

    def _estimated(self, estimate) -> None:
        self.estimate = estimate
        self._estimate_while_training = self._estimating_while_training
        self.estimate_label.setText(self._estimate_text())

    def _estimate_text(self) -> str:
        e = self.estimate
        if e.peak_memory_mb is None:  # not measured: only the lower bound of weights, gradients and Adam state
            return f"Peak training memory on {e.device}: {e.describe()}."
        text = (f"Peak training memory on {e.device} ({e.precision}): {e.peak_memory_mb:.0f} MB peak{e.where()}, "
                f"measured over one training step after one warm-up step, on a synthetic batch in a fresh process.")
        if e.processes > 1:
            text += (f" One process was measured at its share of the batch ({e.batch_size // e.processes}), plus DDP's "
                     f"gradient buckets: {e.per_process_mb:.0f} MB per process.")
        if e.iters_per_s:
            text += (f" That one step took {1 / e.iters_per_s:.2g} s ({e.iters_per_s:.2g} it/s): not the speed of "
                     "a run, which loads data, writes checkpoints and shares the machine (Train shows its speed).")
        if self._estimate_while_training:
            text += " Measured while a run trained on this machine: its speed is lower than on its own."
        return text

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
        if run.peak_memory_mb < 0:
            peak = "peak memory not measurable here"
        elif run.device.startswith("cuda"):
            peak = f"peak {run.peak_memory_mb:.0f} MB allocated on the GPU"
        elif run.kind == "sampling":
            peak = (f"peak memory {run.peak_memory_mb:.0f} MB added while sampling (above what the process held "
                    "before: the loaded model, napari, its layers)")
        else:
            peak = f"peak memory {run.peak_memory_mb:.0f} MB (what the process grew by during the run)"
        now = process_memory_mb()
        held = f" This napari process holds {now:.0f} MB now." if now is not None else ""
        self.last_run.setText(f"<b>Last {run.kind}</b> ({run.detail}) on {run.device}: {peak}{speed}{took}.{held}")
