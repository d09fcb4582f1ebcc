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


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    """Tiny trained checkpoints (tiny-32, 2 iterations): CRF-GAN, HA-GAN and a conditional CRF-GAN."""
    from napari_crfgan.training import TrainOptions, train

    root = tmp_path_factory.mktemp("ckpt")
    rng = np.random.default_rng(0)
    data = root / "data"
    data.mkdir()
    for i in range(4):
        np.save(data / f"v{i}.npy", rng.normal(size=(24, 32, 40)).astype(np.float32) * 50)
    (data / "labels.csv").write_text("filename,label\nv0.npy,no\nv1.npy,yes\nv2.npy,no\nv3.npy,yes\n")
    paths = {}
    for name, model, cond in [("crfgan", "crfgan", False), ("hagan", "hagan", False), ("cond", "crfgan", True)]:
        list(train(TrainOptions(data=str(data), out=root / name, model=model, preset="tiny-32", iterations=2,
                                batch_size=2, device="cpu", conditional=cond)))
        paths[name] = str(root / name / "checkpoint.pt")
    return paths
