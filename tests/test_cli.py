import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from napari_crfgan.data import read_nifti
from napari_crfgan.runtime import load_checkpoint

CLI = [sys.executable, "-m", "napari_crfgan.cli"]


def crfgan(*args, **kw):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, **kw)


@pytest.mark.parametrize("model,preset,total", [
    pytest.param("hagan", "paper-256", 79_744_884, marks=pytest.mark.slow),  # 14 s each; paper-128 runs always
    ("hagan", "paper-128", 79_583_972),
    pytest.param("crfgan", "paper-256", 57_244_594, marks=pytest.mark.slow), ("crfgan", "paper-128", 57_209_762),
])
def test_params_json(model, preset, total):
    out = crfgan("params", "--model", model, "--preset", preset, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["model"] == model and result["preset"] == preset and result["total"] == total
    assert result["networks"]["generator"] == (52_448_513 if model == "crfgan" else 52_518_210)
    assert sum(result["networks"].values()) == total
    macs = result["macs"]
    assert set(macs["networks"]) >= {"trunk", "head", "d_high", "encoder", "head_full_volume"}
    assert macs["step"]["step"] == "reference" and macs["step"]["trunk_upsampling"] == "early"
    # one iteration runs the trunk forward three times and backward once (each backward ~2 forwards)
    assert macs["step"]["total"] > 5 * macs["networks"]["trunk"]


def test_kill_resume_sample(tmp_path):
    """SIGKILL mid-run, --resume to the end, then sample finite NIfTI at full resolution."""
    run = tmp_path / "run"
    args = ["train", "--data", "demo-brain", "--demo-count", "3", "--preset", "tiny-32", "--iterations", "1000",
            "--batch-size", "2", "--checkpoint-every", "5", "--out", run, "--device", "cpu"]
    proc = subprocess.Popen(CLI + [str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    killed_at = load_checkpoint(ckpt).iteration  # the latest checkpoint is whole
    assert 0 < killed_at < 1000
    assert crfgan(*args).returncode == 2  # refuses to overwrite without --resume
    args[args.index("1000")] = "30"  # a shorter target keeps the test quick
    done = crfgan(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(ckpt).iteration == 30
    out = crfgan("sample", "--checkpoint", ckpt, "--num", "2", "--seed", "3", "--out", tmp_path / "s", "--chunk", "8")
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "s").glob("*.nii.gz"))
    assert [f.name for f in files] == ["sample_seed0003.nii.gz", "sample_seed0004.nii.gz"]
    ckpt_spacing = tuple(load_checkpoint(ckpt).data["spacing"])
    for f in files:
        vol = read_nifti(f)
        assert vol.data.shape == (32, 32, 32)
        assert all(abs(a - b) < 1e-4 for a, b in zip(vol.spacing, ckpt_spacing))
        assert vol.data.min() >= 0 and vol.data.max() <= 1  # MRI units


@pytest.mark.slow  # 72 s: the README's eval table end to end (the seam and grid tests are validated in test_artefacts)
def test_eval_demo_floor_seams_and_blur():
    """`crfgan eval --real demo-brain --fake demo-brain`: at the floor; seams raise SDR and shallow KID
    well above it; a uniform blur leaves SDR where it was."""
    from napari_crfgan.experiments.sources import load_volumes

    def run(*extra):
        out = crfgan("eval", "--real", "demo-brain", "--fake", "demo-brain", "--num", 16, "--num-real", 16,
                     "--features", "shallow", "--seeds", 2, "--json", *extra)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        for key in ("kid_shallow", "fd_shallow", "mmd", "coverage", "sdr_d"):
            assert "value" in r[key] and set(r[key]) == set(r["real_vs_real"][key]), key
        return r, r["real_vs_real"]

    def ci_holds_zero(sdr):
        return sdr["ci"][0] <= 0 <= sdr["ci"][1]

    bad = crfgan("eval", "--real", "demo-brain", "--fake", "demo-brain", "--num", 0)
    assert bad.returncode == 2 and "argument --num: must be at least 1, got 0" in bad.stderr
    plain, floor = run()
    assert plain["kid_shallow"]["value"] < floor["kid_shallow"]["value"] + 0.003
    assert plain["coverage"]["value"] >= 0.9 and ci_holds_zero(plain["sdr_d"])
    seams, floor = run("--inject", "seams")
    assert seams["kid_shallow"]["value"] > floor["kid_shallow"]["value"] + 0.005
    assert seams["sdr_d"]["ci"][0] > 0.5
    assert seams["seams"]["p"] < 0.05 and seams["grid"]["p"] >= 0.05 and plain["seams"]["p"] >= 0.05
    blurred, _ = run("--inject", "blur")
    assert ci_holds_zero(blurred["sdr_d"])
    gridded, _ = run("--inject", "grid", "--train", "demo-brain")
    assert gridded["grid"]["p"] < 0.05 and gridded["seams"]["p"] >= 0.05
    # demo-brain's own draw as --train: the real set IS the training set here, and the report says so
    # (memorisation needs held-out volumes, so it is left out rather than computed against the copies)
    assert gridded["split"]["held_out"] is False and "own training set" in gridded["split"]["note"]
    assert "memorisation" not in gridded
    # the fake demo volumes are drawn on their own, not the real ones again
    real, _ = load_volumes("demo-brain", 64, num=2)
    fake, _ = load_volumes("demo-brain", 64, num=2, demo_seed=1)
    assert real.shape == fake.shape and not np.allclose(real, fake)


def test_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = crfgan("train", "--data", empty, "--preset", "tiny-32", "--out", tmp_path / "r")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("crfgan: error:"), out.stderr
    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    out = crfgan("sample", "--checkpoint", bad, "--out", tmp_path / "s")
    assert out.returncode == 2 and "not a readable napari-crfgan checkpoint" in out.stderr
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())
