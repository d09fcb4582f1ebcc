"""napari sample data: one synthetic volume of each demo set (File > Open Sample).

The volumes are generated on first use (see napari_crfgan.data.demo) and cached, and
opened as the reader opens any NIfTI file (geometry and display orientation included).
CT is in Hounsfield units with a lung/soft-tissue window; MRI in its stored units.
demo-chest comes with its label mask as a Labels layer on the same grid (the input of
the mask-to-volume models and of the Synthesize-from-labels widget).
"""
from __future__ import annotations

from .data import demo_folder, demo_masks_folder
from ._reader import read_volume_layers


def _first_volume(name: str, modality: str) -> list[tuple]:
    folder = demo_folder(name, count=1)
    path = sorted(folder.glob("*.nii.gz"))[0]
    [(data, kwargs, kind)] = read_volume_layers(path, modality=modality)
    kwargs["name"] = name
    kwargs["metadata"]["modality"] = modality
    return [(data, kwargs, kind)]


def demo_brain() -> list[tuple]:
    """A synthetic T1-weighted brain MRI (2 mm)."""
    return _first_volume("demo-brain", "mri")


def demo_chest() -> list[tuple]:
    """A synthetic chest CT phantom in HU, and its structures (body, lungs, nodules, ...) as labels."""
    layers = _first_volume("demo-chest", "ct")
    path = sorted(demo_masks_folder("demo-chest", count=1).glob("*.nii.gz"))[0]
    [(labels, kwargs, kind)] = read_volume_layers(path)
    kwargs["name"] = "demo-chest labels"
    return [*layers, (labels, kwargs, "labels")]
