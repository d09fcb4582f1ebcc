import json
import subprocess
import sys

import pytest
import torch

from napari_crfgan.model import build_system, get_config


def test_bench_measures_every_system_with_static_and_activation_memory():
    out = subprocess.run([sys.executable, "-m", "napari_crfgan.cli", "bench", "--preset", "tiny-32", "--batch-size",
                          "1", "--iterations", "3", "--repeats", "2", "--device", "cpu", "--threads", "1", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["preset"] == "tiny-32" and r["batch_size"] == 1 and r["device"] == "cpu (1 threads)"
    assert set(r["results"]) == {"crfgan", "hagan", "crfgan-nocrf"} and r["step"] == "reference"
    for model, res in r["results"].items():
        assert len(res["runs"]) == 2 and all(len(run["iteration_seconds"]) == 3 for run in res["runs"])
        # static memory is counted, not measured: fp32 weights, gradients, two Adam moments, buffers
        with torch.device("meta"):
            system = build_system(model, get_config("tiny-32"))
        params = sum(p.numel() for p in system.parameters())
        buffers = sum(b.numel() for b in system.buffers())
        assert res["static_mb"] == pytest.approx((16 * params + 4 * buffers) / 2**20, abs=0.05)  # + Adam's steps
        assert res["peak_memory_mb"] > 0 and res["activation_mb"] == pytest.approx(
            res["peak_memory_mb"] - res["static_mb"], abs=0.11)
        lo, hi = res["iters_per_s_range"]
        assert 0 < lo <= res["iters_per_s"] <= hi
    ratio = r["ratios"]["crfgan / hagan"]
    assert ratio["params"] < 1 and ratio["speed"]["min"] <= ratio["speed"]["median"] <= ratio["speed"]["max"]
    assert r["ratios"]["crfgan / crfgan-nocrf"]["params"] > 1  # the CRF's N^2 weights


def test_bench_sample_paper_128_chunks_use_less_memory():
    from napari_crfgan.experiments.bench import bench_sampling

    r = bench_sampling("paper-128", chunk=16)
    assert r["max_abs_diff"] <= 1e-5
    assert r["peak_memory_ratio"] <= 0.5


@pytest.mark.slow
def test_chunked_paper_256_peak_is_at_most_half():
    from napari_crfgan.experiments.bench import bench_sampling

    r = bench_sampling("paper-256", chunk=32)
    assert r["max_abs_diff"] <= 1e-5
    assert r["peak_memory_ratio"] <= 0.5
