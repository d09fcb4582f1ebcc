"""Pretrained demo generators shipped inside the package, named ``pretrained:<name>``.

Each is a generator-only checkpoint (`Checkpoint.sampling_only`: the sampled G^A + G^H
weights, their moving average where the recipe keeps one) in ``napari_crfgan/weights/``,
loaded like any checkpoint (``torch.load(weights_only=True)``). `crfgan pretrain`
(experiments/pretrain.py) rebuilds them.
"""
from __future__ import annotations

from pathlib import Path

SCHEME = "pretrained:"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: name -> what it generates (the demo data set of the same name)
PRETRAINED = {
    "demo-brain": "synthetic T1 brain MRIs (unconditional)",
    "demo-chest": "synthetic chest CTs, conditional: nodule / no-nodule",
}


def is_pretrained(spec) -> bool:
    return isinstance(spec, str) and spec.startswith(SCHEME)


def weights_file(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or WEIGHTS_DIR) / f"{name}.pt"


def pretrained_path(spec: str) -> Path:
    """The file of ``pretrained:<name>``: ValueError naming the choices, or FileNotFoundError saying how to
    rebuild it (load_checkpoint turns both into its CheckpointError)."""
    name = spec[len(SCHEME):]
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; choose one of "
                         + ", ".join(SCHEME + n for n in PRETRAINED))
    path = weights_file(name)
    if not path.is_file():
        raise FileNotFoundError(f"{spec} is not in this installation ({path} is missing); "
                                f"rebuild it with `crfgan pretrain --name {name}`")
    return path


def available() -> list[str]:
    """The ``pretrained:<name>`` choices whose file this installation holds."""
    return [SCHEME + n for n in PRETRAINED if weights_file(n).is_file()]
