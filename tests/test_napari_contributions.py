"""The npe2 manifest, the NIfTI reader and writer, and the sample data."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_crfgan._reader import CT_WINDOW, get_reader
from napari_crfgan._sample_data import demo_brain, demo_chest
from napari_crfgan._writer import write_image
from napari_crfgan.data import read_nifti

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = ["Train", "Model and sample", "CRF consistency map", "Memory and speed", "Synthesize from labels"]


def test_manifest_validates_with_imports():
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-crfgan", "--imports"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr


def test_the_package_manifest_is_the_top_level_file():
    import napari_crfgan

    packaged = Path(napari_crfgan.__file__).parent / "napari.yaml"
    assert packaged.read_bytes() == (ROOT / "napari.yaml").read_bytes()


def test_napari_lists_the_widgets_reader_writer_and_sample_data():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "napari-crfgan" in pm._manifests
    assert [w.display_name for w in pm.iter_widgets() if w.plugin_name == "napari-crfgan"] == WIDGETS
    samples = dict(pm.iter_sample_data())["napari-crfgan"]
    assert [s.key for s in samples] == ["demo-brain", "demo-chest"]
    readers = [r for r in pm.iter_compatible_readers(["x.nii.gz"]) if r.plugin_name == "napari-crfgan"]
    assert readers
    writers = [w for w in pm.iter_compatible_writers(["image"]) if w.plugin_name == "napari-crfgan"]
    assert writers and ".nii.gz" in writers[0].filename_extensions


def test_writer_then_reader_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 7, 8)).astype(np.float32) * 100
    meta = {"scale": (3.0, 0.7, 0.8), "translate": (-10.0, 5.5, 2.0), "name": "x"}
    [written] = write_image(str(tmp_path / "vol.nii.gz"), data, meta)
    reader = get_reader(written)
    assert reader is not None and get_reader(str(tmp_path / "vol.tif")) is None
    [(back, kwargs, kind)] = reader(written)
    assert kind == "image" and kwargs["name"] == "vol"
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(kwargs["scale"], meta["scale"])
    np.testing.assert_allclose(kwargs["translate"], meta["translate"])
    assert kwargs["metadata"]["affine"].shape == (4, 4) and kwargs["metadata"]["header"]["units"] == "mm"
    with pytest.raises(ValueError, match="3D"):  # 4D layers are written (tests/test_affines.py); 2D is not a volume
        write_image(str(tmp_path / "plane.nii.gz"), np.zeros((3, 4)), {})


def test_sample_data_are_scaled_volumes():
    [(brain, bk, _)] = demo_brain()
    [(chest, ck, _), (labels, lk, kind)] = demo_chest()
    assert brain.ndim == chest.ndim == 3
    assert bk["scale"] == (2.0, 2.0, 2.0) and ck["scale"] == (3.0, 2.5, 2.5)
    # demo-chest's structures as a Labels layer on the image's grid: lungs dark, nothing outside the body bright
    assert kind == "labels" and labels.shape == chest.shape and lk["scale"] == ck["scale"]
    np.testing.assert_allclose(lk["affine"], ck["affine"])
    assert np.median(chest[labels == 10]) < -500 and 14 >= labels.max() and labels.dtype.kind == "u"
    assert ck["contrast_limits"] == CT_WINDOW and chest.min() <= -1000  # HU
    assert bk["contrast_limits"][0] < bk["contrast_limits"][1]
    assert read_nifti(ck["metadata"]["path"]).data.shape == chest.shape


@pytest.mark.gui
def test_viewer_opens_and_saves_nifti_with_the_plugin(make_napari_viewer, tmp_path):
    from napari_crfgan.data import write_nifti

    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    path = write_nifti(tmp_path / "a.nii.gz", data, (2.0, 1.0, 0.5), (1.0, 2.0, 3.0))
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-crfgan")
    np.testing.assert_array_equal(layer.data, data)
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 0.5))
    np.testing.assert_allclose(layer.translate, (1.0, 2.0, 3.0))
    out = tmp_path / "b.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin="napari-crfgan")
    back = read_nifti(out)
    np.testing.assert_array_equal(back.data, data)
    assert back.spacing == (2.0, 1.0, 0.5) and back.origin == (1.0, 2.0, 3.0)
    viewer.open_sample("napari-crfgan", "demo-chest")
    assert viewer.layers["demo-chest"].scale[0] == 3.0
