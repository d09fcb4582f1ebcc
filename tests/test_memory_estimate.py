"""The training-memory estimate against the trainer's own measurement (PeakMemory), on CPU."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from napari_crfgan.experiments.memory_estimate import estimate_training_memory, state_memory_mb
from napari_crfgan.model import build_system, get_config, parameter_counts

TRAIN_ONCE = """
import json, sys
from napari_crfgan.training import TrainOptions, train
preset, batch, data, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
reports = list(train(TrainOptions(data=data, out=out, preset=preset, batch_size=batch, iterations=2, device="cpu")))
print(json.dumps({"peak_memory_mb": reports[-1].peak_memory_mb}))
"""


def trainer_peak_mb(preset, batch, data, out) -> float:
    """Peak memory the trainer reports for 2 iterations, in a fresh process like the estimate."""
    run = subprocess.run([sys.executable, "-c", TRAIN_ONCE, preset, str(batch), str(data), str(out)],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_memory_mb"]


def test_parameter_counts_match_a_built_system():
    for model in ("crfgan", "hagan"):
        assert parameter_counts(model, "tiny-32") == build_system(model, get_config("tiny-32")).network_counts()
    assert state_memory_mb("crfgan", "paper-256") > 800  # 57 M parameters x 16 bytes, counted on meta


@pytest.mark.parametrize("preset,batch", [("tiny-32", 1), ("small-64", 2)])
def test_estimate_is_within_25_percent_of_the_trainer(preset, batch, npy_folder, tmp_path):
    with ThreadPoolExecutor(2) as pool:  # two fresh processes side by side: separate address spaces
        estimate = pool.submit(estimate_training_memory, "crfgan", preset, batch, "cpu")
        measured = pool.submit(trainer_peak_mb, preset, batch, npy_folder, tmp_path / "run")
        estimate, measured = estimate.result(), measured.result()
    assert estimate.peak_memory_mb is not None and measured > 0
    assert abs(estimate.peak_memory_mb - measured) <= 0.25 * measured, (estimate, measured)
    # cached: asking again does not measure again
    assert estimate_training_memory("crfgan", preset, batch, "cpu") == estimate


def test_a_run_that_cannot_fit_is_not_started(monkeypatch):
    import napari_crfgan.experiments.memory_estimate as me

    monkeypatch.setattr(me, "available_memory_mb", lambda device: 10.0)
    monkeypatch.setattr(me, "measure_in_subprocess", lambda *a, **k: pytest.fail("should not measure"))
    e = me.estimate_training_memory("crfgan", "small-64", 3, "cpu", use_cache=False)
    assert e.peak_memory_mb is None and e.state_mb > 10 and "at least" in e.describe()


def test_processes_measure_one_share_of_the_batch_with_ddp_buckets_and_precision(monkeypatch):
    import napari_crfgan.experiments.memory_estimate as me

    asked = []

    def fake_measure(model, preset, batch, device, precision, cancel=None):
        asked.append((batch, precision))
        return {"peak_memory_mb": 100.0, "iters_per_s": 2.0}

    monkeypatch.setattr(me, "measure_in_subprocess", fake_measure)
    state = state_memory_mb("crfgan", "tiny-32")
    e = me.estimate_training_memory("crfgan", "tiny-32", 4, "cpu", precision="bf16", processes=2, use_cache=False)
    assert asked == [(2, "bf16")]  # one process at its share of the global batch, under bf16 autocast
    assert e.per_process_mb == pytest.approx(100.0 + state / 4, abs=0.1)  # + DDP's copy of the gradients
    assert e.peak_memory_mb == pytest.approx(2 * e.per_process_mb, abs=0.1)  # the CPU's processes share it
    assert "in all 2 processes" in e.describe() and e.processes == 2 and e.precision == "bf16"
    one = me.estimate_training_memory("crfgan", "tiny-32", 4, "cpu", use_cache=False)
    assert asked[-1] == (4, "fp32") and one.peak_memory_mb == 100.0 and one.where() == ""
    with pytest.raises(ValueError, match="multiple of 2"):
        me.estimate_training_memory("crfgan", "tiny-32", 3, "cpu", processes=2, use_cache=False)


def test_a_bf16_step_is_measured_under_autocast():
    e = estimate_training_memory("crfgan", "tiny-32", 1, "cpu", precision="bf16", use_cache=False)
    assert e.precision == "bf16" and e.peak_memory_mb > 0 and e.iters_per_s > 0
