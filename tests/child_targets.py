"""Training functions for the Train widget's child process in tests (`training.child.TRAIN_TARGET`).

The child imports them by name (`child_targets:<name>`): spawn gives it the parent's
sys.path, which holds this folder under pytest."""
import warnings

import numpy as np

from napari_crfgan.training import train


def broken_train(options, dataset):
    raise RuntimeError("something broke\nsecond line of detail")
    yield  # a generator, like the trainer


def noisy_train(options, dataset):
    """Libraries' warnings in the child, then the real trainer."""
    from matplotlib import MatplotlibDeprecationWarning, _api
    from pydantic.warnings import PydanticDeprecatedSince20

    _api.warn_external("a matplotlib warning")  # what matplotlib warns with, pointing at its caller
    warnings.warn("a matplotlib deprecation", MatplotlibDeprecationWarning, stacklevel=1)
    warnings.warn(PydanticDeprecatedSince20("a pydantic deprecation"), stacklevel=1)
    np.mean(np.zeros(0))  # numpy: "Mean of empty slice"
    yield from train(options, dataset)
