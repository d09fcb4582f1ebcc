"""The Synthesize-from-labels dock under Xvfb: a real viewer, the demo-chest sample's Labels layer, a
pix2pix checkpoint trained here for two iterations."""
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_crfgan.data.demo import CHEST_LABELS  # noqa: E402
from napari_crfgan.training import TrainOptions, run_training  # noqa: E402

pytestmark = pytest.mark.gui
WAIT_MS = 120_000
#: the most CPU time the main thread may spend starting a synthesis (the work runs in a worker)
START_BUDGET_S = 0.100


@pytest.fixture(scope="module")
def pix2pix_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("pix2pix")
    run_training(TrainOptions(data="demo-chest", masks="demo", model="pix2pix", preset="tiny-32",
                              iterations=2, batch_size=2, demo_count=4, split="none", out=out, device="cpu",
                              threads=1))
    return out / "checkpoint.pt"


def dock(viewer, name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-crfgan", name)
    assert widget.wait_until_ready()
    return widget


def test_a_painted_labels_layer_becomes_an_aligned_image_layer_and_edits_run_again(make_napari_viewer, qtbot,
                                                                                     pix2pix_checkpoint):
    from napari_crfgan.widgets.synthesize import result_name

    viewer = make_napari_viewer()
    viewer.open_sample("napari-crfgan", "demo-chest")
    labels = viewer.layers["demo-chest labels"]
    w = dock(viewer, "Synthesize from labels")
    assert w.layer.currentText() == labels.name and not w.run_button.isEnabled()  # no model yet
    w.load(str(pix2pix_checkpoint))
    qtbot.waitUntil(lambda: w.synthesizer is not None, timeout=WAIT_MS)
    assert "pix2pix" in w.model.text().lower() and "lung" in w.model.text()  # the label names it knows

    start = time.thread_time()
    w.run_button.click()
    assert time.thread_time() - start < START_BUDGET_S and w.running is not None  # in a worker
    name = result_name(labels.name)
    qtbot.waitUntil(lambda: name in viewer.layers and w.running is None, timeout=WAIT_MS)
    image = viewer.layers[name]
    assert image.data.shape == labels.data.shape and np.isfinite(image.data).all()
    for key in ("scale", "translate", "rotate", "shear"):
        np.testing.assert_allclose(getattr(image, key), getattr(labels, key), err_msg=key)
    np.testing.assert_allclose(image.affine.affine_matrix, labels.affine.affine_matrix)
    np.testing.assert_allclose(image.extent.world, labels.extent.world)  # the same world box
    first = np.array(image.data)

    # paint a nodule into a lung: the dock synthesizes again once the painting pauses
    nodule = next(k for k, v in CHEST_LABELS.items() if v == "nodule")
    lung = np.argwhere(labels.data == next(k for k, v in CHEST_LABELS.items() if v == "lung"))
    labels.n_edit_dimensions, labels.brush_size = 3, 10  # a ball, not a disk in one slice
    labels.paint(tuple(lung[len(lung) // 2].tolist()), nodule)
    asked = w.request
    qtbot.waitUntil(lambda: w.request > asked and w.running is None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not np.array_equal(viewer.layers[name].data, first), timeout=WAIT_MS)
    assert viewer.layers[name] is image  # the same layer, new data


def test_no_model_or_no_labels_is_one_message_and_nothing_runs(make_napari_viewer, qtbot, tmp_path):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    w = dock(viewer, "Synthesize from labels")
    assert w.layer.count() == 0 and not w.layer.isEnabled()
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    try:
        w.synthesize()
        w.load(str(tmp_path / "missing.pt"))
        qtbot.waitUntil(lambda: w.loading is None, timeout=WAIT_MS)
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
    assert w.synthesizer is None and w.running is None and len(seen) == 2
    assert "checkpoint" in str(seen[0].message).lower() and "missing.pt" in str(seen[1].message)
