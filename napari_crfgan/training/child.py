"""Training in a child process that owns the data, the model and the device.

The napari widget trains this way: when the run stops or finishes, the child exits and
every byte it used goes back to the system (GPU memory too: CUDA frees a context only
with its process), and a crash in training (a segfault, the out-of-memory killer) ends
the child, not napari.

`train_in_child` is a generator for a worker thread of the parent. It starts the child
(spawn: a fresh interpreter, never a fork of a process that runs Qt threads) and yields
what the child sends, in order: `Started`, `Preparing`..., `Prepared`, then each
`TrainReport`. Setting `stopping` (or closing the generator) asks the child to stop:
during the data preparation at its next volume, during training after the current
iteration, where the trainer writes its checkpoint. The generator ends only once the
child has exited. Warnings of the child are issued again in the parent, where the
caller's warning handling sees them; an error of the child is raised in the parent, as
the same exception where it survives pickling. The child also stops (and keeps its
checkpoint) when the parent dies.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import traceback
import warnings
from typing import Iterator

from .options import TrainOptions
from .ranks import train_on_ranks
from .sending import POLL_S, Prepared, Preparing, Started, portable, relay_warnings, resolve, train_and_send
from .trainer import TrainingError

__all__ = ["Prepared", "Preparing", "Started", "train_in_child"]

log = logging.getLogger(__name__)

#: the function the child trains with, `module:name`, called as `train(options, dataset)`
TRAIN_TARGET = "napari_crfgan.training.trainer:train"
#: how long (seconds) a stopped child may take to write its checkpoint and exit
EXIT_TIMEOUT_S = 120.0
PROCESS_NAME = "crfgan-train"


# ---- the child ----------------------------------------------------------------------
def _child(options: TrainOptions, target: str, channel, stop) -> None:
    """The child's whole life: prepare the data, train (here, or on `options.processes` ranks), send
    everything to the parent, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (Ctrl-C in its terminal reaches us too)
    parent = mp.parent_process()

    def stopping() -> bool:
        return stop.is_set() or (parent is not None and not parent.is_alive())

    def send(kind: str, payload) -> None:
        channel.put((kind, payload))

    try:
        send("item", Started(os.getpid()))
        if options.processes > 1:
            train_on_ranks(options, target, send, stopping)
        else:
            relay_warnings(send)
            train_and_send(options, target, send, stopping)
        send("done", None)
    except BaseException as exc:
        send("error", (portable(exc), traceback.format_exc()))
    finally:
        channel.close()
        channel.join_thread()  # everything sent has reached the pipe before the process exits


# ---- the parent ---------------------------------------------------------------------
def _warn_again(message: str, module: str, qualname: str, filename: str, lineno: int) -> None:
    try:
        category = resolve(f"{module}:{qualname}")
        if not (isinstance(category, type) and issubclass(category, Warning)):
            raise TypeError
    except Exception:  # a category the parent cannot import
        category = UserWarning
    warnings.warn_explicit(message, category, filename, lineno)


def _ended_unexpectedly(proc, options: TrainOptions) -> TrainingError:
    """The error for a child that exited without a word (a crash; short: the path must fit one line)."""
    code = proc.exitcode
    if code is not None and code < 0:
        how = f"killed by signal {-code}" + (" (often out of memory)" if -code == getattr(signal, "SIGKILL", 9) else "")
    else:
        how = f"ended with exit code {code}"
    kept = f"; its last checkpoint is kept: {options.checkpoint_path}" if options.checkpoint_path.is_file() else ""
    return TrainingError(f"The training process was {how}{kept}.")


def _wind_down(proc, channel) -> None:
    """Wait for a child that was asked to stop (emptying its channel so it can exit); kill it if it hangs."""
    remaining = EXIT_TIMEOUT_S
    while proc.is_alive() and remaining > 0:
        try:
            channel.get(timeout=POLL_S)
        except queue.Empty:
            remaining -= POLL_S
        except (EOFError, OSError, pickle.UnpicklingError):
            break
    proc.join(timeout=max(remaining, 1.0))
    if proc.is_alive():
        log.warning("the training process %s did not stop in %.0f s; killing it", proc.pid, EXIT_TIMEOUT_S)
        proc.kill()
        proc.join(timeout=10)
    channel.close()
    channel.join_thread()


def train_in_child(options: TrainOptions, stopping: threading.Event | None = None,
                   target: str | None = None) -> Iterator:
    """Prepare the data and train in a child process, yielding Started, Preparing..., Prepared, TrainReports.

    `target` (default: `TRAIN_TARGET`, read at the call) names the training function."""
    stopping = threading.Event() if stopping is None else stopping
    target = target or TRAIN_TARGET
    ctx = mp.get_context("spawn")
    channel, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_child, args=(options, target, channel, stop), name=PROCESS_NAME, daemon=True)
    proc.start()
    try:
        while True:
            if stopping.is_set():
                stop.set()
            try:
                kind, payload = channel.get(timeout=POLL_S)
            except queue.Empty:
                if proc.is_alive():
                    continue
                try:  # it may have sent its last words just before it exited
                    kind, payload = channel.get(timeout=POLL_S)
                except queue.Empty:
                    raise _ended_unexpectedly(proc, options) from None
            if kind == "item":
                yield payload
            elif kind == "warning":
                _warn_again(*payload)
            elif kind == "error":
                blob, child_traceback = payload
                log.debug("the training process failed:\n%s", child_traceback)
                raise pickle.loads(blob)
            else:  # done
                return
    finally:
        stop.set()
        _wind_down(proc, channel)
