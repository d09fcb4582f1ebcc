"""Training on several processes: `torchrun --nproc_per_node=2` with gloo on this CPU.

- one DDP iteration with batch 2 per rank computes the gradients of one iteration with batch 4 in one
  process (same data, same latent codes, same augmentations);
- `torchrun ... -m napari_crfgan.cli train` trains; SIGTERM to the torchrun group writes one checkpoint
  and every process exits; the checkpoint resumes in one process.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from napari_crfgan import cli
from napari_crfgan.runtime import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ONE_STEP = Path(__file__).parent / "distributed" / "one_step.py"


def torchrun(*args: str) -> list[str]:
    """The torchrun of this interpreter's torch (its console script, else the module it runs)."""
    script = Path(sys.executable).with_name("torchrun")
    launcher = [str(script)] if script.exists() else (
        [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m", "torch.distributed.run"])
    return [*launcher, "--standalone", "--nproc_per_node=2", *args]


def environment() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def one_step_results(tmp_path_factory):
    single, ddp = tmp_path_factory.mktemp("single"), tmp_path_factory.mktemp("ddp")
    for cmd, out in (([sys.executable, str(ONE_STEP)], single), (torchrun(str(ONE_STEP)), ddp)):
        done = subprocess.run([*cmd, str(out)], env=environment(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    return single, ddp


@pytest.mark.parametrize("config", ["crfgan", "hagan", "crfgan-augment-style"])
def test_a_ddp_step_with_batch_2_per_rank_equals_one_process_with_batch_4(one_step_results, config):
    single, ddp = (torch.load(folder / f"{config}.pt") for folder in one_step_results)
    assert (single["world"], ddp["world"]) == (1, 2)
    for name, value in single["losses"].items():  # the same global batch: the same losses
        assert ddp["losses"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    assert single["grads"].keys() == ddp["grads"].keys()
    scale = max(g.abs().max() for g in single["grads"].values())
    for name, grad in single["grads"].items():
        # conv biases before a GroupNorm have a true gradient of 0: float noise of 1e-9 either way
        torch.testing.assert_close(ddp["grads"][name], grad, rtol=1e-3, atol=1e-6 * float(scale), msg=name)


def test_torchrun_trains_stops_on_sigterm_with_one_checkpoint_and_resumes_in_one_process(tmp_path):
    run = tmp_path / "run"
    args = ["-m", "napari_crfgan.cli", "train", "--data", "demo-brain", "--demo-count", "4", "--preset", "tiny-32",
            "--iterations", "100000", "--batch-size", "2", "--checkpoint-every", "100000", "--split", "none",
            "--out", str(run), "--device", "cpu", "--threads", "1"]
    proc = subprocess.Popen(torchrun(*args), env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group, as a scheduler's job
    seen = bytearray()

    def drain():  # keep the pipe empty and remember what was said
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):
            seen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        done = [int(n) for n in re.findall(rb"\| *(\d+)/100000", bytes(seen))]
        if done and max(done) >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # every process of the group: agent and ranks
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = seen.decode(errors="replace")
    with pytest.raises(ProcessLookupError):  # no rank is left behind
        os.killpg(proc.pid, 0)
    assert err.count("stopped at iteration") == 1, err[-3000:]  # rank 0 speaks for all
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert 3 <= ckpt.iteration < 100000
    assert ckpt.options["world_size"] == 2

    assert cli.main(["train", "--data", "demo-brain", "--demo-count", "4", "--preset", "tiny-32", "--batch-size",
                     "2", "--split", "none", "--out", str(run), "--device", "cpu", "--threads", "1", "--resume",
                     "--iterations", str(ckpt.iteration + 2)]) == 0
    resumed = load_checkpoint(run / "checkpoint.pt")
    assert resumed.iteration == ckpt.iteration + 2
    assert resumed.options["world_size"] == 1


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    args = ["-m", "napari_crfgan.cli", "train", "--data", "demo-brain", "--demo-count", "2", "--preset", "tiny-32",
            "--iterations", "1", "--batch-size", "3", "--split", "none", "--out", str(tmp_path / "run"),
            "--device", "cpu"]
    done = subprocess.run(torchrun(*args), env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "crfgan (rank 0): error: --batch-size 3 is the global batch, split over 2 processes: it must be a " \
           "multiple of 2" in done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_bench_compares_one_and_two_processes(capsys):
    assert cli.main(["bench", "--compare", "processes", "--preset", "tiny-32", "--iterations", "2", "--repeats", "1",
                     "--device", "cpu", "--json"]) == 0
    r = __import__("json").loads(capsys.readouterr().out)
    one, two = r["results"]["1"], r["results"]["2"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["threads_per_process"] == 2 * two["threads_per_process"] or os.cpu_count() == 1
    for s in (one, two):
        assert s["iters_per_s_per_process"] > 0 and s["peak_memory_mb_rank0"] > 0
        assert s["volumes_per_s"] == pytest.approx(s["iters_per_s_total"] * 2, rel=1e-3)  # 2 volumes per process
    assert two["iters_per_s_total"] == pytest.approx(2 * two["iters_per_s_per_process"], rel=1e-3)
    assert one["total_speedup"]["median"] == 1.0


def test_the_widgets_multi_process_run_reports_from_rank_0_and_stops_with_one_checkpoint(tmp_path, monkeypatch):
    """The Train widget's "all GPUs (N)": `train_in_child` with processes=2 starts torchrun from its child;
    rank 0's reports arrive in order, a stop asked after the second report stops both ranks together and
    leaves one checkpoint of a 2-process run."""
    from napari_crfgan.training import TrainOptions
    from napari_crfgan.training.child import Prepared, Started, train_in_child

    monkeypatch.setenv("PYTHONPATH", environment()["PYTHONPATH"])  # the ranks import this checkout
    run = tmp_path / "run"
    options = TrainOptions(data="demo-brain", demo_count=4, preset="tiny-32", iterations=100_000, batch_size=2,
                           checkpoint_every=100_000, split="none", out=run, device="cpu", threads=1, processes=2)
    stop = threading.Event()
    items = []
    for item in train_in_child(options, stop):
        items.append(item)
        if sum(hasattr(i, "iteration") for i in items) == 2:
            stop.set()
    assert isinstance(items[0], Started) and any(isinstance(i, Prepared) for i in items)
    iterations = [i.iteration for i in items if hasattr(i, "iteration")]
    assert iterations == list(range(1, len(iterations) + 1)) and 2 <= len(iterations) < 100
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt.iteration == iterations[-1] and ckpt.options["world_size"] == 2
    assert not list(run.glob("*.tmp*"))
    with pytest.raises(ValueError, match="multiple of 2"):  # refused before anything starts
        TrainOptions(data="demo-brain", batch_size=3, processes=2).validate()
    refused = TrainOptions(data="demo-brain", demo_count=4, preset="tiny-32", iterations=2, batch_size=2,
                           split="none", out=tmp_path / "fp16", device="cpu", threads=1, processes=2,
                           precision="fp16")
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):  # rank 0's error, as one process raises it
        list(train_in_child(refused))
