"""Opening a dock without the wait of importing torch: the widget's form is built once a thread has imported it.

A widget module imports only Qt, napari and the light modules of this package (`_helpers`,
`_plot`, this one); everything that imports torch (the API, `_workers`, `_state`) is imported
by the module's own `_bind` function, into the module's globals (`global` names, once).
Opening a dock the first time in a session runs that function in one background thread (shared
by every widget, so no two threads import the same modules at once) while the dock shows
"Loading…"; the form is built on the main thread when it is done (a 50 ms timer looks). When
everything is imported already, the form is built at once.

Code that drives a widget right after opening it (a script, a test) may read a form field at
once: reading a form attribute before the form is there waits for the import and builds it.
Reading one of those module globals from outside before any dock was opened (a test's
monkeypatch) imports them the same way (`bound_getattr`, the module's `__getattr__`).
"""
from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Callable

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QProgressBar, QVBoxLayout, QWidget

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)
LOADING_TEXT = "Loading PyTorch and the napari-crfgan models (the first dock of a session takes a few seconds)…"
POLL_MS = 50


class _Job:
    def __init__(self, bind: Callable[[], None]) -> None:
        self.bind = bind
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.bind()
        except BaseException as exc:  # shown in the widget; a later dock tries again
            self.error = exc
            log.debug("napari-crfgan could not import what a widget needs", exc_info=exc)
        finally:
            self.done.set()


_lock = threading.Lock()
_jobs: dict[Callable, _Job] = {}
_pending: list[_Job] = []
_thread: threading.Thread | None = None


def _run_pending() -> None:
    global _thread
    while True:
        with _lock:
            if not _pending:
                _thread = None
                return
            job = _pending.pop(0)
        job.run()
        if job.error is not None:
            with _lock:
                _jobs.pop(job.bind, None)


def request(bind: Callable[[], None], modules: tuple[str, ...]) -> _Job:
    """The import job of `bind`: done already, run here at once (all `modules` imported), or queued."""
    global _thread
    with _lock:
        job = _jobs.get(bind)
        now = False
        if job is None:
            job = _jobs[bind] = _Job(bind)
            now = all(m in sys.modules for m in modules)
            if not now:
                _pending.append(job)
                if _thread is None:
                    # not a daemon: an interpreter exiting waits for the import instead of freezing it half done
                    _thread = threading.Thread(target=_run_pending, name="crfgan-import")
                    _thread.start()
    if now:
        job.run()
        if job.error is not None:
            with _lock:
                _jobs.pop(bind, None)
    return job


def bound_getattr(bind: Callable[[], None], modules: tuple[str, ...], namespace: dict) -> Callable[[str], object]:
    """A module `__getattr__` (PEP 562): a name `bind` binds, read before it ran, runs it first (once)."""

    def __getattr__(name: str):
        if not name.startswith("_"):
            job = request(bind, modules)
            job.done.wait()
            if name in namespace:
                return namespace[name]
        raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")

    return __getattr__


class LazyWidget(QWidget):
    """A dock widget whose form (`_build`) is built once its module's `_bind` has imported what it needs.

    Subclasses set `_bind` (the module's function, as a staticmethod), `_modules` (what it
    imports: when all are imported already the form is built at once) and implement `_build`,
    which adds the form to `self.layout()`; `_setup` sets the plain attributes the widget has
    before its form is built.
    """

    _bind: Callable[[], None]
    _modules: tuple[str, ...] = ()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:  # napari finds the viewer argument by this annotation
        super().__init__()
        self.viewer = viewer
        self._ready = False
        self._setup()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._placeholder = QWidget()
        column = QVBoxLayout(self._placeholder)
        self._loading_label = QLabel(LOADING_TEXT)
        self._loading_label.setWordWrap(True)
        busy = QProgressBar()
        busy.setRange(0, 0)  # a busy bar: no steps to count
        busy.setTextVisible(False)
        column.addWidget(self._loading_label)
        column.addWidget(busy)
        column.addStretch()
        layout.addWidget(self._placeholder)
        self._poll: QTimer | None = None
        self._job = request(type(self)._bind, self._modules)
        if self._job.done.is_set():
            self._finish()
        else:
            self._poll = QTimer(self)
            self._poll.setInterval(POLL_MS)
            self._poll.timeout.connect(self._check)
            self._poll.start()

    @property
    def ready(self) -> bool:
        """Whether the form is built."""
        return self._ready

    def wait_until_ready(self) -> bool:
        """Wait (blocking) for the import and build the form now; whether it is built."""
        if not self._ready:
            self._job.done.wait()
            self._finish()
        return self._ready

    def _check(self) -> None:
        if self._job.done.is_set():
            self._finish()

    def _finish(self) -> None:
        if self._ready:
            return
        if self._poll is not None:
            self._poll.stop()
        if self._job.error is not None:
            first = (str(self._job.error).strip().splitlines() or [""])[0]
            self._loading_label.setText(f"napari-crfgan could not load: {type(self._job.error).__name__}: {first}")
            return
        self._ready = True
        self._placeholder.hide()
        self.layout().removeWidget(self._placeholder)
        self._placeholder.deleteLater()
        self._build()

    def _setup(self) -> None:
        """Attributes the widget has before its form is built."""

    def _build(self) -> None:
        raise NotImplementedError

    def __getattr__(self, name: str):
        # only called for attributes not found: a form field read before the form is built. Only names
        # `_build` uses count (napari probes a dock's widget for `reset_choices`, `native`: no wait for those)
        state = self.__dict__
        if (name.startswith("_") or state.get("_ready", True) or "_job" not in state
                or name not in type(self)._build.__code__.co_names):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        if not self.wait_until_ready():
            raise AttributeError(f"{name}: the widget could not load ({self._job.error})")
        return getattr(self, name)
