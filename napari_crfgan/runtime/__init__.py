"""What training and inference both need, so neither depends on the other:
device choice, peak-memory measurement, torch thread settings and checkpoint I/O."""
from .checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .devices import available_devices, gpu_count, process_device, resolve_device
from .memory import PeakMemory
from .threads import torch_threads

__all__ = [
    "CHECKPOINT_NAME", "Checkpoint", "CheckpointError", "PeakMemory", "available_devices", "gpu_count",
    "load_checkpoint", "process_device", "resolve_device", "save_checkpoint", "torch_threads",
]
