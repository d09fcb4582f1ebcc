"""Bad dataset inputs: each gives one line naming the file (a warning when it is skipped, a
DatasetError for the whole folder), never a traceback or a hang, and nothing is dropped silently."""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_crfgan.data import (
    DatasetError,
    LabelsWarning,
    ResamplingWarning,
    SkippedFilesWarning,
    VolumeDataset,
    VolumeError,
    load_volume,
    make_split,
    write_nifti,
)
from napari_crfgan.data import dataset as dataset_module
from napari_crfgan.data.preprocess import resampling_problem


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CRFGAN_CACHE_DIR", str(tmp_path / "cache"))


def _vol(rng, shape=(12, 12, 12)):
    return rng.normal(100, 20, size=shape).astype(np.float32)


def _folder(tmp_path, rng, name="data"):
    """A folder with one good NIfTI volume."""
    folder = tmp_path / name
    folder.mkdir()
    write_nifti(folder / "good.nii.gz", _vol(rng), (1.0, 1.0, 1.0))
    return folder


def _nifti_with_header(path: Path, rng, pixdim, srow, qform_code, sform_code):
    """An uncompressed NIfTI-1 whose pixdim[1:4], srow_x/y/z and form codes are written as given.

    nibabel rewrites a header from the affine when saving, so the fields are patched in the bytes
    (offsets of the NIfTI-1 header), as a foreign program could have written them.
    """
    nib.save(nib.Nifti1Image(_vol(rng), np.eye(4)), str(path))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<3f", raw, 80, *pixdim)
    struct.pack_into("<12f", raw, 280, *srow)
    struct.pack_into("<hh", raw, 252, qform_code, sform_code)
    path.write_bytes(bytes(raw))


def _skipped_message(folder: Path, total: int, lines: list[str]) -> str:
    return f"Skipped {len(lines)} of {total} files in {folder}:\n" + "\n".join(f"  {line}" for line in lines)


def _exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _caught(make):
    """``make()`` with every warning recorded: (result, {category name: [messages]})."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = make()
    out: dict[str, list[str]] = {}
    for w in caught:
        out.setdefault(w.category.__name__, []).append(str(w.message))
    return result, out


# ----------------------------------------------------------------------------- 1. spacing, any failure


def test_unusable_spacing_skips_the_file_and_the_rest_trains(tmp_path):
    rng = np.random.default_rng(0)
    folder = _folder(tmp_path, rng)
    write_nifti(folder / "tiny.nii.gz", _vol(rng), (1e-9, 1e-9, 1e-9))  # rounds to 0 mm
    _nifti_with_header(folder / "nan.nii", rng, (np.nan, 1, 1), [0] * 12, 0, 0)  # spacing from pixdim: NaN
    _nifti_with_header(folder / "zero.nii", rng, (1, 1, 1), [0] * 12, 0, 1)  # sform of zeros
    expected = _skipped_message(folder, 4, [
        "nan.nii: unusable voxel spacing nan x 1 x 1 mm (each must be finite and at least 1e-05 mm)",
        "tiny.nii.gz: unusable voxel spacing 1e-09 x 1e-09 x 1e-09 mm (each must be finite and at least 1e-05 mm)",
        "zero.nii: unusable voxel spacing 0 x 0 x 0 mm (each must be finite and at least 1e-05 mm)",
    ])
    with pytest.warns(SkippedFilesWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16, modality="mri")
    assert ds.files == ["good.nii.gz"] and len(ds) == 1
    with pytest.raises(VolumeError, match=r"^unusable voxel spacing 1e-09 x"):
        load_volume(folder / "tiny.nii.gz")


def test_negative_pixdim_is_fixed_by_nibabel_with_one_line_naming_the_file(tmp_path, capfd):
    rng = np.random.default_rng(1)
    folder = _folder(tmp_path, rng)
    _nifti_with_header(folder / "neg.nii", rng, (-2, 1, 1), [0] * 12, 0, 0)
    expected = (f"{folder / 'neg.nii'}: nibabel fixed its header "
                "(pixdim[1,2,3] should be positive; setting to abs of pixdim values)")
    with pytest.warns(UserWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16, modality="mri")
    assert ds.files == ["good.nii.gz", "neg.nii"]
    assert "pixdim" not in capfd.readouterr().err  # nibabel's own unnamed line is not printed as well


def test_any_failure_of_one_file_skips_only_that_file(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    folder = _folder(tmp_path, rng)
    np.save(folder / "odd.npy", _vol(rng))
    real_load = dataset_module.load_volume

    def failing_load(path, **kw):
        if Path(path).name == "odd.npy":
            raise RuntimeError(f"something broke\nwhile reading {path}")
        return real_load(path, **kw)

    monkeypatch.setattr(dataset_module, "load_volume", failing_load)
    expected = _skipped_message(folder, 2, ["odd.npy: failed (RuntimeError: something broke while reading odd.npy)"])
    with pytest.warns(SkippedFilesWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16, modality="mri")
    assert ds.files == ["good.nii.gz"]


# ----------------------------------------------------------------------------- 2. non-regular files


@pytest.mark.timeout(60)
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_named_pipe_and_broken_link_are_skipped_without_opening_them(tmp_path):
    rng = np.random.default_rng(3)
    folder = _folder(tmp_path, rng)
    os.mkfifo(folder / "pipe.nii.gz")  # opening it would wait for a writer forever
    os.symlink(folder / "gone.npy", folder / "link.npy")
    expected = _skipped_message(folder, 3, [
        "link.npy: broken symbolic link",
        "pipe.nii.gz: not a regular file (a named pipe)",
    ])
    with pytest.warns(SkippedFilesWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16, modality="mri")
    assert ds.files == ["good.nii.gz"]
    with pytest.raises(VolumeError, match=r"^not a regular file \(a named pipe\)$"):
        load_volume(folder / "pipe.nii.gz")


# ----------------------------------------------------------------------------- 3. what a thin image is


def test_degenerate_shapes_say_what_they_are(tmp_path):
    rng = np.random.default_rng(4)
    folder = _folder(tmp_path, rng)
    nib.save(nib.Nifti1Image(np.ones((1, 1, 1), np.float32), np.eye(4)), str(folder / "voxel.nii.gz"))
    np.save(folder / "line.npy", _vol(rng, (1, 1, 9)))
    np.save(folder / "slice.npy", _vol(rng, (1, 5, 6)))
    np.save(folder / "image.npy", _vol(rng, (5, 6)))
    expected = _skipped_message(folder, 5, [
        "image.npy: shape 5x6 is a 2D image, not a 3D volume",
        "line.npy: shape 1x1x9 is a line of voxels (1D), not a 3D volume",
        "slice.npy: shape 1x5x6 is a single slice (2D), not a 3D volume",
        "voxel.nii.gz: shape 1x1x1 is a single voxel, not a 3D volume",
    ])
    with pytest.warns(SkippedFilesWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16, modality="mri")
    assert ds.files == ["good.nii.gz"]


# ----------------------------------------------------------------------------- 4. NaN and inf voxels


def test_volumes_with_nan_or_inf_voxels_are_skipped_with_the_count(tmp_path):
    rng = np.random.default_rng(5)
    folder = _folder(tmp_path, rng)
    nan = _vol(rng)
    nan[0, 0, :3] = np.nan
    write_nifti(folder / "nan.nii.gz", nan)
    both = _vol(rng)
    both[1, 1, 1], both[2, 2, 2] = np.nan, -np.inf
    write_nifti(folder / "both.nii.gz", both)
    np.save(folder / "allnan.npy", np.full((4, 4, 4), np.nan, np.float32))
    expected = _skipped_message(folder, 4, [
        "allnan.npy: 64 of 64 voxels are not finite (64 NaN)",
        "both.nii.gz: 2 of 1728 voxels are not finite (1 NaN, 1 infinite)",
        "nan.nii.gz: 3 of 1728 voxels are not finite (3 NaN)",
    ])
    with pytest.warns(SkippedFilesWarning, match=_exactly(expected)):
        ds = VolumeDataset(folder, 16)  # automatic modality: a skipped file decides nothing
    assert ds.files == ["good.nii.gz"] and ds.modality == "mri"


# ----------------------------------------------------------------------------- 5. extreme resampling


def test_extreme_resampling_is_reported_and_the_volume_kept(tmp_path):
    rng = np.random.default_rng(6)
    folder = _folder(tmp_path, rng)
    # NIfTI (x, y, z) = 512 x 512 x 3: three axial slices
    nib.save(nib.Nifti1Image(_vol(rng, (512, 512, 3)), np.eye(4)), str(folder / "slab.nii.gz"))
    np.save(folder / "tiny.npy", _vol(rng, (2, 2, 2)))
    expected = (
        f"2 of 3 volumes in {folder} fit the 16^3 cube badly; they are kept, check their shape and spacing:\n"
        "  slab.nii.gz: 3x512x512 voxels (z, y, x) become 1x16x16 in the 16^3 cube: fewer than 8 voxels "
        "along z; a single slice of the cube along z\n"
        "  tiny.npy: 2x2x2 voxels (z, y, x) become 16x16x16 in the 16^3 cube: fewer than 8 voxels along z, y, x; "
        "upsampled 8x"
    )
    for _ in range(2):  # the second time from the cache: still said
        with pytest.warns(ResamplingWarning, match=_exactly(expected)):
            ds = VolumeDataset(folder, 16, modality="mri")
        assert ds.files == ["good.nii.gz", "slab.nii.gz", "tiny.npy"]
    assert resampling_problem((12, 12, 12), (1.0, 1.0, 1.0), 16) is None
    assert resampling_problem((64, 64, 64), (1.0, 1.0, 1.0), 256) is None  # 4x: not yet extreme
    assert "upsampled 5x" in resampling_problem((64, 64, 64), (1.0, 1.0, 1.0), 320)


# ----------------------------------------------------------------------------- 6. labels.csv


def test_integer_labels_are_one_class_however_written(tmp_path):
    rng = np.random.default_rng(7)
    folder = tmp_path / "lab"
    folder.mkdir()
    for name in ["a.npy", "b.npy", "c.npy", "d.npy"]:
        np.save(folder / name, _vol(rng, (8, 8, 8)))
    (folder / "labels.csv").write_text("filename,label\na.npy,1\nb.npy,01\nc.npy, 1 \nd.npy,10\n")
    ds, caught = _caught(lambda: VolumeDataset(folder, 8, modality="mri", conditional=True))
    assert ds.class_names == ["1", "10"] and ds.labels == [0, 0, 0, 1] and ds.num_classes == 2
    assert "LabelsWarning" not in caught and "SkippedFilesWarning" not in caught
    # labels that are not all integers stay text: '1' and '01' are then two names
    (folder / "labels.csv").write_text("filename,label\na.npy,1\nb.npy,01\nc.npy,cat\nd.npy,cat\n")
    assert VolumeDataset(folder, 8, modality="mri", conditional=True).class_names == ["01", "1", "cat"]


def test_label_rows_of_missing_or_skipped_files_are_reported(tmp_path):
    rng = np.random.default_rng(8)
    folder = tmp_path / "lab"
    folder.mkdir()
    for name in ["a.npy", "b.npy"]:
        np.save(folder / name, _vol(rng, (8, 8, 8)))
    np.save(folder / "flat.npy", np.full((8, 8, 8), 7.0, np.float32))
    (folder / "labels.csv").write_text("filename,label\na.npy,x\nb.npy,y\nflat.npy,x\ngone.npy,y\n")
    expected = (f"2 rows of {folder / 'labels.csv'} are not used:\n"
                "  gone.npy: not a volume file of the folder\n"
                "  flat.npy: its file was skipped (constant volume (every voxel is 7))")
    for conditional in (True, False):
        with pytest.warns(LabelsWarning, match=_exactly(expected)):
            ds = VolumeDataset(folder, 8, modality="mri", conditional=conditional)
        assert ds.files == ["a.npy", "b.npy"]


def test_conflicting_rows_and_unlabelled_files_are_named(tmp_path):
    rng = np.random.default_rng(9)
    folder = tmp_path / "lab"
    folder.mkdir()
    for i in range(9):
        np.save(folder / f"v{i}.npy", _vol(rng, (8, 8, 8)))
    rows = [f"v{i}.npy,{i % 2}" for i in range(8)] + ["v0.npy,1"]  # v0 twice, v8 not at all
    (folder / "labels.csv").write_text("filename,label\n" + "\n".join(rows) + "\n")
    conflict = (f"{folder / 'labels.csv'} lists 1 file(s) more than once with different labels:\n"
                "  v0.npy: the last label, '1', is used")
    unlabelled = (f"1 of 9 volume files of {folder} have no row in {folder / 'labels.csv'} and are left "
                  "out of the split:\n  v8.npy: no label")
    split, caught = _caught(lambda: make_split(folder, (0.4, 0.3, 0.3)))
    assert caught["LabelsWarning"] == [conflict, unlabelled]
    assert "v8.npy" not in [f for part in split.parts.values() for f in part]
    # a dataset of one part does not call the rows of the other parts unused
    ds, caught = _caught(lambda: split.dataset("train", 8, modality="mri", conditional=True))
    assert caught["LabelsWarning"] == [conflict] and ds.files == sorted(split.parts["train"])


# ----------------------------------------------------------------------------- existing errors, one sentence


def test_folder_errors_are_one_sentence_naming_the_folder_or_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=_exactly(f"No volume files (.nii, .nii.gz or .npy) were found in {empty}.")):
        VolumeDataset(empty, 16)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.nii.gz").write_bytes(b"garbage")
    (bad / "notes.nii").write_text("my notes\n" * 40)
    skipped = _skipped_message(bad, 2, [
        'notes.nii: not a readable NIfTI volume (ImageFileError: Cannot work out file type of "notes.nii")',
        "x.nii.gz: not a readable NIfTI volume (ImageFileError: File x.nii.gz is not a gzip file)",
    ])
    error = (f'No usable volume in {bad}: all 2 files were skipped (notes.nii: not a readable NIfTI volume '
             '(ImageFileError: Cannot work out file type of "notes.nii"), ...).')
    with pytest.warns(SkippedFilesWarning, match=_exactly(skipped)):  # every file's reason, not only the first
        with pytest.raises(DatasetError, match=_exactly(error)):
            VolumeDataset(bad, 16)
    rng = np.random.default_rng(10)
    folder = _folder(tmp_path, rng)
    labels = folder / "labels.csv"
    labels.write_text("name;class\ngood.nii.gz;1\n")
    with pytest.raises(DatasetError, match=_exactly(
            f"{labels} must start with the header 'filename,label' (found 'name;class').")):
        VolumeDataset(folder, 16, conditional=True)
    labels.write_bytes(b"filename,label\ngood.nii.gz,\xff\xfe\n")
    with pytest.raises(DatasetError, match=_exactly(
            f"Cannot read {labels}: 'utf-8' codec can't decode byte 0xff in position 27: invalid start byte.")):
        VolumeDataset(folder, 16, conditional=True)
