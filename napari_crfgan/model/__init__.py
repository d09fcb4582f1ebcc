"""Pure-PyTorch networks and the two systems (no napari, no Qt)."""
from .crfgan import CRFGAN
from .hagan import HAGAN
from .presets import PRESETS, SYSTEMS, ModelConfig, get_config
from .system import GANSystem

_SYSTEMS = {"crfgan": CRFGAN, "hagan": HAGAN}


def build_system(model: str, cfg: ModelConfig) -> GANSystem:
    """A freshly initialised CRF-GAN or HA-GAN for `cfg`."""
    try:
        return _SYSTEMS[model](cfg)
    except KeyError:
        raise ValueError(f"unknown model {model!r}; choose one of {', '.join(SYSTEMS)}") from None


__all__ = ["CRFGAN", "HAGAN", "GANSystem", "ModelConfig", "PRESETS", "SYSTEMS", "build_system", "get_config"]
