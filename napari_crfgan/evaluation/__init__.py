"""Offline metrics for generated 3D volumes: arrays in, numbers out.

Volumes are float arrays ``[N, D, H, W]`` in the model's range [-1, 1]. Each
metric lives in its own module with one entry point; :func:`evaluate` runs them
all and :func:`to_markdown` renders the result with the real-vs-real floor.
See EVALUATION.md for the method. Nothing here needs a download, napari or Qt.
"""
from .features import extract, normalise, rms_scale
from .frechet import frechet_distance
from .inject import blur, duplicate, slab_seams
from .kid import kid
from .mmd import mmd
from .msssim import ms_ssim, msssim_diversity
from .prdc import prdc
from .report import METRIC_INFO, evaluate, metric_keys, to_markdown
from .seams import plane_gaps, sdr, sdr_profile

__all__ = [
    "evaluate",
    "to_markdown",
    "metric_keys",
    "METRIC_INFO",
    "extract",
    "normalise",
    "rms_scale",
    "frechet_distance",
    "kid",
    "mmd",
    "prdc",
    "ms_ssim",
    "msssim_diversity",
    "plane_gaps",
    "sdr",
    "sdr_profile",
    "blur",
    "slab_seams",
    "duplicate",
]
