"""What a training process sends its parent, and the loop that sends it.

Shared by the one training child (`child.py`) and each torchrun rank the child starts
for a multi-process run (`ranks.py`): messages are `(kind, payload)` pairs, kind
"item" (Started, Preparing, Prepared, a TrainReport), "warning" or "error".
"""
from __future__ import annotations

import importlib
import pickle
import warnings
from dataclasses import dataclass
from typing import Callable

from .. import distributed
from .options import TrainOptions
from .trainer import prepare_dataset


#: how often (seconds) a waiting parent looks at its stop request and at its child
POLL_S = 0.1


@dataclass(frozen=True)
class Started:
    """The child process runs (its id, for the user and for tests)."""
    pid: int


@dataclass(frozen=True)
class Preparing:
    done: int
    total: int


@dataclass(frozen=True)
class Prepared:
    summary: dict


class _Stopped(Exception):
    """Raised in the child's data preparation, at its next progress report, once a stop is asked."""


def resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def portable(exc: BaseException) -> bytes:
    """`exc` pickled, or a RuntimeError with its type and message where it does not survive pickling."""
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)
        return blob
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def relay_warnings(send: Callable[[str, object], None]) -> None:
    """Send this process's warnings to the parent, which issues them again."""
    def relay(message, category, filename, lineno, file=None, line=None) -> None:
        send("warning", (str(message), category.__module__, category.__qualname__, str(filename), lineno))

    warnings.simplefilter("default")  # each warning once per place, as a parent's default would show it
    warnings.showwarning = relay


def train_and_send(options: TrainOptions, target: str, send: Callable[[str, object], None],
                   stopping: Callable[[], bool]) -> None:
    """Prepare the data and train, sending Preparing, Prepared and each report. Under torchrun every rank
    runs this (rank 0's `send` reaches the parent) and all stop after the same iteration."""
    def progress(done: int, total: int) -> None:
        if stopping():
            raise _Stopped
        send("item", Preparing(done, total))

    try:
        dataset = prepare_dataset(options, progress=progress)
    except _Stopped:
        return
    if stopping():
        return
    send("item", Prepared(dataset.summary()))
    steps = resolve(target)(options, dataset)
    try:
        for report in steps:
            send("item", report)
            if distributed.any_rank(stopping()):
                break
    finally:
        steps.close()  # a stopped trainer writes its checkpoint here


