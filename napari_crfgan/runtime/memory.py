"""Peak memory of a piece of work, measured the same way on every device and for every system."""
from __future__ import annotations

import ctypes
import gc

import torch


def _release_freed_heap() -> None:
    """Hand memory that earlier work freed back to the OS (glibc's malloc_trim), so that
    work after this point grows the resident set instead of silently reusing those pages."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def available_memory_mb(device: torch.device) -> float | None:
    """Free memory on `device` in MB (CPU: MemAvailable), or None when unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / 2**20
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
    return None


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


class PeakMemory:
    """Peak memory of the work done since `reset()`, in MB, measured the same way for both systems.

    CUDA: torch.cuda.max_memory_allocated. CPU (Linux): the process's peak resident
    set (VmHWM) minus its resident set at reset; the kernel's peak counter is reset
    through /proc/self/clear_refs so only the work after reset counts. Freed heap
    memory is returned to the OS first, or a second run in a long-lived process (a
    napari session) would reuse the first run's pages and report almost nothing.
    Where that is not possible (not Linux), it reports -1.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline_kb = 0
        self.available = True
        self.reset()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        try:
            _release_freed_heap()
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.baseline_kb = _proc_status_kb("VmRSS")
        except OSError:
            self.available = False

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.device.type == "mps":
            return torch.mps.driver_allocated_memory() / 2**20
        if not self.available:
            return -1.0
        return max(_proc_status_kb("VmHWM") - self.baseline_kb, 0) / 1024
