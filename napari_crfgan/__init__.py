"""napari-crfgan: memory-efficient 3D GANs for high-resolution medical volumes.

The public Python API (no napari or Qt needed):
    TrainOptions, train, prepare_dataset    -- training as a generator of TrainReport
    Sampler                                  -- load a checkpoint, sample, interpolate, CRF maps
    load_checkpoint, get_config, PRESETS     -- checkpoints and model configurations
    VolumeDataset, read_nifti, write_nifti   -- data
"""
from .data import DatasetError, VolumeDataset, read_nifti, write_nifti
from .model import PRESETS, SYSTEMS, ModelConfig, build_system, get_config
from .sampling import ConsistencyMap, GeneratedVolume, Sampler
from .training import (CheckpointError, TrainingError, TrainOptions, TrainReport, available_devices,
                       load_checkpoint, prepare_dataset, train)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConsistencyMap", "DatasetError", "GeneratedVolume", "ModelConfig", "PRESETS",
    "SYSTEMS", "Sampler", "TrainOptions", "TrainReport", "TrainingError", "VolumeDataset",
    "available_devices", "build_system", "get_config", "load_checkpoint", "prepare_dataset",
    "read_nifti", "train", "write_nifti",
]
