"""napari-crfgan: memory-efficient 3D GANs for high-resolution medical volumes.

The public Python API (no napari or Qt needed):
    TrainOptions, train, run_training, prepare_dataset  -- training (a generator of TrainReport)
    Sampler                                              -- load a checkpoint, sample, interpolate, CRF maps
    Synthesizer                                          -- a mask model's volume of a label mask (pix2pix, spade)
    load_checkpoint, get_config, PRESETS, SYSTEMS        -- checkpoints, configurations, the system registry
    VolumeDataset, PairedDataset, read_nifti, write_nifti -- data

Names are imported on first use (PEP 562), so `import napari_crfgan` and napari's
reader (`napari_crfgan._reader`) load neither torch nor the networks.
"""
from ._lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "DatasetError": "data", "PairedDataset": "data", "VolumeDataset": "data", "read_nifti": "data",
    "write_nifti": "data", "Synthesizer": "synthesis",
    "PRESETS": "model", "SYSTEMS": "model", "ModelConfig": "model", "build_system": "model", "get_config": "model",
    "ConsistencyMap": "sampling", "GeneratedVolume": "sampling", "Sampler": "sampling",
    "CheckpointError": "runtime", "available_devices": "runtime", "load_checkpoint": "runtime",
    "TrainingError": "training", "TrainOptions": "training", "TrainReport": "training",
    "prepare_dataset": "training", "run_training": "training", "train": "training",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
