import json
import subprocess
import sys

import pytest


def test_bench_json_shape_and_ratios():
    out = subprocess.run([sys.executable, "-m", "napari_crfgan.cli", "bench", "--preset", "tiny-32", "--batch-size",
                          "1", "--iterations", "1", "--repeats", "1", "--device", "cpu", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["preset"] == "tiny-32" and r["batch_size"] == 1 and r["device"].startswith("cpu")
    c, h = r["results"]["crfgan"], r["results"]["hagan"]
    for res in (c, h):
        assert set(res) == {"params", "peak_memory_mb", "iters_per_s"}
        assert res["peak_memory_mb"] > 0 and res["iters_per_s"] > 0
    assert c["params"] < h["params"]
    assert r["ratios"]["params"] == pytest.approx(c["params"] / h["params"], abs=1e-4)
    assert r["ratios"]["speed"] == pytest.approx(c["iters_per_s"] / h["iters_per_s"], rel=1e-2)


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
