"""Train widget: a form for TrainOptions, and a run in a child process (`training.child`).

A worker thread runs `train_in_child`, which starts a child process that prepares the
dataset and trains, and yields what it sends (`Started`, `Preparing`, `Prepared`, then
each `TrainReport`). The child owns the data, the model and the device: when the run
ends, it exits and all the memory it used (GPU memory included) is the system's again,
and a crash in training ends the child, never napari (the widget shows the error).
Stop asks the child to stop after the current iteration and write a checkpoint there
(during the data preparation, at the next prepared volume); its reports until then still
arrive, and the worker ends when the child has exited. Closing the widget or the viewer
stops the run the same way (`WorkerGroup`), and waits for it.

The main thread does little per report: a report is stored and its losses appended to
the plot's curves; every `REFRESH_S` a timer paints the plot, sets the status line, the
shared state and napari's progress bar, and (at most every `PREVIEW_REFRESH_S`) gives
the preview layer the newest preview volume. That layer is made once, hidden, when the
data are ready (making a layer is napari's slowest step), not at the first preview.

The module imports no torch: `_bind` (run in the import thread when the first dock
opens, see `_loading`) imports the API and binds its names here.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from napari.utils import progress
from napari.utils.theme import get_theme
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLineEdit, QPushButton, QVBoxLayout,
                            QWidget)
from superqt import QCollapsible

from ._helpers import WrapLabel, combo, path_row, rate_spin, scroll_area, show_volume, spin, start_worker
from ._loading import LazyWidget, bound_getattr
from ._plot import LossPlot

PREVIEW_LAYER = "training preview"
#: how often (seconds) the plot, status line, shared state and progress bar follow the run
REFRESH_S = 0.5
#: how often (seconds) at most the preview layer gets a new volume
PREVIEW_REFRESH_S = 2.0
#: the widget's preview interval (TrainOptions' default, 0, shows none)
PREVIEW_EVERY = 50
APP_NAME = "napari-crfgan"
#: the device list's "all GPUs (N)": one training process per GPU, started by torchrun
ALL_GPUS = "all-gpus"

MODULES = ("torch", "napari_crfgan.training", "napari_crfgan.widgets._workers", "napari_crfgan.widgets._state",
           "scipy.ndimage")
_bound = False


def _bind() -> None:
    """Import what the form and the run need (torch among it) as this module's globals, once (see `_loading`)."""
    global _bound, DEMO_DATASETS, DEMO_MASKS, MASK_DEMOS, uses_masks, PRESETS, SYSTEMS, LOSSES, STEPS, UPSAMPLING
    global RECIPES, RECOMMENDED, PRECISIONS
    global GPUS, TrainOptions, TrainReport, train_in_child, Started, Preparing, Prepared, WorkerGroup, notify_error
    global one_sentence, RunMetrics, training_orientation
    global state_for, DEVICES, SYSTEM_CHOICES, LOSS_LABELS, DIAGNOSTIC_LABELS, DEFAULTS, HELP
    if _bound:
        return
    import scipy.ndimage  # noqa: F401 (napari imports it for the first image layer: here, off the main thread)

    from ..data import DEMO_DATASETS, DEMO_MASKS, MASK_DEMOS
    from ..model import PRESETS, SYSTEMS, uses_masks
    from ..model.presets import LOSSES, STEPS, UPSAMPLING
    from ..model.recipes import RECIPES, RECOMMENDED
    from ..runtime import available_devices, gpu_count
    from ..sampling import training_orientation
    from ..training import TrainOptions, TrainReport
    from ..training.child import Prepared, Preparing, Started, train_in_child
    from ..training.options import PRECISIONS
    from ._state import RunMetrics, state_for
    from ._workers import WorkerGroup, notify_error, one_sentence

    DEVICES = available_devices()  # once: it asks CUDA
    GPUS = gpu_count()
    SYSTEM_CHOICES = [(spec.display_name, name) for name, spec in SYSTEMS.items()]
    #: every loss any system logs -> its label in the plot and the status line
    LOSS_LABELS = {k: v for spec in SYSTEMS.values() for k, v in spec.loss_labels.items()}
    DIAGNOSTIC_LABELS = {k: v for spec in SYSTEMS.values() for k, v in spec.diagnostic_labels.items()}
    DEFAULTS = TrainOptions()
    #: each TrainOptions field's help: the form's tooltips
    HELP = {name: f.metadata["help"] for name, f in TrainOptions.__dataclass_fields__.items()}
    _bound = True


__getattr__ = bound_getattr(_bind, MODULES, globals())


def device_choices(devices: list[str], gpus: int) -> list[tuple[str, str]]:
    """The device list: each device, and "all GPUs (N)" (one torchrun process per GPU) when N > 1."""
    choices = [(d, d) for d in devices]
    return choices + [(f"all GPUs ({gpus})", ALL_GPUS)] if gpus > 1 else choices


def default_run_folder(name: str) -> Path:
    """`<the user's data directory>/napari-crfgan/runs/<name>`: absolute, and not wherever napari was started."""
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False)) / "runs" / name


class TrainWidget(LazyWidget):
    _bind = staticmethod(_bind)
    _modules = MODULES

    def _setup(self) -> None:
        self.worker = None
        self.pbar = None
        self.options: TrainOptions | None = None
        self.spacing = (1.0, 1.0, 1.0)
        self.direction = None  # the training data's axis directions (None: axis-aligned)
        self.modality = "mri"
        self.last_report: TrainReport | None = None
        self._failed = ""  # the failure shown, once the run failed
        self._dirty = False  # reports came since the last refresh
        self._preview: TrainReport | None = None  # the newest report with a preview not shown yet
        self._preview_at = 0.0
        self._auto_out = ""  # the default output folder last filled in (followed until someone edits it)
        self.progress_done = 0
        self.child_pid: int | None = None  # the training process of the current (or last) run
        self._stopping = threading.Event()  # set: the run is asked to stop

    def _build(self) -> None:  # long: the form, one row per field
        self.state = state_for(self.viewer)
        self.workers = WorkerGroup(self, on_close=self._closed)
        tip = HELP

        self.data = QComboBox()
        self.data.setEditable(True)
        self.data.addItems(DEMO_DATASETS)
        self.data.setToolTip(tip["data"])
        self.masks = QLineEdit()
        self.masks.setToolTip(tip["masks"])
        self.masks.setPlaceholderText(f"latent models: none; demo-chest's own: {DEMO_MASKS}")
        self.modality_box = combo(["auto", "ct", "mri"], "auto", f"{tip['modality']}; auto: CT when the data look "
                                                                 "like HU")
        self.system = combo(SYSTEM_CHOICES, self.state.model, tip["model"])
        self.preset = combo(list(PRESETS), self.state.preset, tip["preset"])
        self.batch = spin(self.state.batch_size, 1, 512, tip["batch_size"])
        self.iterations = spin(DEFAULTS.iterations, 1, 10_000_000, tip["iterations"])
        self.preview_every = spin(PREVIEW_EVERY, 0, 1_000_000, tip["preview_every"])
        device = ALL_GPUS if self.state.processes > 1 else self.state.device
        self.device = combo(device_choices(DEVICES, GPUS), device, f"{tip['device']}; all GPUs: {tip['processes']}")
        self.out = QLineEdit()
        self.out.setToolTip(tip["out"])
        self.out_full = WrapLabel()  # the whole path: the line edit shows only part of a long one
        self.out_full.setEnabled(False)  # greyed: information, not a field
        self.resume = QCheckBox("continue the checkpoint in the output folder")
        self.resume.setToolTip(tip["resume"])

        form = QFormLayout()
        form.addRow("Data", path_row(self.data, True, "Dataset folder"))
        form.addRow("Masks", path_row(self.masks, True, "Masks folder"))
        form.addRow("Modality", self.modality_box)
        form.addRow("System", self.system)
        form.addRow("Preset", self.preset)
        form.addRow("Batch size", self.batch)
        form.addRow("Iterations", self.iterations)
        form.addRow("Preview every", self.preview_every)
        form.addRow("Device", self.device)
        form.addRow("Output folder", path_row(self.out, True, "Output folder"))
        form.addRow("", self.out_full)
        form.addRow("Resume", self.resume)

        self.lr_g, self.lr_d, self.lr_e = (rate_spin(tip[name]) for name in ("lr_g", "lr_d", "lr_e"))
        self.seed = spin(DEFAULTS.seed, 0, 2**31 - 1, tip["seed"])
        self.checkpoint_every = spin(DEFAULTS.checkpoint_every, 1, 10_000_000, tip["checkpoint_every"])
        self.demo_count = spin(0, 0, 10_000, f"{tip['demo_count']} (0: the demo's default)")
        self.demo_count.setSpecialValueText("default")
        self.conditional = QCheckBox("class-conditional on labels.csv")
        self.conditional.setToolTip(tip["conditional"])
        self.precision = combo(list(PRECISIONS), DEFAULTS.precision, tip["precision"])
        self.step = combo([("preset's (reference)", None), *((s, s) for s in STEPS)], None, tip["step"])
        # the recommended recipe first and chosen (crfgan train's default stays the papers' own)
        self.recipe = combo([(f"{RECOMMENDED} (recommended)", RECOMMENDED),
                             *((n, n) for n in RECIPES if n != RECOMMENDED)], RECOMMENDED, tip["recipe"])
        self.loss = combo([("recipe's", None), *((x, x) for x in LOSSES)], None, tip["loss"])
        self.upsample = combo([("recipe's", None), *((x, x) for x in UPSAMPLING)], None, tip["upsample"])
        self.ema_decay = rate_spin(f"{tip['ema_decay']} (0 here: the recipe's)")
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
        self.start_button.setToolTip("prepare the data and train in the background (the viewer stays usable)")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("stop after the current iteration and write a checkpoint there")
        self.stop_button.setEnabled(False)
        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        self.status = WrapLabel("Ready.")
        self.plot = LossPlot(LOSS_LABELS, DIAGNOSTIC_LABELS)

        body = QWidget()
        column = QVBoxLayout(body)
        column.addLayout(form)
        column.addWidget(advanced)
        column.addStretch()
        layout = self.layout()
        layout.addWidget(scroll_area(body), 2)  # the form scrolls; the buttons, status and plot stay in view
        below = QVBoxLayout()
        below.setContentsMargins(9, 0, 9, 9)
        below.addLayout(buttons)
        below.addWidget(self.status)
        below.addWidget(self.plot, 1)
        layout.addLayout(below, 1)

        self._refresh_timer = QTimer(self)
        self._refresh_timer.setInterval(int(REFRESH_S * 1000))
        self._refresh_timer.timeout.connect(self._refresh)
        for w in (self.system, self.preset, self.device, self.precision):
            w.currentIndexChanged.connect(self._publish_choice)
        self.batch.valueChanged.connect(self._publish_choice)
        self.system.currentIndexChanged.connect(self._suggest_masks)
        self.out.textChanged.connect(self._show_out)
        self._publish_choice()
        self.viewer.events.theme.connect(self._apply_theme)
        self._apply_theme()

    # ---- form -> options -------------------------------------------------------------
    def _publish_choice(self, *_) -> None:
        s = self.state
        s.model, s.preset = self.system.currentData(), self.preset.currentData()
        s.batch_size, s.precision = self.batch.value(), self.precision.currentData()
        s.device, s.processes = self._device_and_processes()
        if self.out.text() == self._auto_out:  # nobody chose a folder: the default follows the choice
            self._auto_out = str(default_run_folder(f"{s.model}-{s.preset}"))
            self.out.setText(self._auto_out)

    def _suggest_masks(self, *_) -> None:
        """A mask model on a demo set with masks: its own masks, unless a folder was chosen; a latent model
        takes none."""
        mask_model = uses_masks(self.system.currentData())
        if mask_model and not self.masks.text().strip() and self.data.currentText().strip() in MASK_DEMOS:
            self.masks.setText(DEMO_MASKS)
        elif not mask_model and self.masks.text().strip() == DEMO_MASKS:
            self.masks.clear()

    def _device_and_processes(self) -> tuple[str, int]:
        choice = self.device.currentData()
        return ("cuda", GPUS) if choice == ALL_GPUS else (choice, 1)

    def _show_out(self, text: str) -> None:
        text = text.strip()
        self.out_full.setText(f"writes {Path(text).expanduser().absolute() / 'checkpoint.pt'}" if text else "")

    def _apply_theme(self, *_) -> None:
        self.plot.set_theme(get_theme(self.viewer.theme))

    def training_options(self) -> TrainOptions:
        rates = {name: (box.value() or None) for name, box in
                 (("lr_g", self.lr_g), ("lr_d", self.lr_d), ("lr_e", self.lr_e))}
        modality = self.modality_box.currentData()
        device, processes = self._device_and_processes()
        return TrainOptions(
            data=self.data.currentText().strip(), masks=self.masks.text().strip(), out=self.out.text().strip(),
            model=self.system.currentData(),
            preset=self.preset.currentData(), iterations=self.iterations.value(), batch_size=self.batch.value(),
            resume=self.resume.isChecked(), device=device, processes=processes, seed=self.seed.value(),
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
        self._preview, self._dirty = None, False
        self.plot.clear()
        self.pbar = progress(total=0, desc="preparing data")
        self._set_running(True)
        self.status.setText("Starting the training process…")
        self._failed, self.child_pid = "", None
        self._stopping = threading.Event()
        self.worker = start_worker(self.workers, train_in_child, options, self._stopping, yielded=self._on_yielded,
                                   errored=self._on_error, finished=self._on_finished, on_quit=self._stopping.set)

    def stop(self) -> None:
        if self.worker is not None:
            self.stop_button.setEnabled(False)
            self.status.setText("Stopping after the current iteration; saving a checkpoint…"
                                if self.last_report is not None else "Stopping…")
            # not worker.quit(): the reports the child sends until it has stopped still arrive, so the
            # last one shown is the checkpoint's iteration (closing the widget quits the worker)
            self._stopping.set()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.state.training = running

    def _on_yielded(self, item) -> None:
        # napari's progress bar processes events when it moves, so a later item (or `finished`) can be
        # handled inside these calls: the bar is always updated last
        if isinstance(item, TrainReport):
            self._on_report(item)
        elif isinstance(item, Started):
            self.child_pid = item.pid
            self.status.setText(f"Training process {item.pid} started; preparing the data…")
        elif isinstance(item, Preparing) and self.pbar is not None and self.pbar.desc == "preparing data":
            self.status.setText(f"Preparing the data: {item.done} of {item.total} volumes…")
            self.pbar.total = item.total
            self.pbar.update(item.done - self.pbar.n)
        elif isinstance(item, Prepared):
            self.spacing = tuple(item.summary["spacing"])
            self.direction = training_orientation(item.summary)[1]
            self.modality = item.summary["modality"]
            self.status.setText(f"Training on {item.summary['count']} {self.modality.upper()} volumes…")
            if self.options.preview_every:
                self._make_preview_layer()
            self._refresh_timer.start()
            preparing, self.pbar = self.pbar, None
            preparing.close()
            self.pbar = progress(total=self.options.iterations, desc="training")

    def _make_preview_layer(self) -> None:
        """The preview layer, hidden until the first preview: made now, not in the middle of the run."""
        if PREVIEW_LAYER in self.viewer.layers:
            return
        size = PRESETS[self.options.preset].size
        layer = show_volume(self.viewer, PREVIEW_LAYER, np.zeros((size,) * 3, np.float32), self.spacing,
                            self.modality, {"iteration": 0}, direction=self.direction)
        layer.visible = False

    def _on_report(self, r: TrainReport) -> None:
        """Store the report (the refresh timer shows it): no drawing here."""
        self.last_report = r
        self.plot.add(r.iteration, r.losses)
        if r.preview is not None:
            self._preview = r
        self._dirty = True

    def _refresh(self, final: bool = False) -> None:
        """Show the newest report: plot, preview (at most every PREVIEW_REFRESH_S), state, status, bar."""
        r = self.last_report
        if r is None or not (self._dirty or final):
            return
        self._dirty = False
        self.plot.redraw()
        now = time.monotonic()
        if self._preview is not None and (final or now - self._preview_at >= PREVIEW_REFRESH_S):
            p, self._preview, self._preview_at = self._preview, None, now
            layer = show_volume(self.viewer, PREVIEW_LAYER, p.preview, self.spacing, self.modality,
                                {"iteration": p.iteration, "checkpoint": p.checkpoint_path}, direction=self.direction)
            if not layer.visible:
                layer.visible = True
        self.state.last_run = RunMetrics("training", r.device, r.peak_memory_mb, r.iters_per_s,
                                         detail=f"{self.options.model} {self.options.preset}, "
                                                f"batch {self.options.batch_size}, iteration {r.iteration}")
        losses = ", ".join(f"{LOSS_LABELS[k]} {v:.3g}" for k, v in r.losses.items() if k in LOSS_LABELS)
        if self._stopping.is_set() and not final:
            self.status.setText(f"Stopping after iteration {r.iteration}; saving a checkpoint…")
        else:
            self.status.setText(f"Iteration {r.iteration} of {r.iterations}: {losses}. {r.iters_per_s:.2f} it/s, "
                                f"ETA {r.eta_s:.0f} s; on {r.device}, peak {r.peak_memory_mb:.0f} MB "
                                f"(process {self.child_pid}).")
        if self.pbar is not None:  # last: napari's bar processes events, which may finish the run
            self.pbar.update(r.iteration - self.pbar.n)

    def _on_error(self, exc: BaseException) -> None:
        self._failed = f"Failed: {one_sentence(exc)}"  # kept: the final refresh would show the last report
        notify_error(exc)
        self.status.setText(self._failed)

    def _on_finished(self) -> None:
        stopped = self._stopping.is_set()
        self._refresh_timer.stop()
        self._refresh(final=True)
        if self.pbar is not None:
            self.progress_done = self.pbar.n  # where the bar got to (kept for display and tests)
            self.pbar.close()
        self.pbar, self.worker = None, None
        self._set_running(False)
        ckpt = self.options.checkpoint_path
        if ckpt.is_file() and self.last_report is not None:
            self.state.checkpoint = str(ckpt)
        if self._failed:
            self.status.setText(self._failed)
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
        self._refresh_timer.stop()  # last: the timer may be deleted with the widget already
