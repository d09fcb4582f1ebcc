"""Device choice: made once, from a name, then passed in."""
from __future__ import annotations

import os

import torch

from .. import distributed


def available_devices() -> list[str]:
    """'auto' plus every device that exists here: cpu, cuda:N, mps."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def gpu_count() -> int:
    """The CUDA devices visible here (0 without CUDA)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        for candidate in available_devices()[2:]:
            return torch.device(candidate)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; available: {', '.join(available_devices())}") from None
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda:0")
    if device.type != "cpu" and str(device) not in available_devices():
        raise ValueError(f"device {name} is not available here; available: {', '.join(available_devices())}")
    return device


def process_device(name: str = "auto") -> torch.device:
    """The device of this process: `resolve_device(name)`, or under torchrun this rank's (`auto` and `cuda`
    mean cuda:LOCAL_RANK, `auto` without CUDA the CPU), after joining the process group."""
    if not distributed.launched():
        return resolve_device(name)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if name in ("auto", "cuda") and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise ValueError(f"local rank {local} has no GPU: {torch.cuda.device_count()} are visible; start at "
                             "most that many processes per node")
        name = f"cuda:{local}"
    elif name == "auto":
        name = "cpu"
    device = resolve_device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.join(device)
    return device
