import os

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run paper-scale tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow paper-scale test: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Preprocessed volumes and demo data go to a cache owned by the test session."""
    if "CRFGAN_CACHE_DIR" not in os.environ:
        os.environ["CRFGAN_CACHE_DIR"] = str(tmp_path_factory.mktemp("crfgan-cache"))
    yield


@pytest.fixture
def npy_folder(tmp_path):
    """A small dataset folder of smooth random volumes (.npy), 40^3 so they get resampled."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "data"
    folder.mkdir()
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij"))
    for i in range(4):
        centre = rng.uniform(-0.3, 0.3, size=(3, 1, 1, 1))
        vol = np.exp(-((grid - centre) ** 2).sum(0) / 0.2) * 100 + rng.normal(0, 1, (40, 40, 40))
        np.save(folder / f"vol{i}.npy", vol.astype(np.float32))
    return folder
