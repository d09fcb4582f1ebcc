"""Tests of napari_crfgan.data: NIfTI I/O, preprocessing, cache, folder datasets, demo data."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_crfgan.data import (
    DEMO_DATASETS,
    DatasetError,
    NiftiVolume,
    Preprocessing,
    SkippedFilesWarning,
    VolumeDataset,
    VolumeError,
    cache_dir,
    demo_folder,
    from_modality_units,
    load_volume,
    preprocess_volume,
    read_nifti,
    to_modality_units,
    write_nifti,
)
from napari_crfgan.data import dataset as dataset_module
from napari_crfgan.data.cache import cache_key, file_digest
from napari_crfgan.data.demo import make_chest_phantom
from napari_crfgan.data.preprocess import fit_to_cube, normalize_ct, normalize_mri, trim_background_slices


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("CRFGAN_CACHE_DIR", str(cache))
    return cache


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


def _blob(shape, rng, lo=-1000.0, hi=400.0):
    """A volume with a bright off-centre box, in HU-like values."""
    v = np.full(shape, lo, dtype=np.float32)
    d, h, w = shape
    v[d // 4 : 3 * d // 4, h // 4 : h // 2 + 2, w // 3 :] = hi
    return v + rng.normal(0, 5, shape).astype(np.float32)


# ----------------------------------------------------------------------------- NIfTI


def test_cache_dir_follows_env(_cache, monkeypatch):
    assert cache_dir() == _cache
    monkeypatch.delenv("CRFGAN_CACHE_DIR")
    assert cache_dir() == Path.home() / ".cache" / "napari-crfgan"


def test_nifti_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)  # (D, H, W), all different sizes
    spacing, origin = (2.5, 0.7, 1.3), (10.0, -20.0, 30.5)
    path = write_nifti(tmp_path / "v.nii.gz", data, spacing, origin)
    # on disk: NIfTI (x, y, z) = (W, H, D)
    img = nib.load(str(path))
    assert img.shape == (7, 6, 5)
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    np.testing.assert_allclose(img.header.get_zooms(), (1.3, 0.7, 2.5), rtol=1e-6)
    vol = read_nifti(path)
    assert isinstance(vol, NiftiVolume)
    assert vol.data.dtype == np.float32 and vol.data.shape == (5, 6, 7)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.spacing == spacing
    assert vol.origin == origin
    assert vol.header["shape"] == (7, 6, 5)
    # uncompressed and integer data too
    ints = rng.integers(-1000, 1000, size=(4, 3, 2)).astype(np.int16)
    vol2 = read_nifti(write_nifti(tmp_path / "v.nii", ints, (1.0, 2.0, 3.0)))
    np.testing.assert_array_equal(vol2.data, ints.astype(np.float32))
    assert vol2.spacing == (1.0, 2.0, 3.0) and vol2.origin == (0.0, 0.0, 0.0)
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left behind


def test_read_nifti_reorients_to_ras(tmp_path):
    """An LPS file (x and y flipped) is read as RAS, axes (z, y, x)."""
    xyz = np.arange(7 * 6 * 5, dtype=np.float32).reshape(7, 6, 5)
    affine = np.diag([-2.0, -3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(xyz, affine), str(tmp_path / "lps.nii.gz"))
    vol = read_nifti(tmp_path / "lps.nii.gz")
    expected = xyz[::-1, ::-1, :].transpose(2, 1, 0)
    np.testing.assert_array_equal(vol.data, expected)
    assert vol.spacing == (4.0, 3.0, 2.0)
    np.testing.assert_array_equal(vol.affine, affine)
    assert vol.header["orientation"] == "LPS"


def test_load_volume_formats_and_errors(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(size=(4, 5, 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", data.astype(np.float64))
    arr, spacing = load_volume(tmp_path / "a.npy")
    assert arr.dtype == np.float32 and spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(arr, data)
    # 4D with a singleton 4th dimension is fine
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0)[..., None], np.diag([3.0, 2.0, 1.0, 1.0])),
             str(tmp_path / "s4d.nii.gz"))
    arr, spacing = load_volume(tmp_path / "s4d.nii.gz")
    np.testing.assert_array_equal(arr, data)
    assert spacing == (1.0, 2.0, 3.0)
    # NaN: an error by default, kept with allow_nan
    nan = data.copy()
    nan[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(VolumeError, match="NaN"):
        load_volume(tmp_path / "nan.npy")
    arr, _ = load_volume(tmp_path / "nan.npy", allow_nan=True)
    assert np.isnan(arr[0, 0, 0]) and np.isfinite(arr[1:]).all()
    cases = {
        "inf.npy": (np.where(data > 1, np.inf, data), "infinite"),
        "flat.npy": (np.zeros((4, 5, 6)), "constant"),
        "img2d.npy": (data[0], "2D"),
        "thin.npy": (data[:1], "2D"),
        "multi.npy": (np.stack([data, data], -1), "4D"),
        "empty.npy": (np.zeros((0, 5, 6)), "empty"),
        "allnan.npy": (np.full((4, 5, 6), np.nan), "NaN"),
    }
    for name, (arr, reason) in cases.items():
        np.save(tmp_path / name, arr)
        with pytest.raises(VolumeError, match=reason):
            load_volume(tmp_path / name, allow_nan=True)
    (tmp_path / "text.nii").write_text("not an image at all\n" * 40)
    with pytest.raises(VolumeError) as err:
        load_volume(tmp_path / "text.nii")
    assert "NIfTI" in err.value.reason
    with pytest.raises(VolumeError, match="not found"):
        load_volume(tmp_path / "missing.nii.gz")


# ----------------------------------------------------------------------------- preprocessing


def test_ct_window_values():
    hu = np.array([-3000.0, -1024.0, -212.0, 600.0, 2000.0, np.nan, 188.0], dtype=np.float32)
    out = normalize_ct(hu)
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 1.0, 1.0, -1.0, 400 / 812], atol=1e-6)
    assert out.dtype == np.float32
    back = to_modality_units(out, "ct")
    np.testing.assert_allclose(back, [-1024, -1024, -212, 600, 600, -1024, 188], atol=1e-3)
    t = to_modality_units(torch.tensor([-1.0, 0.0, 1.0, 3.0]), "ct")
    assert torch.allclose(t, torch.tensor([-1024.0, -212.0, 600.0, 600.0]))
    np.testing.assert_allclose(to_modality_units(np.array([-1.0, 0.0, 1.0]), "mri"), [0.0, 0.5, 1.0])
    # and back
    np.testing.assert_allclose(from_modality_units(back, "ct"), np.clip(out, -1, 1), atol=1e-5)
    assert from_modality_units(back.astype(np.float32), "ct").dtype == np.float32
    np.testing.assert_allclose(from_modality_units(np.array([0.0, 0.25, 1.0, 2.0]), "mri"), [-1.0, -0.5, 1.0, 1.0])
    assert torch.allclose(from_modality_units(torch.tensor([-2000.0, -212.0, 600.0]), "ct"),
                          torch.tensor([-1.0, 0.0, 1.0]))


def test_mri_percentile_scaling():
    x = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    out = normalize_mri(x)
    lo, hi = np.percentile(x, [0.5, 99.5])
    assert out.min() == -1.0 and out.max() == 1.0
    np.testing.assert_allclose(out.reshape(-1)[500], (500 - lo) / (hi - lo) * 2 - 1, atol=1e-5)
    assert (out.reshape(-1)[:5] == -1).all() and (out.reshape(-1)[-5:] == 1).all()
    x[0, 0, 0] = np.nan
    assert np.isfinite(normalize_mri(x)).all()


def test_fit_keeps_aspect_and_pads():
    # 2:1 (D shorter): padded along D, not stretched
    vol = np.full((16, 32, 32), 0.5, dtype=np.float32)
    cube, spacing = fit_to_cube(vol, (1.0, 1.0, 1.0), 32)
    assert cube.shape == (32, 32, 32) and spacing == (1.0, 1.0, 1.0)
    assert (cube[:8] == -1).all() and (cube[24:] == -1).all()
    np.testing.assert_allclose(cube[8:24], 0.5, atol=1e-6)
    # same voxels, 2 mm slices: physically a cube, so it fills it, 1 mm iso
    cube, spacing = fit_to_cube(vol, (2.0, 1.0, 1.0), 32)
    assert spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(cube, 0.5, atol=1e-6)
    # downsampling 2:1 in W into a 16-cube: 4 mm iso, H padded
    vol = np.zeros((64, 32, 64), dtype=np.float32)
    vol[:, :, 32:] = 1.0  # right half bright
    cube, spacing = fit_to_cube(vol, (1.0, 1.0, 1.0), 16)
    assert spacing == (4.0, 4.0, 4.0)
    assert (cube[:, :4] == -1).all() and (cube[:, 12:] == -1).all()
    np.testing.assert_allclose(cube[:, 4:12, :7], 0.0, atol=1e-6)
    np.testing.assert_allclose(cube[:, 4:12, 9:], 1.0, atol=1e-6)


def test_ct_trims_blank_slices():
    vol = np.full((20, 16, 16), -1024.0, dtype=np.float32)
    vol[5:15, 2:14, 2:14] = 0.0  # body in slices 5..14
    vol[9] = -1024.0  # a blank interior slice stays
    trimmed = trim_background_slices(vol, -500.0)
    assert trimmed.shape == (10, 16, 16)
    assert (trimmed[4] == -1024).all()
    cube, spacing = preprocess_volume(vol, (1.0, 1.0, 1.0), Preprocessing("ct", 16))
    assert spacing == (1.0, 1.0, 1.0)  # 10 x 16 x 16 mm after trimming, not 20
    assert (cube[:3] == -1).all() and (cube[13:] == -1).all()
    np.testing.assert_allclose(cube[3:13][cube[3:13] > -1], normalize_ct(np.float32(0.0)), atol=1e-5)
    # MRI keeps every slice
    _, spacing = preprocess_volume(vol + 1024, (1.0, 1.0, 1.0), Preprocessing("mri", 16))
    assert spacing == (1.25, 1.25, 1.25)
    # NaN in CT becomes air
    vol[5, 5, 5] = np.nan
    cube, _ = preprocess_volume(vol, (1.0, 1.0, 1.0), Preprocessing("ct", 16))
    assert np.isfinite(cube).all() and cube.min() >= -1 and cube.max() <= 1


def test_preprocessing_validates():
    with pytest.raises(ValueError):
        Preprocessing("pet", 32)
    with pytest.raises(ValueError):
        Preprocessing("ct", 1)
    assert Preprocessing("CT", 32).modality == "ct"
    assert Preprocessing("ct", 32) == Preprocessing("ct", 32)


# ----------------------------------------------------------------------------- cache


def test_cache_hit_and_key_changes(tmp_path, _cache, monkeypatch):
    rng = np.random.default_rng(2)
    folder = tmp_path / "data"
    folder.mkdir()
    write_nifti(folder / "a.nii.gz", _blob((12, 20, 16), rng), (2.0, 1.0, 1.0))
    write_nifti(folder / "b.nii.gz", _blob((10, 16, 16), rng), (1.5, 1.0, 1.0))
    loads = []
    real_load = dataset_module.load_volume

    def counting_load(path, **kw):
        loads.append(Path(path).name)
        return real_load(path, **kw)

    monkeypatch.setattr(dataset_module, "load_volume", counting_load)
    ds1 = VolumeDataset(folder, 16, modality="ct")
    assert sorted(loads) == ["a.nii.gz", "b.nii.gz"]
    cached = sorted(_cache.rglob("volumes/*/*.npy"))
    assert len(cached) == 2
    mtimes = [p.stat().st_mtime_ns for p in cached]
    loads.clear()
    ds2 = VolumeDataset(folder, 16, modality="ct")
    assert loads == []  # served from the cache
    assert [p.stat().st_mtime_ns for p in sorted(_cache.rglob("volumes/*/*.npy"))] == mtimes
    assert torch.equal(ds1[0], ds2[0]) and ds1.spacing == ds2.spacing
    # auto modality on a warm cache reads nothing either
    ds3 = VolumeDataset(folder, 16)
    assert loads == [] and ds3.modality == "ct"
    # new content -> new key -> reprocessed; other file still cached
    d0 = file_digest(folder / "a.nii.gz")
    write_nifti(folder / "a.nii.gz", _blob((12, 20, 16), rng, hi=200.0), (2.0, 1.0, 1.0))
    d1 = file_digest(folder / "a.nii.gz")
    assert d0 != d1
    settings = Preprocessing("ct", 16).as_dict()
    assert cache_key(d0, settings) != cache_key(d1, settings)
    assert cache_key(d0, settings) != cache_key(d0, Preprocessing("ct", 32).as_dict())
    assert cache_key(d0, settings) != cache_key(d0, Preprocessing("mri", 16).as_dict())
    VolumeDataset(folder, 16, modality="ct")
    assert loads == ["a.nii.gz"]
    # other settings -> reprocessed
    loads.clear()
    VolumeDataset(folder, 8, modality="ct")
    assert sorted(loads) == ["a.nii.gz", "b.nii.gz"]


# ----------------------------------------------------------------------------- dataset


def _mixed_folder(folder: Path, rng) -> dict[str, str]:
    """Two good files (one .nii.gz, one .npy in a sub-folder) and bad ones; returns {bad: reason word}."""
    folder.mkdir()
    good = _blob((12, 20, 16), rng)
    write_nifti(folder / "good.nii.gz", good, (2.0, 1.0, 1.0))
    (folder / "sub").mkdir()
    np.save(folder / "sub" / "good.npy", _blob((16, 16, 16), rng))
    # corrupt: a truncated gzip stream of a real NIfTI
    raw = (folder / "good.nii.gz").read_bytes()
    (folder / "corrupt.nii.gz").write_bytes(raw[: len(raw) // 2])
    nib.save(nib.Nifti1Image(good[0].T.copy(), np.eye(4)), str(folder / "slice2d.nii.gz"))
    nib.save(nib.Nifti1Image(np.stack([good.T] * 3, -1), np.eye(4)), str(folder / "series4d.nii.gz"))
    badvals = good.copy()
    badvals[3, 3, 3] = np.inf
    badvals[4, 4, 4] = np.nan
    write_nifti(folder / "badvalues.nii.gz", badvals, (1.0, 1.0, 1.0))
    np.save(folder / "constant.npy", np.full((8, 8, 8), 7.0, dtype=np.float32))
    (folder / "notes.nii").write_text("these are my notes, not a volume\n" * 20)
    return {
        "corrupt.nii.gz": "corrupt",
        "slice2d.nii.gz": "2D",
        "series4d.nii.gz": "4D",
        "badvalues.nii.gz": "infinite",
        "constant.npy": "constant",
        "notes.nii": "NIfTI",
    }


def test_mixed_folder_skips_bad_files_with_one_warning(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "mixed"
    bad = _mixed_folder(folder, rng)
    before = _listing(folder)
    calls = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VolumeDataset(folder, 16, progress=lambda done, total: calls.append((done, total)))
    skipped_warnings = [w for w in caught if issubclass(w.category, SkippedFilesWarning)]
    assert len(skipped_warnings) == 1
    assert issubclass(SkippedFilesWarning, UserWarning)
    message = str(skipped_warnings[0].message)
    assert ds.files == ["good.nii.gz", "sub/good.npy"]
    assert len(ds) == 2
    assert dict(ds.skipped).keys() == bad.keys()
    for name, word in bad.items():
        assert word in dict(ds.skipped)[name], (name, dict(ds.skipped)[name])
        assert name in message and dict(ds.skipped)[name] in message
    assert calls[-1] == (8, 8) and len(calls) == 8
    # the user's folder is untouched
    assert _listing(folder) == before
    # items
    x = ds[1]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.shape == (1, 16, 16, 16)
    assert x.min() >= -1 and x.max() <= 1 and x.max() > 0.5
    assert ds[-1].shape == (1, 16, 16, 16)
    with pytest.raises(IndexError):
        ds[2]
    assert ds.modality == "ct"  # raw minimum -1000 HU
    # CT trimming keeps the 6 (of 12) slices holding the bright box:
    # good.nii.gz: 12 x 20 x 16 mm -> 20 / 16 = 1.25 mm; good.npy: 8 x 16 x 16 mm -> 1 mm
    assert ds.spacings == [(1.25, 1.25, 1.25), (1.0, 1.0, 1.0)]
    assert ds.spacing == (1.125, 1.125, 1.125)
    summary = ds.summary()
    assert summary["count"] == 2 and summary["skipped"] == 6 and summary["modality"] == "ct"
    assert summary["size"] == 16 and summary["spacing"] == [1.125, 1.125, 1.125]
    assert ds.labels is None and ds.num_classes == 0 and ds.class_names == []


def test_empty_missing_and_all_bad_folders_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no volumes here")
    with pytest.raises(DatasetError, match="No volume files"):
        VolumeDataset(tmp_path / "empty", 16)
    with pytest.raises(DatasetError, match="does not exist"):
        VolumeDataset(tmp_path / "nowhere", 16)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.save(bad / "flat.npy", np.zeros((4, 4, 4)))
    (bad / "x.nii.gz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="No usable volume") as err:
        VolumeDataset(bad, 16)
    assert len(err.value.skipped) == 2


def test_labels_csv_mapping(tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "lab"
    (folder / "sub").mkdir(parents=True)
    for name in ["b.npy", "a.npy", "sub/c.npy", "d.npy"]:
        np.save(folder / name, rng.normal(size=(8, 8, 8)).astype(np.float32))
    (folder / "labels.csv").write_text("filename,label\na.npy,dog\nb.npy,cat\n./sub/c.npy, dog\n")
    ds = VolumeDataset(folder, 8, modality="mri")
    assert ds.files == ["a.npy", "b.npy", "d.npy", "sub/c.npy"]
    assert ds.labels is None  # d.npy has no label
    assert ds.num_classes == 0
    with pytest.warns(SkippedFilesWarning, match="d.npy: no label"):
        dsc = VolumeDataset(folder, 8, modality="mri", conditional=True)
    assert dsc.files == ["a.npy", "b.npy", "sub/c.npy"]
    assert dsc.class_names == ["cat", "dog"]
    assert dsc.labels == [1, 0, 1] and dsc.num_classes == 2
    assert dsc[2].shape == (1, 8, 8, 8) and dsc.label(2) == 1
    assert dsc.summary()["classes"] == dsc.summary()["class_names"] == ["cat", "dog"]
    # integer labels sort numerically
    (folder / "labels.csv").write_text("filename,label\na.npy,10\nb.npy,2\nsub/c.npy,2\nd.npy,10\n")
    dsi = VolumeDataset(folder, 8, modality="mri", conditional=True)
    assert dsi.class_names == ["2", "10"] and dsi.labels == [1, 0, 1, 0]
    # conditional without labels.csv, or a malformed one
    (folder / "labels.csv").write_text("name;class\n")
    with pytest.raises(DatasetError, match="filename,label"):
        VolumeDataset(folder, 8, conditional=True)
    (folder / "labels.csv").unlink()
    with pytest.raises(DatasetError, match="labels.csv"):
        VolumeDataset(folder, 8, conditional=True)


# ----------------------------------------------------------------------------- demo data


def test_demo_chest(tmp_path, _cache):
    assert DEMO_DATASETS == ("demo-brain", "demo-chest")
    folder = demo_folder("demo-chest", count=3, seed=0)
    assert folder.is_relative_to(_cache)
    names = sorted(p.name for p in folder.glob("*.nii.gz"))
    assert names == ["chest_000.nii.gz", "chest_001.nii.gz", "chest_002.nii.gz"]
    vol = read_nifti(folder / names[0])
    assert vol.data.shape == (96, 128, 128) and vol.spacing == (3.0, 2.5, 2.5)
    hu = vol.data
    assert hu.min() <= -1000 and 300 < hu.max() < 900
    # lungs present: a large share of voxels near -850 HU
    assert ((hu > -900) & (hu < -780)).mean() > 0.05
    ds = VolumeDataset(folder, 32)  # auto modality from HU values
    assert ds.modality == "ct"
    assert ds.class_names == ["no-nodule", "nodule"]
    assert set(ds.labels) == {0, 1}
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (1, 32, 32, 32) and torch.isfinite(x).all()
        assert x.min() >= -1 and x.max() <= 1 and x.std() > 0.2
    # reused, not regenerated
    mtime = (folder / names[0]).stat().st_mtime_ns
    assert demo_folder("demo-chest", count=3, seed=0) == folder
    assert (folder / names[0]).stat().st_mtime_ns == mtime
    # deterministic for a seed (generated again elsewhere), different for another seed
    other = demo_folder("demo-chest", count=2, seed=0, cache_dir=tmp_path / "other")
    np.testing.assert_array_equal(read_nifti(other / names[1]).data, read_nifti(folder / names[1]).data)
    seed1 = demo_folder("demo-chest", count=2, seed=1, cache_dir=tmp_path / "other")
    assert not np.array_equal(read_nifti(seed1 / names[0]).data, hu)
    # the demo name works directly as a source
    dsn = VolumeDataset("demo-chest", 32, demo_count=3, conditional=True)
    assert dsn.num_classes == 2 and len(dsn) == 3 and dsn.summary()["source"] == "demo-chest"


def test_chest_phantom_nodules():
    vol, nodules = make_chest_phantom(7, nodule=True)
    assert 1 <= len(nodules) <= 3
    for n in nodules:
        assert 6.0 <= n["diameter_mm"] <= 25.0
        d, h, w = n["center"]
        assert -60 < vol[d, h, w] < 110  # soft tissue inside the lung
    _, none = make_chest_phantom(7, nodule=False)
    assert none == []


def test_demo_brain(tmp_path, _cache):
    folder = demo_folder("demo-brain", count=2, seed=0)
    files = sorted(folder.glob("*.nii.gz"))
    assert [p.name for p in files] == ["brain_000.nii.gz", "brain_001.nii.gz"]
    v0, v1 = (read_nifti(p) for p in files)
    assert v0.spacing == (2.0, 2.0, 2.0) and v0.data.ndim == 3
    assert v0.data.min() >= 0 and v0.data.max() > 100
    assert not np.array_equal(v0.data, v1.data)  # varied per volume
    again = demo_folder("demo-brain", count=1, seed=0, cache_dir=tmp_path / "again")
    np.testing.assert_array_equal(read_nifti(again / "brain_000.nii.gz").data, v0.data)
    ds = VolumeDataset(folder, 32)
    assert ds.modality == "mri" and len(ds) == 2 and ds.labels is None
    x = ds[0]
    assert torch.isfinite(x).all() and x.min() == -1 and 0.8 < x.max() <= 1
    # the brain fills the cube along its longest axis, padding elsewhere stays -1
    assert ds.spacing[0] == pytest.approx(max(np.array(v0.data.shape) * 2.0) / 32, rel=0.05)
    ds2 = VolumeDataset("demo-brain", 32, demo_count=2)
    assert ds2.folder == folder and ds2.modality == "mri"


def test_data_package_does_not_import_napari_or_qt():
    code = (
        "import sys, napari_crfgan.data\n"
        "bad = [m for m in sys.modules\n"
        "       if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6')]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
