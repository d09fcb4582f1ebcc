"""Offline metrics for generated 3D volumes: arrays in, numbers out.

Volumes are float arrays ``[N, D, H, W]`` in the model's range [-1, 1]. Each
metric lives in its own module with one entry point; :func:`evaluate` runs them
all and :func:`to_markdown` renders the result with the real-vs-real floor.

Method, in short (each module's docstring has the details): Frechet distance and
KID on features of fixed, seeded random 3D CNNs (``features``: a shallow
multi-scale CNN and a ResNet-10, weights from numpy's seeded generator so they
never change with torch; optionally a MedicalNet ResNet-50 from a local file),
averaged over three seeds, features scaled by one scalar (the RMS of the real
features); Gaussian MMD on voxels pooled to 16^3 with a permutation p-value;
precision / recall / density / coverage (k = 5); MS-SSIM between random sample
pairs; the seam discontinuity ratio along each axis. Every comparison is printed
beside the same number for two halves of the real set (the noise floor).

This package imports only numpy, scipy and torch: no training, sampling, data or
experiments, and nothing needs a download, napari or Qt.
"""
from .features import extract, normalise, rms_scale
from .frechet import frechet_distance
from .inject import blur, duplicate, slab_seams
from .kid import kid
from .mmd import mmd
from .msssim import ms_ssim, msssim_diversity
from .paired import bootstrap_indices, paired_bootstrap, seed_spread
from .prdc import prdc
from .report import INTERVALS, METRIC_INFO, evaluate, interval_meanings, metric_keys, to_markdown
from .seams import plane_gaps, sdr, sdr_profile

__all__ = [
    "evaluate",
    "to_markdown",
    "metric_keys",
    "METRIC_INFO",
    "INTERVALS",
    "interval_meanings",
    "paired_bootstrap",
    "bootstrap_indices",
    "seed_spread",
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
