import os

import pytest
import torch

from napari_crfgan.runtime import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from napari_crfgan.training import TrainingError, TrainOptions, TrainReport, train


def options(folder, out, model="crfgan", **kw):
    base = dict(data=str(folder), out=out, model=model, preset="tiny-32", iterations=4, batch_size=2,
                checkpoint_every=2, device="cpu", seed=3)
    base.update(kw)
    return TrainOptions(**base)


@pytest.mark.parametrize("model", ["crfgan", "hagan"])
def test_trainer_yields_reports_and_checkpoints(npy_folder, tmp_path, model):
    reports = list(train(options(npy_folder, tmp_path / "run", model, preview_every=2)))
    assert [r.iteration for r in reports] == [1, 2, 3, 4]
    r = reports[-1]
    assert isinstance(r, TrainReport) and r.iterations == 4 and r.device == "cpu"
    assert {"d", "g", "encoder"} <= set(r.losses) and all(map(lambda v: v == v, r.losses.values()))
    assert r.iters_per_s > 0 and r.peak_memory_mb > 0 and r.eta_s == 0
    assert [x.saved for x in reports] == [False, True, False, True]
    assert {x.checkpoint_path for x in reports} == {str(tmp_path / "run" / CHECKPOINT_NAME)}
    assert reports[1].preview.shape == (32, 32, 32) and reports[0].preview is None
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert (ckpt.model, ckpt.preset, ckpt.iteration) == (model, "tiny-32", 4)
    assert ckpt.data["count"] == 4 and ckpt.options["seed"] == 3
    assert not [p for p in os.listdir(tmp_path / "run") if p.endswith(".tmp")]


def test_repeated_runs_in_one_process_each_report_their_peak(npy_folder, tmp_path):
    # A napari session trains again and again in one process: a later run must not
    # reuse the pages an earlier run freed unseen and report (almost) no memory.
    peaks = [list(train(options(npy_folder, tmp_path / f"run{k}", iterations=2)))[-1].peak_memory_mb
             for k in range(3)]
    assert min(peaks[1:]) > 1, peaks


def _states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("model", ["crfgan", "hagan"])
def test_resume_is_bitwise_identical(npy_folder, tmp_path, model):
    list(train(options(npy_folder, tmp_path / "straight", model, iterations=6, checkpoint_every=3)))
    gen = train(options(npy_folder, tmp_path / "split", model, iterations=6, checkpoint_every=100))
    for report in gen:
        if report.iteration == 3:
            gen.close()  # stop between steps: must leave a checkpoint at iteration 3
    assert load_checkpoint(tmp_path / "split").iteration == 3
    list(train(options(npy_folder, tmp_path / "split", model, iterations=6, checkpoint_every=100, resume=True)))
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert a.iteration == b.iteration == 6
    assert _states_equal(a.state, b.state)
    for name in a.optimizers:
        sa, sb = a.optimizers[name]["state"], b.optimizers[name]["state"]
        assert all(_states_equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_refuses_other_model_and_preset(npy_folder, tmp_path):
    list(train(options(npy_folder, tmp_path / "run", iterations=2)))
    with pytest.raises(CheckpointError, match="holds a crfgan model, not hagan"):
        load_checkpoint(tmp_path / "run", model="hagan")
    with pytest.raises(CheckpointError, match="holds preset tiny-32, not small-64"):
        load_checkpoint(tmp_path / "run", preset="small-64")
    with pytest.raises(CheckpointError, match="crfgan model, not hagan"):
        list(train(options(npy_folder, tmp_path / "run", "hagan", iterations=4, resume=True)))
    with pytest.raises(CheckpointError, match="already exists"):
        list(train(options(npy_folder, tmp_path / "run", iterations=4)))
    with pytest.raises(CheckpointError, match="nothing to resume"):
        list(train(options(npy_folder, tmp_path / "empty", iterations=4, resume=True)))


def test_checkpoint_refuses_garbage_and_foreign_pickles(tmp_path, npy_folder):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a napari-crfgan checkpoint"):
        load_checkpoint(foreign)
    list(train(options(npy_folder, tmp_path / "run", iterations=2)))
    data = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(truncated)


def test_checkpoint_with_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"format": "napari-crfgan-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_out_of_memory_is_one_sentence_and_keeps_checkpoint(npy_folder, tmp_path, monkeypatch):
    from napari_crfgan.model.crfgan import CRFGAN

    list(train(options(npy_folder, tmp_path / "run", iterations=2)))
    before = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CRFGAN, "train_step", oom)
    with pytest.raises(TrainingError, match="out of memory on cpu at batch size 2"):
        list(train(options(npy_folder, tmp_path / "run", iterations=4, resume=True)))
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == before


def test_conditional_training_on_labels(tmp_path, npy_folder):
    (npy_folder / "labels.csv").write_text("filename,label\nvol0.npy,a\nvol1.npy,b\nvol2.npy,a\nvol3.npy,b\n")
    list(train(options(npy_folder, tmp_path / "run", "hagan", iterations=2, conditional=True)))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.config.num_classes == 2 and ckpt.data["class_names"] == ["a", "b"]


def test_bad_options_are_clear(npy_folder, tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        list(train(options(npy_folder, tmp_path / "r", model="vae")))
    with pytest.raises(ValueError, match="--batch-size must be at least 1"):
        list(train(options(npy_folder, tmp_path / "r", batch_size=0)))
    with pytest.raises(ValueError, match="not available"):
        list(train(options(npy_folder, tmp_path / "r", device="cuda:7")))


def test_threads_apply_during_the_run_and_are_restored(npy_folder, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        during = [torch.get_num_threads() for _ in train(options(npy_folder, tmp_path / "run", iterations=2,
                                                                  threads=1))]
        assert during == [1, 1]
        assert torch.get_num_threads() == 2  # a napari session keeps its own setting
        gen = train(options(npy_folder, tmp_path / "stopped", iterations=5, threads=1))
        next(gen)
        gen.close()  # stopped early: restored too
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        list(train(options(npy_folder, tmp_path / "r2", threads=0)))


def test_run_lifecycle_start_resume_reuse(npy_folder, tmp_path):
    """One place decides: a new run refuses a checkpoint, resume needs one, auto continues or reuses."""
    from napari_crfgan.training import decide_start, run_training

    opts = options(npy_folder, tmp_path / "run", iterations=2)
    assert decide_start(opts).resume is False
    first = run_training(opts)
    assert (first.start, first.iteration, first.stopped, first.reused) == (0, 2, False, False)
    assert first.checkpoint_path == opts.checkpoint_path == tmp_path / "run" / CHECKPOINT_NAME
    with pytest.raises(CheckpointError, match="already exists"):
        decide_start(opts)
    more = run_training(options(npy_folder, tmp_path / "run", iterations=3, resume="auto"))
    assert (more.start, more.iteration, more.reused) == (2, 3, False)
    seen = []
    reused = run_training(options(npy_folder, tmp_path / "run", iterations=3, resume="auto"), on_report=seen.append)
    assert reused.reused and seen == [] and reused.iteration == 3 and reused.metrics["iters_per_s"] > 0
    stopped = run_training(options(npy_folder, tmp_path / "run", iterations=9, resume="yes"),
                           should_stop=lambda: True)
    assert stopped.stopped and stopped.iteration == 4 and load_checkpoint(tmp_path / "run").iteration == 4
    with pytest.raises(CheckpointError, match="nothing to resume"):
        decide_start(options(npy_folder, tmp_path / "empty", resume="yes"))
    assert decide_start(options(npy_folder, tmp_path / "empty", resume="auto")).resume is False
