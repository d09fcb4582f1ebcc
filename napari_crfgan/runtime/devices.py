"""Device choice: made once, from a name, then passed in."""
from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """'auto' plus every device that exists here: cpu, cuda:N, mps."""
    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


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
