"""torch's CPU thread settings, changed only inside a context that restores them.

torch.set_num_threads is process-wide: a library function that set it and returned
would leave a napari session (or the next run in the same process) with whatever the
last run chose. `torch_threads` sets the count and flush-to-zero for denormals (a
denormal Adam moment slows CPU steps several-fold) and puts both back on exit.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

_lock = threading.Lock()
_denormal_depth = 0  # nested contexts that want flush-to-zero; torch has no getter to restore from


@contextlib.contextmanager
def torch_threads(threads: int | None = None, flush_denormal: bool = True) -> Iterator[int]:
    """Run the block with `threads` torch CPU threads (None: leave the count as it is).

    Yields the thread count in force inside the block.
    """
    global _denormal_depth
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    before = torch.get_num_threads()
    with _lock:
        if threads:
            torch.set_num_threads(threads)
        if flush_denormal:
            _denormal_depth += 1
            torch.set_flush_denormal(True)
    try:
        yield torch.get_num_threads()
    finally:
        with _lock:
            if threads:
                torch.set_num_threads(before)
            if flush_denormal:
                _denormal_depth -= 1
                if _denormal_depth == 0:
                    torch.set_flush_denormal(False)  # torch's default
