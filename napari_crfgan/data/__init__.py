"""Data: reading volumes, preprocessing, on-disk cache, folder datasets and demo data.

Volumes are float32 arrays with axes (D, H, W) = (z, y, x) of the RAS-canonical
image; spacing is a 3-tuple (sd, sh, sw) in mm. Nothing here imports napari or Qt.
"""

from .._lazy import lazy_exports

#: public name -> the module that defines it (imported on first use: the reader needs no torch)
_EXPORTS = {
    "cache_dir": "cache",
    "DatasetError": "dataset", "LabelsWarning": "dataset", "ResamplingWarning": "dataset",
    "SkippedFilesWarning": "dataset", "VolumeDataset": "dataset",
    "CHEST_LABELS": "demo", "DEMO_DATASETS": "demo", "MASK_DEMOS": "demo", "demo_folder": "demo",
    "demo_masks_folder": "demo",
    "LABEL_NAMES_FILE": "label_names", "read_label_names": "label_names",
    "DEMO_MASKS": "paired", "PairedDataset": "paired", "open_dataset": "paired",
    "NiftiVolume": "nifti", "VolumeError": "nifti", "load_volume": "nifti", "read_nifti": "nifti",
    "write_nifti": "nifti",
    "Preprocessing": "preprocess", "from_modality_units": "preprocess", "preprocess_volume": "preprocess",
    "to_modality_units": "preprocess",
    "SPLIT_NAME": "split", "Split": "split", "SplitOptions": "split", "find_split": "split", "make_split": "split",
    "read_split": "split", "training_dataset": "split", "write_split": "split",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
