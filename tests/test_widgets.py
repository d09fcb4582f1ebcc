"""The four dock widgets in a real napari viewer (OpenGL: run under xvfb-run)."""
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.utils.notifications import notification_manager  # noqa: E402
from qtpy.QtCore import QTimer  # noqa: E402

from napari_crfgan import Sampler  # noqa: E402
from napari_crfgan.data import Split, from_modality_units, to_modality_units, training_dataset  # noqa: E402
from napari_crfgan.evaluation.memorisation import nearest_training  # noqa: E402
from napari_crfgan.model import parameter_counts  # noqa: E402
from napari_crfgan.runtime import load_checkpoint  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN = "napari-crfgan"
WAIT_MS = 120_000


def dock(viewer, name):
    return viewer.window.add_plugin_dock_widget(PLUGIN, name)[1]


def choose(box, data):
    index = box.findData(data)
    assert index >= 0, data
    box.setCurrentIndex(index)


def idle(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WAIT_MS)


def world_range(layer, axis):
    """(min, max) world coordinate along `axis` of a 3D layer's voxel box, edges included."""
    corners = [layer.data_to_world(np.array(c, dtype=float) * np.array(layer.data.shape) - 0.5)
               for c in np.ndindex(2, 2, 2)]
    values = [c[axis] for c in corners]
    return min(values), max(values)


def set_up_training(w, data, out, iterations, preview_every=0):
    w.data.setEditText(str(data))
    choose(w.preset, "tiny-32")
    choose(w.device, "cpu")
    w.batch.setValue(2)
    w.iterations.setValue(iterations)
    w.preview_every.setValue(preview_every)
    w.out.setText(str(out))


def test_training_runs_in_a_worker_with_progress_plot_preview_and_checkpoint(make_napari_viewer, qtbot, npy_folder,
                                                                             tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, "Train")
    memory = dock(viewer, "Memory and speed")
    set_up_training(w, npy_folder, tmp_path / "run", iterations=3, preview_every=2)
    choose(w.recipe, "hinge")  # the Advanced recipe section reaches the run's config
    w.ema_decay.setValue(0.5)
    w.start()
    assert w.worker is not None and not w.start_button.isEnabled() and w.stop_button.isEnabled()
    idle(qtbot, w)
    cfg = load_checkpoint(tmp_path / "run" / "checkpoint.pt").config
    assert (cfg.loss, cfg.ema_decay, cfg.upsample) == ("hinge", 0.5, "nearest")
    # progress, loss curves, preview layer, checkpoint
    assert w.progress_done == 3
    assert set(w.plot.lines) == {"d", "g", "encoder", "crf", "crf_w_mean", "crf_w_max", "crf_minus_d",
                                 "crf_grad_share"}
    assert w.plot.diagnostics.get_visible() and w.plot.lines["crf_grad_share"].axes is w.plot.diagnostics
    for line in w.plot.lines.values():
        assert list(line.get_xdata()) == [1, 2, 3] and np.isfinite(line.get_ydata()).all()
    preview = viewer.layers["training preview"]
    assert preview.data.shape == (32, 32, 32) and preview.metadata["iteration"] == 3
    np.testing.assert_allclose(preview.scale, [40 / 32] * 3)  # 40 voxels of 1 mm fitted into 32
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(ckpt).iteration == 3
    assert str(ckpt) in w.status.text() and w.start_button.isEnabled() and not w.stop_button.isEnabled()
    # the shared state reached the memory widget
    assert w.state.checkpoint == str(ckpt) and not w.state.training
    assert w.state.last_run.kind == "training" and w.state.last_run.peak_memory_mb > 0
    assert "Last training" in memory.last_run.text() and "MB" in memory.last_run.text()


def test_event_loop_runs_while_training_and_stop_keeps_a_valid_checkpoint(make_napari_viewer, qtbot, npy_folder,
                                                                         tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, "Train")
    set_up_training(w, npy_folder, tmp_path / "run", iterations=10_000)
    ticks = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(20)
    w.start()
    qtbot.waitUntil(lambda: w.last_report is not None, timeout=WAIT_MS)
    t0 = time.monotonic()
    qtbot.waitUntil(lambda: w.last_report.iteration >= 3, timeout=WAIT_MS)
    t1 = time.monotonic()
    timer.stop()
    # the Qt event loop kept running (a 20 ms timer kept firing) while the worker trained a step
    during = [t for t in ticks if t0 <= t <= t1]
    assert len(during) >= 0.25 * (t1 - t0) / 0.02, (len(during), t1 - t0)
    assert max(np.diff([t0, *during, t1])) < 1.0
    w.stop()
    idle(qtbot, w)
    ckpt = load_checkpoint(tmp_path / "run")
    assert 1 <= ckpt.iteration == w.last_report.iteration < 10_000
    assert w.status.text().startswith("Stopped") and str(tmp_path / "run" / "checkpoint.pt") in w.status.text()
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled()


def test_bad_folder_is_one_error_notification_and_the_widget_stays_usable(make_napari_viewer, qtbot, npy_folder,
                                                                          tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, "Train")
    set_up_training(w, tmp_path / "no-such-folder", tmp_path / "run", iterations=1)
    before = len(notification_manager.records)
    w.start()
    idle(qtbot, w)
    new = notification_manager.records[before:]
    assert len(new) == 1 and "does not exist" in new[0].message and "\n" not in new[0].message
    assert w.start_button.isEnabled() and not w.stop_button.isEnabled() and not w.state.training
    # usable again: a good folder trains
    w.data.setEditText(str(npy_folder))
    w.start()
    idle(qtbot, w)
    assert load_checkpoint(tmp_path / "run").iteration == 1


def test_sampling_adds_scaled_layers_walks_and_3d(make_napari_viewer, qtbot, checkpoints, tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, "Model and sample")
    w.path.setText(checkpoints["crfgan"])
    choose(w.device, "cpu")
    w.load()
    idle(qtbot, w)
    info = w.info.text()
    assert "CRF-GAN" in info and "tiny-32" in info and "iteration 2" in info and "4 MRI volumes" in info
    assert not w.label.isEnabled()
    spacing = w.sampler.spacing
    w.seed.setValue(5)
    w.count.setValue(2)
    w.generate()
    idle(qtbot, w)
    for seed in (5, 6):
        layer = viewer.layers[f"CRF-GAN seed {seed}"]
        assert layer.data.shape == (32, 32, 32)
        np.testing.assert_allclose(layer.scale, spacing)
        assert layer.metadata["seed"] == seed and layer.metadata["checkpoint"] == checkpoints["crfgan"]
        assert tuple(layer.contrast_limits) == (0.0, 1.0)  # MRI in [0, 1]
    np.testing.assert_allclose(viewer.layers["CRF-GAN seed 6"].data, w.sampler.sample(1, seed=6)[0].data, atol=1e-5)
    # shown as the reader shows files: the sample saved to NIfTI and opened lies on the sample's layer
    saved = w.sampler.sample(1, seed=6)[0].save(tmp_path / "seed6.nii.gz")
    reopened = viewer.open(str(saved), plugin=PLUGIN)[0]
    shown = viewer.layers["CRF-GAN seed 6"]
    assert shown.metadata["display_orientation"] == reopened.metadata["display_orientation"] == "radiological"
    for corner in np.ndindex(2, 2, 2):
        at = np.array(corner, dtype=float) * 32 - 0.5
        np.testing.assert_allclose(shown.data_to_world(at), reopened.data_to_world(at), atol=1e-4)
    assert w.state.last_run.kind == "sampling"
    w.show_3d()
    assert viewer.dims.ndisplay == 3
    w.steps.setValue(3)
    w.interpolate()
    idle(qtbot, w)
    walk = viewer.layers["walk 0 to 1"]
    assert walk.data.shape == (3, 32, 32, 32)
    np.testing.assert_allclose(walk.scale, (1.0, *spacing))


def test_a_pretrained_generator_is_one_choice_away(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = dock(viewer, "Model and sample")
    crf = dock(viewer, "CRF consistency map")
    choose(w.device, "cpu")
    choose(w.pretrained, "pretrained:demo-brain")  # choosing loads it: no training, no file dialog
    idle(qtbot, w)
    assert w.path.text() == "pretrained:demo-brain" and "small-64" in w.info.text()
    w.generate()
    idle(qtbot, w)
    layer = viewer.layers["CRF-GAN seed 0"]
    assert layer.data.shape == (64, 64, 64) and layer.metadata["checkpoint"] == "pretrained:demo-brain"
    assert "holds no CRF" in crf.model.text() and not crf.compute_button.isEnabled()


def test_conditional_model_offers_its_class_names(make_napari_viewer, qtbot, checkpoints):
    viewer = make_napari_viewer()
    w = dock(viewer, "Model and sample")
    w.path.setText(checkpoints["cond"])
    w.load()
    idle(qtbot, w)
    assert w.label.isEnabled() and [w.label.itemText(i) for i in range(w.label.count())] == ["no", "yes"]
    w.label.setCurrentIndex(1)
    w.generate()
    idle(qtbot, w)
    assert viewer.layers["CRF-GAN seed 0"].metadata["label"] == 1
    assert w.label.currentIndex() == 1  # the choice survives a run


def assert_map_over(overlay, volume):
    """Each corner of the map's grid of patches lies, in the world, on that corner of the volume."""
    n, size = overlay.data.shape[0], volume.data.shape[0]
    for corner in np.ndindex(2, 2, 2):
        at = np.array(corner, dtype=float)
        np.testing.assert_allclose(overlay.data_to_world(at * n - 0.5), volume.data_to_world(at * size - 0.5),
                                   atol=1e-6)


def test_consistency_overlay_is_aligned_with_the_volume(make_napari_viewer, qtbot, checkpoints):
    viewer = make_napari_viewer()
    sample = dock(viewer, "Model and sample")
    crf = dock(viewer, "CRF consistency map")
    sample.path.setText(checkpoints["crfgan"])
    sample.load()
    idle(qtbot, sample)
    assert crf.compute_button.isEnabled() and "CRF over a 2×2×2 patch grid" in crf.model.text()
    sample.generate()
    idle(qtbot, sample)
    volume = viewer.layers["CRF-GAN seed 0"]
    volume.translate = (10.0, -5.0, 3.0)  # a volume placed anywhere: the overlay follows it
    crf.layer.setCurrentText(volume.name)
    crf.compute()
    idle(qtbot, crf)
    overlay = crf.overlay
    assert overlay.data.shape == (2, 2, 2) and overlay.opacity == 0.5 and overlay.blending == "translucent"

    assert_map_over(overlay, volume)
    expected = Sampler(checkpoints["crfgan"], device="cpu").consistency(volume.data)
    np.testing.assert_allclose(overlay.data, expected.verdicts, atol=1e-5)
    assert "probability" in crf.legend.text()
    choose(crf.kind, "agreement")
    np.testing.assert_allclose(crf.overlay.data, expected.agreement, atol=1e-5)
    assert "neighbours" in crf.legend.text()
    choose(crf.blending, "additive")
    assert crf.overlay.blending == "additive"
    # an oblique, flipped, anisotropic volume (as a NIfTI with a rotated sform opens): the map follows it
    theta = np.deg2rad(20)
    turn = np.array([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]])
    volume.affine = np.diag([1.0, -1.0, 1.0]) @ turn  # a flip, then a 20 degree rotation
    volume.scale = (2.0, 1.0, 0.5)  # anisotropic too
    crf.compute()
    idle(qtbot, crf)
    assert_map_over(crf.overlay, volume)


def test_hagan_checkpoint_has_no_crf(make_napari_viewer, qtbot, checkpoints):
    viewer = make_napari_viewer()
    crf = dock(viewer, "CRF consistency map")
    crf.load(checkpoints["hagan"])
    idle(qtbot, crf)
    assert "has no CRF" in crf.model.text() and not crf.compute_button.isEnabled()


def test_memory_widget_follows_the_train_choice_and_estimates(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    train_w = dock(viewer, "Train")
    memory = dock(viewer, "Memory and speed")
    choose(train_w.preset, "tiny-32")
    choose(train_w.device, "cpu")
    train_w.batch.setValue(2)
    assert "tiny-32" in memory.choice.text() and "batch 2" in memory.choice.text()
    total = sum(parameter_counts("crfgan", "tiny-32").values())
    qtbot.waitUntil(lambda: f"{total:,}" in memory.params.text(), timeout=WAIT_MS)
    memory.run_estimate()
    qtbot.waitUntil(lambda: memory.estimate is not None, timeout=WAIT_MS)
    qtbot.waitUntil(memory.estimate_button.isEnabled, timeout=WAIT_MS)
    e = memory.estimate
    assert (e.model, e.preset, e.batch_size, e.device) == ("crfgan", "tiny-32", 2, "cpu") and e.peak_memory_mb > 0
    assert "MB peak" in memory.estimate_label.text()
    train_w.batch.setValue(3)
    assert "No estimate" in memory.estimate_label.text()


def test_user_walkthrough_sample_data_train_stop_load_sample_3d_consistency(make_napari_viewer, qtbot, tmp_path):
    """The plugin as a user drives it: open the demo-brain sample, train on demo-brain from the
    Train widget, stop, load the checkpoint it kept, sample two volumes, show one in 3D with its
    CRF consistency map."""
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "demo-brain")
    assert viewer.layers["demo-brain"].data.ndim == 3
    train_w = dock(viewer, "Train")
    sample = dock(viewer, "Model and sample")
    crf = dock(viewer, "CRF consistency map")
    set_up_training(train_w, "demo-brain", tmp_path / "run", iterations=10_000)
    train_w.start()
    qtbot.waitUntil(lambda: train_w.last_report is not None and train_w.last_report.iteration >= 2, timeout=WAIT_MS)
    train_w.stop()
    idle(qtbot, train_w)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    assert sample.path.text() == str(ckpt)  # the checkpoint the run kept is offered for loading
    sample.load()
    idle(qtbot, sample)
    assert f"iteration {load_checkpoint(ckpt).iteration}" in sample.info.text()
    sample.count.setValue(2)
    sample.generate()
    idle(qtbot, sample)
    assert {"CRF-GAN seed 0", "CRF-GAN seed 1"} <= {layer.name for layer in viewer.layers}
    sample.show_3d()
    assert viewer.dims.ndisplay == 3
    crf.layer.setCurrentText("CRF-GAN seed 1")
    crf.compute()
    idle(qtbot, crf)
    assert crf.overlay.data.shape == (2, 2, 2) and crf.overlay in viewer.layers
    assert_map_over(crf.overlay, viewer.layers["CRF-GAN seed 1"])


def test_nearest_training_volume_is_shown_beside_the_sample(make_napari_viewer, qtbot, checkpoints, tmp_path):
    viewer = make_napari_viewer()
    w = dock(viewer, "Model and sample")
    w.nearest_button.click()
    assert w.status.text().startswith("Load a checkpoint first") and len(viewer.layers) == 0
    w.path.setText(checkpoints["crfgan"])
    choose(w.device, "cpu")
    w.load()
    idle(qtbot, w)
    w.nearest_button.click()
    assert w.status.text().startswith("Generate a volume")
    w.seed.setValue(3)
    w.generate()
    idle(qtbot, w)
    sample = viewer.layers["CRF-GAN seed 3"]
    sample.translate = (2.0, -4.0, 6.0)
    data = w.sampler.checkpoint.data
    modality = sample.metadata["modality"]
    query = from_modality_units(sample.data, modality)

    # the fixture's checkpoint trained on its whole folder: no held-out list to compare with
    w.nearest_button.click()
    idle(qtbot, w)
    train = training_dataset(data, 32, modality=modality)
    found = nearest_training(query, train)
    name = f"nearest training: {train.files[found['index']]} (distance {found['distance']:.3g})"
    assert [layer.name for layer in viewer.layers] == ["CRF-GAN seed 3", name]
    near = viewer.layers[name]
    np.testing.assert_allclose(near.data, to_modality_units(train[found["index"]][0].numpy(), modality), atol=1e-6)
    np.testing.assert_allclose(near.scale, sample.scale)
    np.testing.assert_allclose(near.translate, (2.0, -4.0, 6.0 + 1.1 * 32 * sample.scale[-1]))
    near_x, sample_x = world_range(near, -1), world_range(sample, -1)
    assert near_x[0] > sample_x[1] or near_x[1] < sample_x[0]  # beside it along x, not overlapping
    assert train.files[found["index"]] in w.status.text() and "No held-out test list" in w.status.text()

    # a checkpoint trained on a split: its train list is searched, its test list is the yardstick
    split = Split(source=data["folder"], parts={"train": ["v0.npy", "v1.npy"], "val": [], "test": ["v2.npy", "v3.npy"]},
                  fractions=(0.5, 0.0, 0.5), seed=0, stratified=False)
    with_split = Sampler(checkpoints["crfgan"], device="cpu")
    with_split.checkpoint.data["split"] = split.record()
    w.state.sampler = with_split
    viewer.layers.selection.active = sample  # the selected sample, not the nearest layer made last
    w.nearest_button.click()
    idle(qtbot, w)
    train = split.dataset("train", 32, modality=modality)
    found = nearest_training(query, train, split.dataset("test", 32, modality=modality))
    file, t = train.files[found["index"]], found["test_threshold"]
    assert file in ("v0.npy", "v1.npy") and t is not None
    near = viewer.layers[f"nearest training: {file} (distance {found['distance']:.3g}; held-out 5th pct {t:.3g})"]
    np.testing.assert_allclose(near.data, to_modality_units(train[found["index"]][0].numpy(), modality), atol=1e-6)
    assert near.metadata["closer_than_test"] == found["closer_than_test"] and f"{t:.3g}" in w.status.text()

    # training data that are not on this machine: one line in the status, no new layer
    gone = Sampler(checkpoints["crfgan"], device="cpu")
    gone.checkpoint.data["source"] = str(tmp_path / "moved-away")
    w.state.sampler = gone
    before = len(viewer.layers)
    w.nearest_button.click()
    idle(qtbot, w)
    assert "are not on this machine" in w.status.text() and "\n" not in w.status.text()
    assert len(viewer.layers) == before and w.nearest_button.isEnabled()
