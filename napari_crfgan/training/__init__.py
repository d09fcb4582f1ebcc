"""Training: the report-yielding trainer, checkpoints, devices and memory."""
from .checkpoint import CHECKPOINT_NAME, Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .devices import PeakMemory, available_devices, resolve_device
from .trainer import TrainingError, TrainOptions, TrainReport, prepare_dataset, train

__all__ = [
    "CHECKPOINT_NAME", "Checkpoint", "CheckpointError", "PeakMemory", "TrainOptions", "TrainReport",
    "TrainingError", "available_devices", "load_checkpoint", "prepare_dataset", "resolve_device",
    "save_checkpoint", "train",
]
