"""Affines end to end: oblique and anisotropic NIfTI files through the napari reader and writer,
labels and 4D layers, the display orientation switch, and the orientation of sampled volumes."""
import dataclasses

import nibabel as nib
import numpy as np
import pytest

from napari_crfgan._reader import DISPLAY_KEY, is_label_volume, read_volume_layers
from napari_crfgan._writer import write_image, write_labels
from napari_crfgan.data import VolumeDataset, read_nifti
from napari_crfgan.data.nifti import DISPLAY_ENV, DISPLAY_ORIENTATIONS, INTENT_LABEL

MARK = 3000  # one voxel of the int16 phantoms holds this value, no other
MARK_IJK = (30, 10, 4)


def oblique_affine(degrees=10.0, zooms=(0.7, 0.7, 3.0), flips=(-1.0, -1.0, 1.0), origin=(40.5, -20.25, -30.0)):
    """An LPS-stored (x and y flipped) grid tilted by `degrees` about the x axis, 0.7 x 0.7 x 3 mm."""
    t = np.deg2rad(degrees)
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(t), -np.sin(t)], [0.0, np.sin(t), np.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(np.multiply(zooms, flips))
    affine[:3, 3] = origin
    return affine


def save(path, data, affine, qform_code=1, sform_code=2, slope=None, inter=None, intent=None, tr=None):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    if intent is not None:
        img.header.set_intent(intent)
    if tr is not None:
        img.header.set_zooms(img.header.get_zooms()[:3] + (tr,))
    nib.save(img, str(path))
    return path


def ct_phantom(shape=(40, 36, 16), seed=0):
    """int16 (x, y, z) of random HU values and one marked voxel."""
    x = np.random.default_rng(seed).integers(-1000, 2000, size=shape).astype(np.int16)
    x[MARK_IJK] = MARK
    return x


def world_of(affine, ijk):
    """World (x, y, z) RAS mm of a voxel index of a file."""
    return (np.asarray(affine) @ [*ijk, 1.0])[:3]


def napari_world(layer, index, display="radiological"):
    """The RAS (x, y, z) mm of a layer's data index, from napari's data -> world transform."""
    zyx = np.asarray(layer.data_to_world(index), dtype=float)[-3:] * DISPLAY_ORIENTATIONS[display]
    return zyx[::-1]


def only_index(data, value):
    found = np.argwhere(np.asarray(data) == value)
    assert len(found) == 1, found
    return tuple(int(i) for i in found[0])


# ------------------------------------------------------------------------------------ oblique files


@pytest.mark.gui
def test_oblique_anisotropic_int16_round_trips_through_the_viewer(make_napari_viewer, tmp_path):
    affine = oblique_affine()
    xyz = ct_phantom()
    path = save(tmp_path / "oblique.nii.gz", xyz, affine, qform_code=1, sform_code=2)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-crfgan")
    import napari

    assert isinstance(layer, napari.layers.Image) and layer.data.dtype == np.float32
    assert layer.data.shape == (16, 36, 40)  # (D, H, W) of the RAS-canonical image
    np.testing.assert_allclose(layer.scale, (3.0, 0.7, 0.7), rtol=1e-6)
    assert not np.allclose(layer.rotate, np.eye(3))  # the 10 degree tilt is in the layer's transform

    # the marked voxel: where the file's affine puts it is where napari puts it
    index = only_index(layer.data, MARK)
    expected = world_of(affine, MARK_IJK)
    np.testing.assert_allclose(napari_world(layer, index), expected, atol=1e-4)

    out = tmp_path / "saved.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin="napari-crfgan")
    back = nib.load(str(out))
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 2)
    np.testing.assert_allclose(back.header.get_qform(), nib.load(str(path)).header.get_qform(), atol=1e-6)
    assert back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), xyz)  # same voxel order, same values
    np.testing.assert_allclose(world_of(back.affine, only_index(back.dataobj, MARK)), expected, atol=1e-4)


@pytest.mark.gui
def test_a_labels_layer_from_napari_new_labels_is_saved_over_its_image(make_napari_viewer, tmp_path):
    """napari's "new labels" copies the selected image's transform (the display orientation in its
    affine too) but not its metadata: the label painted on a voxel is written where that voxel is."""
    affine = oblique_affine()
    path = save(tmp_path / "oblique.nii.gz", ct_phantom(), affine)
    viewer = make_napari_viewer()
    [image] = viewer.open(str(path), plugin="napari-crfgan")
    viewer.layers.selection.active = image
    viewer._new_labels()  # what the layer list's "new labels" button calls
    labels = viewer.layers[-1]
    assert DISPLAY_KEY not in labels.metadata
    index = only_index(image.data, MARK)
    labels.data[index] = 7
    out = tmp_path / "seg.nii.gz"
    viewer.layers.selection = {labels}
    viewer.layers.save(str(out), selected=True, plugin="napari-crfgan")
    back = nib.load(str(out))
    np.testing.assert_allclose(world_of(back.affine, only_index(back.dataobj, 7)), world_of(affine, MARK_IJK),
                               atol=1e-4)


def test_the_layer_transform_is_the_file_geometry_for_any_orientation(tmp_path, monkeypatch):
    """Without a display transform, napari's world coordinates are the file's (z, y, x) mm."""
    monkeypatch.setenv(DISPLAY_ENV, "none")
    from napari_crfgan.data.nifti import compose_layer_transform

    for k, (flips, degrees) in enumerate([((1, 1, 1), 0.0), ((-1, 1, 1), 10.0), ((-1, -1, 1), -25.0)]):
        affine = oblique_affine(degrees, flips=flips)
        path = save(tmp_path / f"v{k}.nii.gz", ct_phantom(), affine)
        [(data, kwargs, kind)] = read_volume_layers(path)
        assert kind == "image" and kwargs["metadata"][DISPLAY_KEY] == "none"
        matrix = compose_layer_transform(kwargs, 3)
        zyx = matrix @ [*only_index(data, MARK), 1.0]
        np.testing.assert_allclose(zyx[:3][::-1], world_of(affine, MARK_IJK), atol=1e-4)


def test_scaled_int16_keeps_scl_slope_and_inter_and_edits_fall_back_to_float(tmp_path):
    affine = oblique_affine()
    xyz = ct_phantom()
    path = save(tmp_path / "scaled.nii.gz", xyz, affine, slope=0.5, inter=-1024.0)
    [(data, kwargs, kind)] = read_volume_layers(path)
    assert kind == "image"
    np.testing.assert_array_equal(data, xyz.transpose(2, 1, 0)[:, ::-1, ::-1] * 0.5 - 1024.0)

    [out] = write_image(str(tmp_path / "same.nii.gz"), data, kwargs)
    back = nib.load(out)
    assert back.get_data_dtype() == np.int16
    assert (back.dataobj.slope, back.dataobj.inter) == (0.5, -1024.0)
    np.testing.assert_array_equal(back.dataobj.get_unscaled(), xyz)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)

    [out] = write_image(str(tmp_path / "smoothed.nii.gz"), data + 0.25, kwargs)  # no longer on the int16 grid
    back = nib.load(out)
    assert back.get_data_dtype() == np.float32
    np.testing.assert_allclose(np.asarray(back.dataobj), xyz * 0.5 - 1024.0 + 0.25)
    [out] = write_image(str(tmp_path / "bright.nii.gz"), data * 100.0, kwargs)  # out of the int16 range
    assert nib.load(out).get_data_dtype() == np.float32


def test_a_moved_layer_is_written_where_it_now_is(tmp_path):
    affine = oblique_affine()
    path = save(tmp_path / "a.nii.gz", ct_phantom(), affine, qform_code=1, sform_code=2)
    [(data, kwargs, _)] = read_volume_layers(path, orientation="radiological")
    moved = dict(kwargs, translate=tuple(np.add(kwargs["translate"], (5.0, 0.0, 0.0))))  # 5 mm along z
    [out] = write_image(str(tmp_path / "moved.nii.gz"), data, moved)
    back = nib.load(out)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 2)
    expected = affine.copy()
    expected[2, 3] += 5.0
    np.testing.assert_allclose(back.affine, expected, atol=1e-4)
    assert back.get_data_dtype() == np.int16


# ------------------------------------------------------------------------------------ labels


def test_the_labels_rule(tmp_path):
    rng = np.random.default_rng(1)
    few = rng.integers(0, 5, size=(12, 10, 8)).astype(np.uint8)
    ninety = rng.permutation(np.arange(12 * 10 * 8) % 90).reshape(12, 10, 8).astype(np.uint8)
    image = rng.integers(0, 1200, size=(12, 10, 8)).astype(np.int16)
    assert is_label_volume(few, "scan")
    assert not is_label_volume(ninety, "scan") and is_label_volume(ninety, "aparc_seg")
    assert not is_label_volume(image, "brain_mask")  # > 256 values: a masked image, not a mask
    assert is_label_volume(image, "scan", {"intent_code": INTENT_LABEL})
    assert not is_label_volume(few.astype(np.float32), "seg")  # stored as float: an image
    assert not is_label_volume(few.astype(np.int16) - 1, "seg")  # negative values
    assert not is_label_volume(few, "seg", {"scl_slope": 2.0})
    path = save(tmp_path / "liver_seg.nii.gz", few, oblique_affine())
    [(data, kwargs, kind)] = read_volume_layers(path)
    assert kind == "labels" and data.dtype == np.uint8 and "contrast_limits" not in kwargs
    np.testing.assert_array_equal(data, few.transpose(2, 1, 0)[:, ::-1, ::-1])


@pytest.mark.gui
def test_labels_round_trip_as_a_labels_layer(make_napari_viewer, tmp_path):
    import napari

    affine = oblique_affine()
    xyz = np.zeros((40, 36, 16), np.uint8)
    xyz[5:20, 4:30, 2:10] = 1
    xyz[22:35, 10:20, 6:14] = 2
    xyz[MARK_IJK] = 7
    path = save(tmp_path / "organs_seg.nii.gz", xyz, affine, qform_code=1, sform_code=1)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-crfgan")
    assert isinstance(layer, napari.layers.Labels) and layer.data.dtype == np.uint8
    np.testing.assert_allclose(napari_world(layer, only_index(layer.data, 7)), world_of(affine, MARK_IJK),
                               atol=1e-4)
    layer.data[layer.data == 2] = 3  # painted
    out = tmp_path / "edited_seg.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin="napari-crfgan")
    back = nib.load(str(out))
    assert back.get_data_dtype() == np.uint8 and back.header.get_intent()[0] == "label"
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)
    expected = xyz.copy()
    expected[expected == 2] = 3
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), expected)
    viewer.layers.clear()
    [again] = viewer.open(str(out), plugin="napari-crfgan")
    assert isinstance(again, napari.layers.Labels)

    # a labels layer made in napari (int64, 300 labels): integers on disk, and Labels again when read
    many = (np.arange(6 * 7 * 8).reshape(6, 7, 8) % 300).astype(np.int64)
    viewer.layers.clear()
    viewer.add_labels(many, name="drawn", scale=(2.0, 1.0, 1.5), translate=(1.0, 2.0, 3.0))
    drawn = tmp_path / "drawn.nii.gz"
    viewer.layers.save(str(drawn), selected=False, plugin="napari-crfgan")
    back = nib.load(str(drawn))
    assert back.get_data_dtype().kind in "iu" and back.header["intent_code"] == INTENT_LABEL
    [(data, kwargs, kind)] = read_volume_layers(drawn, orientation="none")
    assert kind == "labels" and data.dtype.kind in "iu"
    np.testing.assert_array_equal(data, many)
    np.testing.assert_allclose(kwargs["scale"], (2.0, 1.0, 1.5))
    np.testing.assert_allclose(kwargs["translate"], (1.0, 2.0, 3.0))


def test_labels_writer_refuses_fractions(tmp_path):
    with pytest.raises(ValueError, match="whole numbers"):
        write_labels(str(tmp_path / "x.nii.gz"), np.full((3, 4, 5), 0.5), {})


# ------------------------------------------------------------------------------------ 4D


@pytest.mark.gui
def test_4d_nifti_round_trips_as_a_4d_layer(make_napari_viewer, tmp_path):
    affine = oblique_affine()
    frames = np.stack([ct_phantom(seed=s) for s in range(3)], axis=-1)  # (x, y, z, t)
    frames[..., 1:][MARK_IJK] = 0
    path = save(tmp_path / "series.nii.gz", frames, affine, tr=2.5)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-crfgan")
    assert layer.ndim == 4 and layer.data.shape == (3, 16, 36, 40)  # time first
    assert layer.scale[0] == 1.0
    index = only_index(layer.data, MARK)
    assert index[0] == 0
    np.testing.assert_allclose(napari_world(layer, index), world_of(affine, MARK_IJK), atol=1e-4)
    out = tmp_path / "series_saved.nii.gz"
    viewer.layers.save(str(out), selected=False, plugin="napari-crfgan")
    back = nib.load(str(out))
    assert back.shape == frames.shape and back.get_data_dtype() == np.int16
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), frames)
    np.testing.assert_allclose(back.affine, affine, atol=1e-4)
    assert back.header.get_zooms()[3] == pytest.approx(2.5)

    # a 4D layer made in napari (a walk: frames, D, H, W)
    walk = np.random.default_rng(0).normal(size=(4, 5, 6, 7)).astype(np.float32)
    viewer.layers.clear()
    viewer.add_image(walk, name="walk", scale=(1.0, 2.0, 1.0, 0.5))
    viewer.layers.save(str(tmp_path / "walk.nii.gz"), selected=False, plugin="napari-crfgan")
    vol = read_nifti(tmp_path / "walk.nii.gz", allow_4d=True)
    np.testing.assert_array_equal(vol.data, walk)
    assert vol.spacing == (2.0, 1.0, 0.5)


def test_read_nifti_refuses_4d_unless_asked(tmp_path):
    path = save(tmp_path / "s.nii.gz", np.zeros((4, 5, 6, 2), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="4D image with 2 volumes"):
        read_nifti(path)
    assert read_nifti(path, allow_4d=True).data.shape == (2, 6, 5, 4)


# ------------------------------------------------------------------------------------ display orientation


@pytest.mark.gui
def test_the_display_switch_changes_only_the_displayed_transform(make_napari_viewer, tmp_path, monkeypatch):
    affine = oblique_affine()
    path = save(tmp_path / "oblique.nii.gz", ct_phantom(), affine)
    viewer = make_napari_viewer()
    layers = {}
    for name in ("radiological", "neurological", "none"):
        monkeypatch.setenv(DISPLAY_ENV, name)
        [layers[name]] = viewer.open(str(path), plugin="napari-crfgan", name=name)
    index = only_index(layers["none"].data, MARK)
    written = {}
    for name, layer in layers.items():
        np.testing.assert_array_equal(layer.data, layers["none"].data)  # the data are never flipped
        for attr in ("scale", "translate", "rotate", "shear"):
            np.testing.assert_allclose(getattr(layer, attr), getattr(layers["none"], attr))
        signs = DISPLAY_ORIENTATIONS[name]
        np.testing.assert_allclose(layer.affine.affine_matrix, np.diag([*signs, 1.0]))
        np.testing.assert_allclose(np.asarray(layer.data_to_world(index)),
                                   np.multiply(signs, layers["none"].data_to_world(index)), atol=1e-9)
        np.testing.assert_allclose(napari_world(layer, index, name), world_of(affine, MARK_IJK), atol=1e-4)
        viewer.layers.selection = {layer}
        written[name] = nib.load(str(viewer.layers.save(str(tmp_path / f"{name}.nii.gz"), selected=True,
                                                        plugin="napari-crfgan")[0]))
    for back in written.values():  # the file is the same whatever the display
        np.testing.assert_allclose(back.affine, affine, atol=1e-4)
        np.testing.assert_array_equal(np.asanyarray(back.dataobj), np.asanyarray(written["none"].dataobj))
    monkeypatch.setenv(DISPLAY_ENV, "upside-down")
    with pytest.warns(UserWarning, match="unknown display orientation"):
        [(_, kwargs, _)] = read_volume_layers(path)
    assert kwargs["metadata"][DISPLAY_KEY] == "radiological"


def _bright_centre(viewer, qtbot):
    """(row, column) of the bright voxels on the canvas, as fractions of its height and width."""
    viewer.reset_view()
    qtbot.wait(50)
    shot = np.asarray(viewer.screenshot(canvas_only=True))[..., 0]
    rows, cols = np.nonzero(shot > 200)
    assert rows.size, "nothing bright on the canvas"
    return rows.mean() / shot.shape[0], cols.mean() / shot.shape[1]


@pytest.mark.gui
def test_radiological_display_shows_anterior_and_superior_at_the_top(make_napari_viewer, qtbot, tmp_path,
                                                                      monkeypatch):
    """On the screen: a block at the patient's right, anterior and superior (a RAS file)."""
    xyz = np.full((40, 30, 20), 10.0, np.float32)
    xyz[30:38, 22:28, 14:18] = 1000.0
    path = save(tmp_path / "ras.nii.gz", xyz, np.eye(4))
    seen = {}
    for name in ("radiological", "none"):
        monkeypatch.setenv(DISPLAY_ENV, name)
        viewer = make_napari_viewer(show=True)
        [layer] = viewer.open(str(path), plugin="napari-crfgan")
        layer.contrast_limits = (0.0, 1000.0)
        viewer.dims.set_point(0, layer.data_to_world((16, 0, 0))[0])  # an axial slice through the block
        axial = _bright_centre(viewer, qtbot)
        viewer.dims.order = (1, 0, 2)  # coronal: z vertical, x horizontal
        viewer.dims.set_point(1, layer.data_to_world((0, 25, 0))[1])
        coronal = _bright_centre(viewer, qtbot)
        seen[name] = axial, coronal
        viewer.close()
    (a_row, a_col), (c_row, c_col) = seen["radiological"]
    assert a_row < 0.5 and a_col < 0.5  # axial: anterior at the top, the patient's right on the screen's left
    assert c_row < 0.5 and c_col < 0.5  # coronal: superior at the top, right on the left
    (a_row, a_col), (c_row, c_col) = seen["none"]
    assert a_row > 0.5 and a_col > 0.5 and c_row > 0.5  # napari's plain axes: upside down


# ------------------------------------------------------------------------------------ sampled volumes


def test_sampled_volumes_follow_the_training_orientation(tmp_path, checkpoints):
    from napari_crfgan.runtime import load_checkpoint
    from napari_crfgan.sampling import Sampler

    folder = tmp_path / "train"
    folder.mkdir()
    affine = oblique_affine(degrees=10.0, zooms=(1.5, 1.5, 2.0))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 20, 16)], indexing="ij"))
    for k in range(2):
        blob = np.exp(-((grid - 0.1 * k) ** 2).sum(0) / 0.3) * 800 + 50
        save(folder / f"scan{k}.nii.gz", blob.astype(np.int16), affine)
    summary = VolumeDataset(folder, size=32).summary()
    assert summary["orientation"] == "LPS"
    canonical = nib.as_closest_canonical(nib.load(str(folder / "scan0.nii.gz"))).affine
    columns = canonical[:3, :3] / np.linalg.norm(canonical[:3, :3], axis=0)  # x, y, z voxel axes, RAS
    np.testing.assert_allclose(np.asarray(summary["direction"]), columns[::-1, ::-1], atol=1e-6)

    ckpt = load_checkpoint(checkpoints["crfgan"])
    ckpt = dataclasses.replace(ckpt, data={**ckpt.data, "orientation": summary["orientation"],
                                           "direction": summary["direction"]})
    sampler = Sampler(ckpt, device="cpu")
    [vol] = sampler.sample(1, seed=3)
    out = nib.load(str(vol.save(tmp_path / "sample.nii.gz")))
    assert "".join(nib.aff2axcodes(out.affine)) == "LPS"  # the training files' voxel order
    zooms = np.linalg.norm(out.affine[:3, :3], axis=0)
    np.testing.assert_allclose(zooms, sampler.spacing[::-1], rtol=1e-5)  # the sample's own spacing
    np.testing.assert_allclose(out.affine[:3, :3] / zooms, affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0),
                               atol=1e-6)  # the training files' axis directions: tilted by 10 degrees
    back = read_nifti(tmp_path / "sample.nii.gz")
    np.testing.assert_allclose(back.data, vol.data, atol=1e-6)
    np.testing.assert_allclose(back.spacing, sampler.spacing, rtol=1e-5)
    (tmp_path / "walk").mkdir()
    walk = sampler.write_walk(tmp_path / "walk", 0, 1, steps=2)
    assert "".join(nib.aff2axcodes(nib.load(str(walk[0])).affine)) == "LPS"


def test_npy_training_data_keep_the_plain_ras_grid(npy_folder):
    summary = VolumeDataset(npy_folder, size=32).summary()
    assert summary["orientation"] == "RAS" and summary["direction"] == np.eye(3).tolist()
