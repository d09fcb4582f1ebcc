"""Reliability, part 1: nothing a user made is lost or replaced without a word.

One test per row of docs/reliability.md's "Nothing lost" table, each asserting the exact
message the user sees. Tiny presets on CPU, real training steps, real NIfTI files.
"""
import errno
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from napari_crfgan import cli
from napari_crfgan.experiments.demo import DemoOptions, run_demo
from napari_crfgan.runtime import CheckpointError, load_checkpoint
from napari_crfgan.training import TrainingError, TrainOptions, run_training

CLI = [sys.executable, "-m", "napari_crfgan.cli"]
TINY = dict(data="demo-brain", demo_count=3, preset="tiny-32", batch_size=2, device="cpu", threads=1)


def tiny(out, **kw) -> TrainOptions:
    return TrainOptions(out=out, **{**TINY, "iterations": 2, **kw})


def error_of(capsys, *argv) -> str:
    """Run `crfgan ARGV` in this process; its one stderr line (exit status 2 asserted)."""
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    return err[-1]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A user's finished tiny run (2 iterations on 3 demo-brain volumes)."""
    out = tmp_path_factory.mktemp("user-run")
    run_training(tiny(out))
    return out


def test_demo_refuses_a_run_of_the_users(run_folder):
    before = (run_folder / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(
            f"{run_folder / 'checkpoint.pt'} was started with demo count 3 (now 60), seed 0 (now 5), batch size "
            "2 (now 4); resume with the same values, choose another output folder, or pass --fine-tune to continue "
            "it on purpose")):
        run_demo(DemoOptions(out=str(run_folder), iterations=1, seed=5, preset="tiny-32"))
    assert (run_folder / "checkpoint.pt").read_bytes() == before
    assert not (run_folder / "split.json").exists()  # not even a split was written into it


def test_demo_refuses_a_folder_of_other_files(tmp_path, capsys):
    (tmp_path / "scan.nii.gz").write_bytes(b"mine")
    assert error_of(capsys, "demo", "--out", tmp_path, "--iterations", "1") == (
        f"crfgan: error: {tmp_path} is not a demo run folder (it holds scan.nii.gz); choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.parametrize("change,named", [
    (dict(seed=1), "seed 0 (now 1)"),
    (dict(batch_size=3), "batch size 2 (now 3)"),
    (dict(demo_count=4), "demo count 3 (now 4)"),
    (dict(data="demo-chest"), "data 'demo-brain' (now 'demo-chest')"),
])
def test_resume_with_other_data_seed_or_batch_is_refused(run_folder, change, named):
    before = (run_folder / "checkpoint.pt").read_bytes()
    with pytest.raises(CheckpointError, match=re.escape(f"was started with {named}; resume with the same values")):
        run_training(tiny(run_folder, iterations=3, resume="yes", **change))
    assert (run_folder / "checkpoint.pt").read_bytes() == before


def test_resume_onto_changed_volumes_is_refused_by_their_digest(tmp_path, npy_folder):
    run_training(tiny(tmp_path / "run", data=str(npy_folder), demo_count=None))
    vol = npy_folder / "vol0.npy"
    arr = __import__("numpy").load(vol)
    __import__("numpy").save(vol, arr * 2)  # same names, other content
    with pytest.raises(CheckpointError, match=re.escape(
            f"the volumes of {npy_folder} changed since {tmp_path / 'run' / 'checkpoint.pt'} was trained on them "
            "(their content digest differs); resume on the same data, or pass --fine-tune")):
        run_training(tiny(tmp_path / "run", data=str(npy_folder), demo_count=None, iterations=3, resume="yes"))


def test_fine_tune_onto_new_data_is_recorded(tmp_path):
    run_training(tiny(tmp_path))
    run_training(tiny(tmp_path, iterations=3, resume="yes", data="demo-chest", fine_tune=True))
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.iteration == 3 and ckpt.options["identity"]["data"] == "demo-chest"
    (earlier,) = ckpt.options["history"]
    assert earlier["until_iteration"] == 2 and earlier["data"] == "demo-brain" and len(earlier["digest"]) == 64


def test_sample_refuses_to_replace_earlier_samples(checkpoints, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli.main(["sample", "--checkpoint", checkpoints["crfgan"], "--num", "2", "--out", str(out)]) == 0
    first = (out / "sample_seed0000.nii.gz").read_bytes()
    assert error_of(capsys, "sample", "--checkpoint", checkpoints["hagan"], "--num", "2", "--out", out) == (
        f"crfgan: error: {out / 'sample_seed0000.nii.gz'} and 1 more files exist already; pass --overwrite to "
        "replace them, or choose another output folder")
    assert (out / "sample_seed0000.nii.gz").read_bytes() == first
    assert cli.main(["sample", "--checkpoint", checkpoints["hagan"], "--num", "2", "--out", str(out),
                     "--overwrite"]) == 0
    assert (out / "sample_seed0000.nii.gz").read_bytes() != first


def test_eval_refuses_to_replace_a_report(tmp_path, capsys):
    report = tmp_path / "report.md"
    report.write_text("mine")
    assert error_of(capsys, "eval", "--fake", "demo-brain", "--report", report) == (
        f"crfgan: error: --report {report} exists; pass --overwrite to replace it")
    assert error_of(capsys, "eval", "--fake", "demo-brain", "--report", tmp_path) == (
        f"crfgan: error: --report {tmp_path} is a folder; give a file name")
    assert report.read_text() == "mine"


def _diverge_at(monkeypatch, iteration: int):
    """Make the system's losses NaN from `iteration` on (a diverging run), after a real step."""
    from napari_crfgan.model.crfgan import CRFGAN

    real_step = CRFGAN.train_step

    def step(self, real, labels, it, optimizers):
        losses = real_step(self, real, labels, it, optimizers)
        return {k: float("nan") for k in losses} if it + 1 >= iteration else losses

    monkeypatch.setattr(CRFGAN, "train_step", step)


def test_nan_losses_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch):
    _diverge_at(monkeypatch, 4)
    with pytest.raises(TrainingError, match=re.escape(
            "the losses diverged at iteration 4 (d=nan, g=nan, crf=nan, encoder=nan); stopped without saving, the "
            "last good checkpoint (iteration 2) is kept; try a lower learning rate or another recipe")) as info:
        run_training(tiny(tmp_path, iterations=6, checkpoint_every=2))
    assert "losses diverged" in str(info.value)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.iteration == 2 and all(torch.isfinite(v).all() for v in ckpt.state.values() if v.is_floating_point())


def test_a_nan_checkpoint_is_refused_by_sample_and_resume(tmp_path, capsys):
    run_training(tiny(tmp_path))
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    key = next(k for k, v in raw["state"].items() if v.is_floating_point())
    raw["state"][key] = torch.full_like(raw["state"][key], float("nan"))
    torch.save(raw, tmp_path / "checkpoint.pt")
    expected = (f"{tmp_path / 'checkpoint.pt'} holds non-finite weights ({key}): the run it comes from diverged; "
                "use a checkpoint from before")
    assert error_of(capsys, "sample", "--checkpoint", tmp_path, "--out", tmp_path / "s") == f"crfgan: error: {expected}"
    assert not (tmp_path / "s").exists()
    with pytest.raises(CheckpointError, match=re.escape(expected)):
        run_training(tiny(tmp_path, iterations=3, resume="yes"))


def test_sigterm_stops_training_and_keeps_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--data", "demo-brain", "--demo-count", "3", "--preset", "tiny-32", "--iterations", "100000",
            "--batch-size", "2", "--checkpoint-every", "100000", "--out", str(run), "--device", "cpu",
            "--threads", "1"]
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = bytearray()
    def drain():  # keep the pipe empty (a full pipe would block the child) and remember what it said
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.time() + 240
    while b"/100000" not in seen and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)  # the progress bar shows once the stop handlers are in place
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = seen.decode()
    assert proc.returncode == 0, err
    assert "stopped at iteration" in err and "checkpoint kept" in err
    ckpt = load_checkpoint(run)
    assert 0 < ckpt.iteration < 100000  # nothing was saved before the signal: every step since start is kept


def test_an_unusable_out_is_refused_before_any_work(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert error_of(capsys, "train", "--data", "demo-brain", "--out", afile / "run") == (
        f"crfgan: error: the output folder {afile / 'run'} cannot be made: {afile} is a file")
    assert error_of(capsys, "train", "--data", "demo-brain", "--out", afile) == (
        f"crfgan: error: the output folder {afile} cannot be made: {afile} is a file")
    assert error_of(capsys, "sample", "--checkpoint", "pretrained:demo-brain", "--out", afile) == (
        f"crfgan: error: the output folder {afile} cannot be made: {afile} is a file")
    assert error_of(capsys, "pretrain", "--name", "demo-brain", "--work", tmp_path / "w", "--out", afile / "w") == (
        f"crfgan: error: the weights folder {afile / 'w'} cannot be made: {afile} is a file")
    assert not (tmp_path / "w").exists()  # refused before the training run was set up


@pytest.mark.skipif(hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_out_is_refused_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert error_of(capsys, "train", "--data", "demo-brain", "--out", locked / "run") == (
            f"crfgan: error: the output folder {locked / 'run'} cannot be made: {locked} is not writable")
    finally:
        locked.chmod(0o755)


def test_disk_full_while_saving_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import napari_crfgan.training.trainer as trainer

    run_training(tiny(tmp_path, checkpoint_every=1))
    real_save = trainer.save_checkpoint

    def full(path, ckpt):
        if ckpt.iteration >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, ckpt)

    monkeypatch.setattr(trainer, "save_checkpoint", full)
    with pytest.raises(TrainingError, match=re.escape(
            f"cannot write the checkpoint {tmp_path / 'checkpoint.pt'} (No space left on device); training "
            "stopped at iteration 4, the last checkpoint (iteration 3) is kept")):
        run_training(tiny(tmp_path, iterations=5, checkpoint_every=1, resume="yes"))
    assert load_checkpoint(tmp_path).iteration == 3


def test_disk_full_while_sampling_is_one_line(checkpoints, tmp_path, monkeypatch, capsys):
    import nibabel

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "s" / "sample_seed0000.nii.gz"))

    monkeypatch.setattr(nibabel, "save", full)
    assert error_of(capsys, "sample", "--checkpoint", checkpoints["crfgan"], "--out", tmp_path / "s") == (
        f"crfgan: error: No space left on device: {tmp_path / 's' / 'sample_seed0000.nii.gz'}")


def test_stale_temporary_files_of_a_killed_save_are_removed(tmp_path):
    run_training(tiny(tmp_path))
    stale = tmp_path / ".checkpoint.pt.0123abcd.tmp"
    stale.write_bytes(b"half a checkpoint")
    run_training(tiny(tmp_path, iterations=3, resume="yes"))
    assert not stale.exists() and load_checkpoint(tmp_path).iteration == 3
