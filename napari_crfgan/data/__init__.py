"""Data: reading volumes, preprocessing, on-disk cache, folder datasets and demo data.

Volumes are float32 arrays with axes (D, H, W) = (z, y, x) of the RAS-canonical
image; spacing is a 3-tuple (sd, sh, sw) in mm. Nothing here imports napari or Qt.
"""

from .cache import cache_dir
from .dataset import DatasetError, SkippedFilesWarning, VolumeDataset
from .demo import DEMO_DATASETS, demo_folder
from .nifti import NiftiVolume, VolumeError, load_volume, read_nifti, write_nifti
from .preprocess import Preprocessing, from_modality_units, preprocess_volume, to_modality_units

__all__ = [
    "VolumeDataset",
    "DatasetError",
    "SkippedFilesWarning",
    "VolumeError",
    "load_volume",
    "read_nifti",
    "write_nifti",
    "NiftiVolume",
    "Preprocessing",
    "preprocess_volume",
    "to_modality_units",
    "from_modality_units",
    "demo_folder",
    "DEMO_DATASETS",
    "cache_dir",
]
