"""Pure-PyTorch networks and the systems (no napari, no Qt); `SYSTEMS` is the registry."""
from .presets import PRESETS, ModelConfig, get_config
from .registry import (SYSTEMS, SystemSpec, build_system, display_name, parameter_counts, parameter_summary,
                       system_config, system_spec, uses_masks)
from .system import GANSystem

__all__ = ["GANSystem", "ModelConfig", "PRESETS", "SYSTEMS", "SystemSpec", "build_system", "display_name",
           "get_config", "parameter_counts", "parameter_summary", "system_config", "system_spec", "uses_masks"]
