"""Held-out data: `crfgan split` lists, training on the train list only, eval against the test list."""
import json

import nibabel as nib
import numpy as np
import pytest

from napari_crfgan.cli import main
from napari_crfgan.data import DatasetError, VolumeDataset, make_split, read_split, write_split
from napari_crfgan.data.split import split_indices


def _folder(tmp_path, n=10, labels=False):
    folder = tmp_path / "scans"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = ["filename,label"]
    for i in range(n):
        data = rng.normal(100, 20, size=(12, 12, 12)).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), folder / f"s{i:02d}.nii.gz")
        rows.append(f"s{i:02d}.nii.gz,{'a' if i % 2 else 'b'}")
    if labels:
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_split_is_deterministic_disjoint_and_stratified(tmp_path):
    folder = _folder(tmp_path, 12, labels=True)
    a, b = make_split(folder, (0.5, 0.25, 0.25), seed=3), make_split(folder, (0.5, 0.25, 0.25), seed=3)
    assert a.parts == b.parts and a.stratified
    names = [f for p in a.parts.values() for f in p]
    assert sorted(names) == sorted(f"s{i:02d}.nii.gz" for i in range(12)) and len(set(names)) == 12
    for part in a.parts.values():  # both classes in every part
        assert {int(f[1:3]) % 2 for f in part} == {0, 1}
    assert make_split(folder, (0.5, 0.25, 0.25), seed=4).parts != a.parts
    assert split_indices(None, (0.6, 0.2, 0.2), 0, n=10) == split_indices([0] * 10, (0.6, 0.2, 0.2), 0)


def test_write_split_keeps_an_existing_other_split(tmp_path):
    folder = _folder(tmp_path)
    run = tmp_path / "run"
    path = write_split(make_split(folder, seed=0), run)
    assert write_split(make_split(folder, seed=0), run) == path  # the same split: fine
    with pytest.raises(FileExistsError, match="another split"):
        write_split(make_split(folder, seed=1), run)
    assert read_split(path).seed == 0
    write_split(make_split(folder, seed=1), run, force=True)
    assert read_split(path).seed == 1


def test_dataset_of_a_part_and_a_changed_folder(tmp_path):
    folder = _folder(tmp_path)
    split = make_split(folder, (0.6, 0.2, 0.2), seed=0)
    train = split.dataset("train", 16)
    assert train.files == sorted(split.parts["train"]) and train.summary()["split"]["part"] == "train"
    (folder / split.parts["test"][0]).unlink()
    with pytest.raises(DatasetError, match="not in"):
        split.dataset("test", 16)
    with pytest.raises(DatasetError, match="not in"):
        VolumeDataset(folder, 16, files=["nope.nii.gz"])


def test_train_uses_the_train_list_and_eval_the_test_list(tmp_path, capsys):
    folder = _folder(tmp_path, 12)
    run = tmp_path / "run"
    assert main(["split", "--data", str(folder), "--out", str(run), "--train", "0.5", "--val", "0.1",
                 "--test", "0.4"]) == 0
    split = json.loads((run / "split.json").read_text())
    assert main(["train", "--data", str(folder), "--out", str(run), "--preset", "tiny-32", "--iterations", "1",
                 "--threads", "1"]) == 0
    assert "the train list of" in capsys.readouterr().err
    from napari_crfgan.runtime import load_checkpoint

    data = load_checkpoint(run / "checkpoint.pt").data
    assert data["count"] == len(split["parts"]["train"]) and data["split"]["parts"] == split["parts"]
    capsys.readouterr()
    assert main(["eval", "--fake", str(run), "--num", "6", "--features", "shallow",  # the run folder is enough
                 "--seeds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"]["held_out"] is True and result["counts"]["real"] == len(split["parts"]["test"])
    assert "test list" in result["split"]["real"] and result["memorisation"]["null"] == 0.05
    # another data folder than the split's is refused before any training
    other = tmp_path / "other"
    other.mkdir()
    for f in sorted(folder.glob("*.nii.gz"))[:4]:
        (other / f.name).write_bytes(f.read_bytes())
    args = ["train", "--data", str(other), "--out", str(run), "--preset", "tiny-32", "--iterations", "2",
            "--resume", "--threads", "1"]
    assert main(args) == 2
    assert f"was started with data {str(folder)!r} (now {str(other)!r})" in capsys.readouterr().err
    assert main(args + ["--fine-tune"]) == 2  # a fine-tune onto other data still needs a split of that data
    assert "splits" in capsys.readouterr().err


def test_eval_against_the_training_set_is_labelled(tmp_path, capsys):
    folder = _folder(tmp_path, 8)
    run = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--out", str(run), "--preset", "tiny-32", "--iterations", "1",
                 "--threads", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", "--real", str(folder), "--fake", str(run / "checkpoint.pt"), "--num", "6",
                 "--features", "shallow", "--seeds", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"]["held_out"] is False and "own training set" in result["split"]["note"]
    assert "memorisation" not in result
    assert main(["eval", "--fake", str(run / "checkpoint.pt"), "--num", "6"]) == 2
    assert "--real" in capsys.readouterr().err
