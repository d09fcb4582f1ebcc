"""Reliability, part 3: every bad command-line input is one line naming the flag, and exit status 2.

`crfgan` runs in this process (`cli.main`); argparse's own refusals exit with 2 too. No
Python traceback reaches the user: an unexpected error is one line that points at --debug.
"""
import errno
import re

import pytest

from napari_crfgan import cli


def error_of(capsys, *argv) -> str:
    """The last stderr line of `crfgan ARGV`, which must exit with status 2."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert not any(line.startswith("Traceback") for line in err)
    return err[-1]


@pytest.mark.parametrize("argv,message", [
    (["sample", "--num", "0"], "crfgan sample: error: argument --num: must be at least 1, got 0"),
    (["sample", "--chunk", "0"], "crfgan sample: error: argument --chunk: must be at least 1, got 0"),
    (["sample", "--chunk", "-3"], "crfgan sample: error: argument --chunk: must be at least 1, got -3"),
    (["sample", "--seed", str(2**64)], "crfgan sample: error: argument --seed: must be in 0 .. 2^63 - 1, got "
                                       f"{2**64}"),
    (["sample", "--interpolate", "5", "--num", "0"], "crfgan sample: error: argument --num: must be at least 1, "
                                                     "got 0"),
    (["eval", "--seeds", "0"], "crfgan eval: error: argument --seeds: must be at least 1, got 0"),
    (["eval", "--sigma", "-1"], "crfgan eval: error: argument --sigma: must be a positive number, got -1"),
    (["eval", "--strength", "nan"], "crfgan eval: error: argument --strength: must be a positive number, got nan"),
])
def test_flags_out_of_range(capsys, argv, message):
    assert error_of(capsys, *argv, "--checkpoint" if argv[0] == "sample" else "--fake", "pretrained:demo-brain") \
        == message


@pytest.mark.parametrize("argv,message", [
    (["--interpolate", "5", "--num", "1"], "--num must be at least 2 with --interpolate (the walk's frames), got 1"),
    (["--seed", str(2**63 - 1), "--num", "2"],
     f"--seed {2**63 - 1} with --num 2 runs past the largest seed, 2^63 - 1"),
])
def test_sample_combinations(capsys, tmp_path, argv, message):
    assert error_of(capsys, "sample", "--checkpoint", "pretrained:demo-brain", "--out", tmp_path / "s", *argv) == \
        f"crfgan: error: {message}"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv,message", [
    (["--demo-count", "0"], "crfgan train: error: argument --demo-count: must be at least 1, got 0"),
    (["--iterations", "0"], "crfgan train: error: argument --iterations: must be at least 1, got 0"),
    (["--seed", "-1"], "crfgan train: error: argument --seed: must be in 0 .. 2^63 - 1, got -1"),
    (["--lr-g", "-1"], "crfgan: error: --lr-g must be a positive number, got -1.0"),
    (["--ema-decay", "1.5"], "crfgan: error: --ema-decay must be in [0.0, 1.0), got 1.5"),
])
def test_train_flags_name_the_flag(capsys, tmp_path, argv, message):
    assert error_of(capsys, "train", "--data", "demo-brain", "--out", tmp_path / "r", *argv) == message
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("field,value,message", [
    ("demo_count", 0, "--demo-count must be at least 1, got 0"),
    ("lr_d", float("nan"), "--lr-d must be a positive number, got nan"),
    ("seed", 2**63, f"--seed must be in 0 .. 2^63 - 1, got {2**63}"),
    ("r1_gamma", -1.0, "--r1-gamma must be >= 0, got -1.0"),
])
def test_train_options_name_the_flag_in_python_and_the_widget(field, value, message):
    from napari_crfgan.training import TrainOptions

    with pytest.raises(ValueError, match=re.escape(message)):
        TrainOptions(data="demo-brain", **{field: value}).validate()


@pytest.mark.parametrize("command", ["demo", "sweep", "pretrain", "split"])
def test_every_count_flag_of_the_options_is_checked(capsys, command):
    flag = {"demo": "--num", "sweep": "--workers", "pretrain": "--iterations", "split": "--demo-count"}[command]
    assert error_of(capsys, command, flag, "0") == \
        f"crfgan {command}: error: argument {flag}: must be at least 1, got 0"


def test_a_batch_that_cannot_fit_is_refused_before_work(capsys, tmp_path):
    line = error_of(capsys, "train", "--data", "demo-brain", "--out", tmp_path / "r", "--batch-size", "10000000")
    assert re.fullmatch(r"crfgan: error: batch size 10000000 at preset small-64 needs at least [\d,]+ MB \(weights, "
                        r"optimiser state and the batch\), more than the [\d,]+ MB free on cpu; choose a smaller "
                        r"--batch-size or preset", line), line
    assert not (tmp_path / "r").exists()


def test_a_bad_medicalnet_file_is_found_before_any_feature(capsys, tmp_path):
    bad = tmp_path / "resnet_50.pth"
    bad.write_bytes(b"not weights")
    line = error_of(capsys, "eval", "--fake", "demo-brain", "--features", f"shallow,medicalnet:{bad}")
    assert line.startswith(f"crfgan: error: --features medicalnet:{bad}: {bad} is not a readable weights file (")
    assert "feature" not in capsys.readouterr().err  # no progress line: nothing was computed
    assert error_of(capsys, "eval", "--fake", "demo-brain", "--features", f"medicalnet:{tmp_path / 'none'}") == (
        f"crfgan: error: --features medicalnet:{tmp_path / 'none'}: MedicalNet weights file not found: "
        f"{tmp_path / 'none'}")


def test_a_report_on_a_full_disk_leaves_no_empty_file(capsys, tmp_path, monkeypatch):
    import pathlib

    write_bytes = pathlib.Path.write_bytes

    def full(self, data):  # the disk fills while the report is written (other files are written normally)
        if "report.md" not in self.name:
            return write_bytes(self, data)
        with open(self, "wb") as f:
            f.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    report = tmp_path / "report.md"
    line = error_of(capsys, "eval", "--real", "demo-brain", "--fake", "demo-brain", "--num", "4", "--num-real", "4",
                    "--size", "32", "--features", "shallow", "--seeds", "1", "--report", report)
    assert line.startswith("crfgan: error: No space left on device: ")
    assert not report.exists() and list(tmp_path.iterdir()) == []  # neither the report nor a temporary file


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(capsys, monkeypatch):
    def boom(args):
        raise RuntimeError("something broke\nin detail")

    monkeypatch.setattr(cli, "cmd_params", boom)
    parser = cli.build_parser

    def patched():
        p = parser()
        p._subparsers._group_actions[0].choices["params"].set_defaults(func=boom)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert error_of(capsys, "params") == (
        "crfgan: error: unexpected RuntimeError: something broke (rerun with --debug for the traceback)")
    with pytest.raises(RuntimeError, match="something broke"):
        cli.main(["--debug", "params"])
