"""Reliability, part 2: a damaged, foreign or tampered checkpoint is one line naming what is wrong.

Each test edits a real tiny checkpoint the way a bad file would be wrong and asserts the
exact message of `load_checkpoint` / `Sampler` / `--resume` (CheckpointError, which the CLI
prints as `crfgan: error: ...` with exit status 2). Nothing in a file is executed: the
pickle cases are in tests/test_training.py and tests/test_cli.py.
"""
import json
import math
import re

import pytest
import torch

from napari_crfgan.model import SYSTEMS
from napari_crfgan.runtime import CheckpointError, load_checkpoint
from napari_crfgan.sampling import Sampler
from napari_crfgan.training import TrainOptions, run_training


@pytest.fixture
def tampered(checkpoints, tmp_path):
    """edit(fn) -> path: a copy of the tiny CRF-GAN checkpoint whose raw payload `fn` changed."""
    def edit(fn):
        raw = torch.load(checkpoints["crfgan"], weights_only=True)
        fn(raw)
        path = tmp_path / "checkpoint.pt"
        torch.save(raw, path)
        return path
    return edit


def refused(path, message: str, use=load_checkpoint):
    with pytest.raises(CheckpointError, match=re.escape(f"{path}{message}")) as info:
        use(path)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


@pytest.mark.parametrize("key", ["model", "config", "iteration", "state", "options", "data", "metrics"])
def test_missing_top_level_key(tampered, key):
    path = tampered(lambda raw: raw.pop(key))
    refused(path, f" lacks the key {key!r}: not a complete napari-crfgan checkpoint")


def _config(raw, **change):
    raw["config"] = json.dumps({**json.loads(raw["config"]), **change})


@pytest.mark.parametrize("change,message", [
    (dict(size="32"), "config field size must be an integer, not '32'"),
    (dict(trunk_channels=[32, "64"]), "config field trunk_channels must be a list of integers, not (32, '64')"),
    (dict(d_spectral_norm=1), "config field d_spectral_norm must be true or false, not 1"),
    (dict(lr_g=-1.0), "lr_g must be a positive number, got -1.0"),
    (dict(nonsense=1), "unknown config fields: ['nonsense']"),
])
def test_wrong_config_values(tampered, change, message):
    refused(tampered(lambda raw: _config(raw, **change)), f": {message}")


def test_values_of_the_wrong_kind(tampered):
    refused(tampered(lambda raw: raw.update(data=json.dumps([1, 2]))), ": 'data' must be a mapping, not list")
    refused(tampered(lambda raw: raw.update(data=5)), ": 'data' must be str, not int")
    refused(tampered(lambda raw: raw.update(iteration="7")), ": 'iteration' must be int, not str")
    refused(tampered(lambda raw: raw.update(model="vae")),
            f" holds an unknown model 'vae' (this napari-crfgan has {', '.join(SYSTEMS)})")


@pytest.mark.parametrize("spacing", [[math.nan] * 3, [-1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0]])
def test_bad_recorded_spacing(tampered, spacing):
    def edit(raw):
        raw["data"] = json.dumps({**json.loads(raw["data"]), "spacing": spacing})
    refused(tampered(edit), f": the recorded voxel spacing {spacing!r} is not three positive numbers", use=Sampler)


def test_weights_of_the_wrong_shape_name_the_key(tampered):
    def edit(raw):
        raw["state"]["crf.weight"] = torch.zeros(3, 3)
    path = tampered(edit)
    with pytest.raises(CheckpointError, match=re.escape(
            "weights do not fit a crfgan tiny-32 model (crf.weight has shape (3, 3), the model (8, 8))")):
        Sampler(path)


def test_another_systems_weights_name_the_key(checkpoints, tampered):
    hagan = torch.load(checkpoints["hagan"], weights_only=True)["state"]
    path = tampered(lambda raw: raw.update(state=hagan))
    with pytest.raises(CheckpointError, match=r"weights do not fit a crfgan tiny-32 model \(unexpected key \S+\)"):
        Sampler(path)


def test_huge_channel_counts_are_refused_before_allocating(tampered):
    # 2^20 channels in every trunk conv would need terabytes: the shapes are checked on the meta device first
    path = tampered(lambda raw: _config(raw, trunk_channels=[2**20] * 4, head_channel=2**20))
    with pytest.raises(CheckpointError, match=r"weights do not fit a crfgan tiny-32 model \(\S+ has shape"):
        Sampler(path)


def test_resume_with_foreign_weights_or_optimiser_state(tmp_path, checkpoints):
    options = TrainOptions(data="demo-brain", demo_count=3, out=tmp_path, preset="tiny-32", iterations=2,
                           batch_size=2, device="cpu", threads=1)
    run_training(options)
    path = tmp_path / "checkpoint.pt"
    good = torch.load(path, weights_only=True)
    raw = dict(good, state={**good["state"], "crf.weight": torch.zeros(3, 3)})
    torch.save(raw, path)
    options.iterations, options.resume = 3, "yes"
    with pytest.raises(CheckpointError, match=re.escape(
            "weights do not fit a crfgan tiny-32 model (crf.weight has shape (3, 3), the model (8, 8))")):
        run_training(options)
    name = next(iter(good["optimizers"]))
    raw = dict(good, optimizers={**good["optimizers"], name: {"state": {}, "param_groups": []}})
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: the optimiser state of {name} does not fit (")):
        run_training(options)


def test_an_unreadable_file_says_why_in_a_few_words(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\x80\x02garbage that is not a torch file" * 20)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a readable napari-crfgan checkpoint (")
    assert "weights_only" not in message and "\x1b" not in message and len(message) < 300
