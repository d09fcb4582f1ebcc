"""Background work of the widgets, and its errors as one-line notifications.

Every widget starts its background work through its `WorkerGroup`, the one
place that stops it again. When the widget goes (its dock is closed, the viewer
closes, the application quits, the interpreter exits) the group cuts the workers off
the widget's slots, asks each to quit and waits for it (at most `JOIN_TIMEOUT_S`), so
no worker outlives the Qt objects it reports to. A training worker quits by closing
the trainer generator, which writes its checkpoint first.
"""
from __future__ import annotations

import atexit
import logging
import threading
import time
import warnings
import weakref
from typing import Callable

from napari.utils.notifications import notification_manager, show_error
from qtpy.QtCore import QCoreApplication, QEvent, QObject, QThreadPool
from qtpy.QtWidgets import QWidget
from superqt.utils import FunctionWorker, GeneratorWorker, WorkerBase

from ..data import DatasetError
from ..messages import one_line
from ..runtime import CheckpointError
from ..training import TrainingError

log = logging.getLogger(__name__)

#: errors the API raises with a message meant for the user (one sentence)
USER_ERRORS = (DatasetError, TrainingError, CheckpointError, ValueError, MemoryError, OSError)
#: how long closing a widget (or quitting) waits for its workers, in seconds
JOIN_TIMEOUT_S = 30.0


def one_sentence(exc: BaseException) -> str:
    return one_line(exc) or type(exc).__name__


def notify_error(exc: BaseException) -> None:
    """An error as one line in a napari notification, never a traceback.

    A user error is its message; anything else is `unexpected <type>: <first line>`, with
    its traceback in the `napari_crfgan.widgets` log (level DEBUG)."""
    if isinstance(exc, USER_ERRORS):
        show_error(one_sentence(exc))
        return
    log.debug("unexpected error in a napari-crfgan widget", exc_info=exc)
    show_error(f"unexpected {type(exc).__name__}: {one_line(exc) or 'no message'}")


def _relay_warning(args: tuple) -> None:
    notification_manager.receive_warning(*args)


def _is_deleted_qt_object(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "has been deleted" in str(exc)


# ---- workers ------------------------------------------------------------------------
#: the signals a widget connects to (cut when its group closes); `_finished` stays: superqt's bookkeeping
_PUBLIC_SIGNALS = ("started", "yielded", "returned", "errored", "warned", "finished", "aborted", "paused",
                   "resumed")
_LIVE: weakref.WeakSet = weakref.WeakSet()  # every worker started here that may still run


class _Link:
    """What a worker's slots check before they run: cut once the widget's group closes."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


class _Joinable:
    """What both kinds of worker add to superqt's: a quit that reaches the work, join, detach.

    `run` is the worker thread's whole life: it starts at once (no deferred start a blocked
    main thread could never deliver), reports through signals that may already be deleted
    (interpreter exit) without letting that escape into Qt (which aborts the process), and
    marks the worker done last, so `join` means the thread has left the work.
    """

    def _setup(self, on_quit: Callable[[], None] | None) -> None:
        self._on_quit = on_quit
        self._done = threading.Event()
        self.link = _Link()

    def quit(self) -> None:
        super().quit()
        if self._on_quit is not None:
            self._on_quit()

    @property
    def done(self) -> bool:
        """Whether the worker thread has finished (or the worker never ran)."""
        return self._done.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` seconds for the worker thread to finish; whether it did."""
        return self._done.wait(timeout)

    def detach(self) -> None:
        """Cut the widget's slots: nothing this worker still emits reaches the widget."""
        self.link.cut = True
        for name in _PUBLIC_SIGNALS:
            try:
                getattr(self.signals, name).disconnect()
            except (AttributeError, TypeError, RuntimeError):  # no such signal, nothing connected, deleted
                pass

    def start(self) -> None:
        WorkerBase._worker_set.add(self)  # superqt's: keeps the worker until `_finished`
        self.signals._finished.connect(WorkerBase._set_discard)
        _LIVE.add(self)
        QThreadPool.globalInstance().start(self)

    def _emit(self, name: str, *args) -> None:
        if self.link.cut and name != "_finished":
            return
        try:
            getattr(self.signals, name).emit(*args)
        except RuntimeError:  # the signals' Qt object is gone (interpreter exit): nobody is left to tell
            self.link.cut = True

    def run(self) -> None:
        try:
            if not self.abort_requested:  # a worker stopped before a thread took it does no work
                self._running = True
                self._emit("started")
                try:
                    with warnings.catch_warnings():
                        warnings.filterwarnings("always")
                        warnings.showwarning = lambda *w: self._emit("warned", w)
                        result = self.work()
                except Exception as exc:
                    self._emit("errored", exc)
                else:
                    if not self.abort_requested:
                        self._emit("returned", result)
            self._running = False
            self._emit("finished")
            self._emit("_finished", self)
        except BaseException:  # nothing may escape into Qt's thread pool (PyQt aborts the process)
            log.debug("napari-crfgan worker failed while reporting", exc_info=True)
        self._running = False
        self._done.set()  # last: once joined, the interpreter may exit and delete the signals


class ClosingGeneratorWorker(_Joinable, GeneratorWorker):
    """A generator worker that stops between two items and then closes the generator.

    Closing it in the worker thread lets the trainer write its checkpoint (it does so on
    GeneratorExit) before `finished` is emitted. Unlike superqt's loop, a RuntimeError
    raised by the generator (torch raises many) is an error like any other.
    """

    def work(self):
        try:
            while not self.abort_requested:
                try:
                    item = next(self._gen)
                except StopIteration as stop:
                    return stop.value
                self._emit("yielded", item)
            self._emit("aborted")
            return None
        finally:
            self._gen.close()


class JoinableFunctionWorker(_Joinable, FunctionWorker):
    """A function worker: it cannot stop mid-call; quitting drops its result."""


def stop_and_join(workers, timeout: float = JOIN_TIMEOUT_S) -> bool:
    """Detach, quit and join `workers`, waiting `timeout` seconds in all; whether all finished."""
    workers = [w for w in workers if not w.done]
    for w in workers:
        w.detach()
        w.quit()
    deadline = time.monotonic() + timeout
    late = [w for w in workers if not w.join(max(0.0, deadline - time.monotonic()))]
    for w in workers:
        if w.done:
            WorkerBase._worker_set.discard(w)
    if late:
        log.warning("%d napari-crfgan background task(s) still running %.0f s after they were asked to stop",
                    len(late), timeout)
    return not late


def stop_all_workers(timeout: float = JOIN_TIMEOUT_S) -> bool:
    """Stop and join every worker the widgets started (the application quits, the interpreter exits)."""
    return stop_and_join(list(_LIVE), timeout)


atexit.register(stop_all_workers)  # registered after PyQt's own exit handling, so it runs first
_app_hooked: list = []  # the application whose aboutToQuit stops the workers


def _hook_application() -> None:
    app = QCoreApplication.instance()
    if app is not None and not any(a is app for a in _app_hooked):
        app.aboutToQuit.connect(stop_all_workers)
        _app_hooked[:] = [app]


class _CloseWatch(QObject):
    """Event filter on a widget: closed, or taken out of its dock (napari's close button on a dock)."""

    def __init__(self, widget: QWidget, group: WorkerGroup) -> None:
        super().__init__(widget)
        self.group = group
        self.docked = widget.parent() is not None
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        try:
            kind = event.type()
            if kind == QEvent.Type.ParentChange:
                if obj.parent() is not None:
                    self.docked = True
                elif self.docked:
                    self.docked = False
                    self.group.close()
            elif kind == QEvent.Type.Close:
                self.group.close()
        except Exception:  # never into Qt: PyQt aborts on an exception in a virtual method
            log.debug("napari-crfgan close watch failed", exc_info=True)
        return False


class WorkerGroup:
    """The workers one widget started, stopped and joined when the widget goes.

    The widget goes when it is closed, taken out of its dock, or destroyed (the viewer
    closing destroys its docks); the application quitting and the interpreter exiting
    stop every group's workers too. Closing cuts the workers off the widget's slots
    first, so a late emit never reaches a deleted Qt object, then quits them and waits
    for them (at most `timeout` seconds in all), then calls `on_close` (the widget
    resets what the skipped `finished` slots would have reset; errors there are logged).
    """

    def __init__(self, widget: QWidget, on_close: Callable[[], None] | None = None,
                 timeout: float = JOIN_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.workers: list = []
        self._on_close = weakref.WeakMethod(on_close) if on_close is not None else None
        self._watch = _CloseWatch(widget, self)
        widget.destroyed.connect(lambda *_, group=self: group.close())
        _hook_application()

    @property
    def running(self) -> list:
        """The workers of this group still running."""
        return [w for w in self.workers if not w.done]

    def start(self, func: Callable, *args, yielded: Callable | None = None, returned: Callable | None = None,
              errored: Callable | None = None, finished: Callable | None = None,
              on_quit: Callable[[], None] | None = None, **kwargs):
        """Run `func(*args, **kwargs)` (a generator function or a plain one) in a worker of this group.

        The slots run in the main thread; one that raises is one error notification.
        `on_quit` is called (in the calling thread) when the worker is asked to quit.
        """
        import inspect

        cls = ClosingGeneratorWorker if inspect.isgeneratorfunction(func) else JoinableFunctionWorker
        worker = cls(func, *args, **kwargs)
        worker._setup(on_quit)
        link = worker.link
        worker.warned.connect(_guarded(_relay_warning, link))
        worker.errored.connect(_guarded(errored or notify_error, link))
        for signal, slot in (("yielded", yielded), ("returned", returned), ("finished", finished)):
            if slot is not None:
                getattr(worker, signal).connect(_guarded(slot, link))
        self.workers = [*self.running, worker]
        worker.start()
        return worker

    def close(self) -> bool:
        """Stop and join this group's workers; whether all finished in time."""
        workers, self.workers = self.workers, []
        running = [w for w in workers if not w.done]
        if not running:
            return True
        ok = stop_and_join(running, self.timeout)
        hook = self._on_close() if self._on_close is not None else None
        if hook is not None:
            try:
                hook()
            except Exception:  # the widget may be half destroyed: nothing to show it on
                log.debug("napari-crfgan widget cleanup after close failed", exc_info=True)
        return ok


def _guarded(slot: Callable, link: _Link) -> Callable:
    """`slot` for a worker signal: skipped once the link is cut; what it raises is one notification."""

    def call(*args) -> None:
        if link.cut:
            return
        try:
            slot(*args)
        except Exception as exc:
            if _is_deleted_qt_object(exc):
                log.debug("a worker reported to a deleted widget", exc_info=exc)
            else:
                notify_error(exc)

    return call
