"""Train widget: a form for TrainOptions, and a worker that runs `napari_crfgan.train`.

The worker prepares the dataset and runs the trainer generator; it only yields
(`Preparing`, `Prepared`, then each `TrainReport`). The main thread turns those
into the progress bar, the loss plot, the preview layer and the shared state.
Stop = `worker.quit()`: the worker closes the trainer generator, which writes a
checkpoint at the last finished iteration; during the data preparation it ends the
preparation thread too (at the next prepared volume) and waits for it. Closing the
widget or the viewer stops the run the same way (`WorkerGroup`), and waits for it.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import napari
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.utils import progress
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                            QVBoxLayout, QWidget)
from superqt import QCollapsible

from ..data import DEMO_DATASETS
from ..model import PRESETS, SYSTEMS
from ..runtime import available_devices
from ..training import TrainOptions, TrainReport, prepare_dataset, train
from ..model.presets import LOSSES, STEPS, UPSAMPLING
from ..model.recipes import RECIPES, RECOMMENDED
from ..training.options import PRECISIONS
from ._helpers import combo, path_row, rate_spin, show_volume, spin
from ._workers import WorkerGroup, notify_error, one_sentence
from ._state import RunMetrics, state_for

SYSTEM_CHOICES = [(spec.display_name, name) for name, spec in SYSTEMS.items()]
#: every loss any system logs -> its label in the plot and the status line
LOSS_LABELS = {k: v for spec in SYSTEMS.values() for k, v in spec.loss_labels.items()}
DIAGNOSTIC_LABELS = {k: v for spec in SYSTEMS.values() for k, v in spec.diagnostic_labels.items()}
DEFAULTS = TrainOptions()
PREVIEW_LAYER = "training preview"


@dataclass(frozen=True)
class Preparing:
    done: int
    total: int


@dataclass(frozen=True)
class Prepared:
    summary: dict


class _Stopped(Exception):
    """Raised in the preparation thread, at its next progress report, once a stop is requested."""


def _prepare(options: TrainOptions, stopping: threading.Event):
    """prepare_dataset in a helper thread, yielding its progress; returns the dataset (None once stopped).

    The thread never outlives this generator: a stop (`stopping` set, or the generator
    closed) ends it at its next prepared volume, and the generator waits for it.
    """
    updates: queue.Queue = queue.Queue()
    result: dict = {}

    def progress(done: int, total: int) -> None:
        if stopping.is_set():
            raise _Stopped
        updates.put(Preparing(done, total))

    def run() -> None:
        try:
            result["dataset"] = prepare_dataset(options, progress=progress)
        except BaseException as exc:  # re-raised in the worker below
            result["error"] = exc
        finally:
            updates.put(None)

    thread = threading.Thread(target=run, daemon=True, name="crfgan-prepare")
    thread.start()
    try:
        while (update := updates.get()) is not None:
            yield update
    except BaseException:  # closed while preparing (Stop, or the widget went): end the preparation too
        stopping.set()
        raise
    finally:
        thread.join()
    if isinstance(result.get("error"), _Stopped):
        return None
    if "error" in result:
        raise result["error"]
    return result["dataset"]


def training_steps(options: TrainOptions, stopping: threading.Event | None = None):
    """The worker's generator: Preparing..., Prepared, then the trainer's TrainReports.

    Set `stopping` to stop during the data preparation (the worker's quit does)."""
    stopping = threading.Event() if stopping is None else stopping
    dataset = yield from _prepare(options, stopping)
    if dataset is None or stopping.is_set():
        return
    yield Prepared(dataset.summary())
    yield from train(options, dataset)  # closing this generator closes the trainer: checkpoint


class LossPlot(FigureCanvasQTAgg):
    """Loss curves of the run (top) and the CRF's diagnostics (bottom, CRF-GAN only)."""

    def __init__(self) -> None:
        # fixed margins: a layout engine (tight_layout) would re-measure every text on every redraw
        self.figure = Figure(figsize=(4, 3.6))
        super().__init__(self.figure)
        self.axes, self.diagnostics = self.figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
        self.figure.subplots_adjust(left=0.17, right=0.97, top=0.97, bottom=0.12, hspace=0.08)
        self.lines: dict = {}
        self.clear()

    def clear(self) -> None:
        for ax, ylabel in ((self.axes, "loss"), (self.diagnostics, "CRF")):
            ax.clear()
            ax.set_ylabel(ylabel)
        self.diagnostics.set_xlabel("iteration")
        self.diagnostics.set_visible(False)
        self.lines = {}
        self.draw_idle()

    def add(self, iteration: int, losses: dict) -> None:
        for key, value in losses.items():
            ax, labels = ((self.axes, LOSS_LABELS) if key in LOSS_LABELS else
                          (self.diagnostics, DIAGNOSTIC_LABELS) if key in DIAGNOSTIC_LABELS else (None, None))
            if ax is None:
                continue
            if key not in self.lines:
                ax.set_visible(True)
                (self.lines[key],) = ax.plot([], [], label=labels[key])
                ax.legend(loc="upper right", fontsize="x-small")
            line = self.lines[key]
            line.set_data([*line.get_xdata(), iteration], [*line.get_ydata(), value])

    def redraw(self) -> None:
        for ax in (self.axes, self.diagnostics):
            ax.relim()
            ax.autoscale_view()
        self.draw_idle()


class TrainWidget(QWidget):
    def __init__(self, viewer: napari.viewer.Viewer) -> None:  # long: the form, one row per field
        super().__init__()
        self.viewer = viewer
        self.state = state_for(viewer)
        self.worker = None
        self.pbar = None
        self.options: TrainOptions | None = None
        self.spacing = (1.0, 1.0, 1.0)
        self.modality = "mri"
        self.last_report: TrainReport | None = None
        self._drawn_at = 0.0
        self._failed = False
        self.progress_done = 0
        self.workers = WorkerGroup(self, on_close=self._closed)

        self.data = QComboBox()
        self.data.setEditable(True)
        self.data.addItems(DEMO_DATASETS)
        self.data.setToolTip("a folder of .nii / .nii.gz / .npy volumes, or a demo set")
        self.modality_box = combo(["auto", "ct", "mri"], "auto", "auto: CT when the data look like HU")
        self.system = combo(SYSTEM_CHOICES, self.state.model)
        self.preset = combo(list(PRESETS), self.state.preset)
        self.batch = spin(self.state.batch_size, 1, 512)
        self.iterations = spin(DEFAULTS.iterations, 1, 10_000_000)
        self.preview_every = spin(50, 0, 1_000_000, "refresh the preview layer every K iterations (0: never)")
        self.device = combo(available_devices(), self.state.device)
        self.out = QLineEdit(str(Path(DEFAULTS.out).resolve()))
        self.resume = QCheckBox("continue the checkpoint in the output folder")

        form = QFormLayout()
        form.addRow("Data", path_row(self.data, True, "Dataset folder"))
        form.addRow("Modality", self.modality_box)
        form.addRow("System", self.system)
        form.addRow("Preset", self.preset)
        form.addRow("Batch size", self.batch)
        form.addRow("Iterations", self.iterations)
        form.addRow("Preview every", self.preview_every)
        form.addRow("Device", self.device)
        form.addRow("Output folder", path_row(self.out, True, "Output folder"))
        form.addRow("Resume", self.resume)

        self.lr_g, self.lr_d, self.lr_e = (rate_spin(f"{n} learning rate")
                                           for n in ("generator", "discriminator", "encoder"))
        self.seed = spin(DEFAULTS.seed, 0, 2**31 - 1)
        self.checkpoint_every = spin(DEFAULTS.checkpoint_every, 1, 10_000_000)
        self.demo_count = spin(0, 0, 10_000, "number of demo volumes (0: the demo's default)")
        self.demo_count.setSpecialValueText("default")
        self.conditional = QCheckBox("class-conditional on labels.csv")
        self.precision = combo(list(PRECISIONS), DEFAULTS.precision, "bf16 / fp16 autocast need CUDA")
        self.step = combo([("preset's (reference)", None), *((s, s) for s in STEPS)], None,
                          TrainOptions.__dataclass_fields__["step"].metadata["help"])
        help_of = {name: f.metadata["help"] for name, f in TrainOptions.__dataclass_fields__.items()}
        # the recommended recipe first and chosen (crfgan train's default stays the papers' own)
        self.recipe = combo([(f"{RECOMMENDED} (recommended)", RECOMMENDED),
                             *((n, n) for n in RECIPES if n != RECOMMENDED)], RECOMMENDED, help_of["recipe"])
        self.loss = combo([("recipe's", None), *((x, x) for x in LOSSES)], None, help_of["loss"])
        self.upsample = combo([("recipe's", None), *((x, x) for x in UPSAMPLING)], None, help_of["upsample"])
        self.ema_decay = rate_spin("moving average of the generator (0: the recipe's)")
        self.ema_decay.setDecimals(4)
        self.ema_decay.setRange(0.0, 0.9999)
        self.ema_decay.setSingleStep(0.001)
        self.ema_decay.setSpecialValueText("recipe's")
        advanced = QCollapsible("Advanced")
        adv = QWidget()
        adv_form = QFormLayout(adv)
        for label, w in [("LR generator", self.lr_g), ("LR discriminator", self.lr_d), ("LR encoder", self.lr_e),
                         ("Seed", self.seed), ("Checkpoint every", self.checkpoint_every),
                         ("Demo volumes", self.demo_count), ("Conditional", self.conditional),
                         ("Precision", self.precision), ("Training step", self.step),
                         ("Recipe", self.recipe), ("Loss", self.loss), ("Upsampling", self.upsample),
                         ("Generator EMA", self.ema_decay)]:
            adv_form.addRow(label, w)
        advanced.addWidget(adv)

        self.start_button = QPushButton("Start")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        self.plot = LossPlot()

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(advanced)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addWidget(self.plot)

        for w in (self.system, self.preset, self.device):
            w.currentIndexChanged.connect(self._publish_choice)
        self.batch.valueChanged.connect(self._publish_choice)
        self._publish_choice()

    # ---- form -> options -------------------------------------------------------------
    def _publish_choice(self, *_) -> None:
        s = self.state
        s.model, s.preset = self.system.currentData(), self.preset.currentData()
        s.batch_size, s.device = self.batch.value(), self.device.currentData()

    def training_options(self) -> TrainOptions:
        rates = {name: (box.value() or None) for name, box in
                 (("lr_g", self.lr_g), ("lr_d", self.lr_d), ("lr_e", self.lr_e))}
        modality = self.modality_box.currentData()
        return TrainOptions(
            data=self.data.currentText().strip(), out=self.out.text().strip(), model=self.system.currentData(),
            preset=self.preset.currentData(), iterations=self.iterations.value(), batch_size=self.batch.value(),
            resume=self.resume.isChecked(), device=self.device.currentData(), seed=self.seed.value(),
            checkpoint_every=self.checkpoint_every.value(), modality=None if modality == "auto" else modality,
            conditional=self.conditional.isChecked(), precision=self.precision.currentData(),
            step=self.step.currentData(), recipe=self.recipe.currentData(), loss=self.loss.currentData(),
            upsample=self.upsample.currentData(), ema_decay=self.ema_decay.value() or None,
            preview_every=self.preview_every.value(), demo_count=self.demo_count.value() or None, **rates)

    # ---- run -------------------------------------------------------------------------
    def start(self) -> None:
        try:
            options = self.training_options()
            options.validate()
            if not options.data:
                raise ValueError("Choose a data folder or a demo set first.")
        except ValueError as exc:
            notify_error(exc)
            return
        self.options, self.last_report = options, None
        self.plot.clear()
        self.pbar = progress(total=0, desc="preparing data")
        self._set_running(True)
        self.status.setText("Preparing the data…")
        self._failed = False
        stopping = threading.Event()
        self.worker = self.workers.start(training_steps, options, stopping, yielded=self._on_yielded,
                                         errored=self._on_error, finished=self._on_finished, on_quit=stopping.set)

    def stop(self) -> None:
        if self.worker is not None:
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping after the current iteration; saving a checkpoint…"
                                if self.last_report is not None else "Stopping…")
            self.worker.quit()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.state.training = running

    def _on_yielded(self, item) -> None:
        # napari's progress bar processes events when it moves, so a later item (or `finished`) can be
        # handled inside these calls: the bar is always updated last
        if isinstance(item, Preparing) and self.pbar is not None and self.pbar.desc == "preparing data":
            self.status.setText(f"Preparing the data: {item.done} of {item.total} volumes…")
            self.pbar.total = item.total
            self.pbar.update(item.done - self.pbar.n)
        elif isinstance(item, Prepared):
            self.spacing = tuple(item.summary["spacing"])
            self.modality = item.summary["modality"]
            self.status.setText(f"Training on {item.summary['count']} {self.modality.upper()} volumes…")
            preparing, self.pbar = self.pbar, None
            preparing.close()
            self.pbar = progress(total=self.options.iterations, desc="training")
        elif isinstance(item, TrainReport):
            self._on_report(item)

    def _on_report(self, r: TrainReport) -> None:
        self.last_report = r
        self.plot.add(r.iteration, r.losses)
        now = time.monotonic()
        if now - self._drawn_at > 0.25 or r.iteration == r.iterations:
            self.plot.redraw()
            self._drawn_at = now
        if r.preview is not None:
            show_volume(self.viewer, PREVIEW_LAYER, r.preview, self.spacing, self.modality,
                        {"iteration": r.iteration, "checkpoint": r.checkpoint_path})
        self.state.last_run = RunMetrics("training", r.device, r.peak_memory_mb, r.iters_per_s,
                                         detail=f"{self.options.model} {self.options.preset}, "
                                                f"batch {self.options.batch_size}, iteration {r.iteration}")
        losses = ", ".join(f"{LOSS_LABELS[k]} {v:.3g}" for k, v in r.losses.items() if k in LOSS_LABELS)
        self.status.setText(f"Iteration {r.iteration} of {r.iterations}: {losses}. "
                            f"{r.iters_per_s:.2f} it/s, ETA {r.eta_s:.0f} s, peak {r.peak_memory_mb:.0f} MB.")
        if self.pbar is not None:  # last: napari's bar processes events, which may finish the run
            self.pbar.update(r.iteration - self.pbar.n)

    def _on_error(self, exc: BaseException) -> None:
        self._failed = True
        notify_error(exc)
        self.status.setText(f"Failed: {one_sentence(exc)}")

    def _on_finished(self) -> None:
        import torch

        stopped = self.worker is not None and self.worker.abort_requested
        self.plot.redraw()
        if self.pbar is not None:
            self.progress_done = self.pbar.n  # where the bar got to (kept for display and tests)
            self.pbar.close()
        self.pbar, self.worker = None, None
        self._set_running(False)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        ckpt = self.options.checkpoint_path
        if ckpt.is_file() and self.last_report is not None:
            self.state.checkpoint = str(ckpt)
        if self._failed:
            return
        at = self.last_report.iteration if self.last_report else 0
        if stopped and self.last_report is None:
            self.status.setText("Stopped before the first iteration; nothing was trained.")
        elif stopped:
            where = f"checkpoint at {ckpt}" if ckpt.is_file() else "no checkpoint was written"
            self.status.setText(f"Stopped at iteration {at}; {where}.")
        else:
            self.status.setText(f"Finished {at} iterations; checkpoint at {ckpt}.")

    def _closed(self) -> None:
        """The widget went while training (`WorkerGroup` stopped and joined the run): end the run's display."""
        pbar, self.pbar, self.worker = self.pbar, None, None
        self.state.training = False
        if pbar is not None:
            pbar.close()
