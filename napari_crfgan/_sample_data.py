"""napari sample data: one synthetic volume of each demo set (File > Open Sample).

The volumes are generated on first use (see napari_crfgan.data.demo) and cached.
CT is in Hounsfield units with a lung/soft-tissue window; MRI in its stored units.
"""
from __future__ import annotations

from .data import demo_folder, read_nifti
from ._reader import image_layer_kwargs


def _first_volume(name: str, modality: str) -> list[tuple]:
    folder = demo_folder(name, count=1)
    path = sorted(folder.glob("*.nii.gz"))[0]
    vol = read_nifti(path)
    metadata = {"path": str(path), "spacing": vol.spacing, "origin": vol.origin, "modality": modality}
    return [(vol.data, image_layer_kwargs(name, vol.data, vol.spacing, vol.origin, modality, metadata), "image")]


def demo_brain() -> list[tuple]:
    """A synthetic T1-weighted brain MRI (2 mm)."""
    return _first_volume("demo-brain", "mri")


def demo_chest() -> list[tuple]:
    """A synthetic chest CT phantom in HU."""
    return _first_volume("demo-chest", "ct")
