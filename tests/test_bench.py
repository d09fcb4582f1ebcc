import argparse
import functools
import json
import math
import subprocess
import sys

import pytest
import torch

from napari_crfgan.model import build_system, get_config


def test_bench_measures_every_system_with_static_and_activation_memory():
    out = subprocess.run([sys.executable, "-m", "napari_crfgan.cli", "bench", "--preset", "tiny-32", "--batch-size",
                          "1", "--iterations", "3", "--repeats", "1", "--device", "cpu", "--threads", "1", "--json"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["preset"] == "tiny-32" and r["batch_size"] == 1 and r["device"] == "cpu (1 threads)"
    assert set(r["results"]) == {"crfgan", "hagan", "crfgan-nocrf"} and r["step"] == "reference"
    for model, res in r["results"].items():
        assert len(res["runs"]) == 1 and all(len(run["iteration_seconds"]) == 3 for run in res["runs"])
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


def test_matmul_rate_is_a_positive_finite_number():
    from napari_crfgan.experiments.bench import matmul_gflops

    rate = matmul_gflops(n=256)
    assert math.isfinite(rate) and rate > 0


def _in_process(monkeypatch):
    """bench's workers run in this process (the spawned ones are tested at paper-128 above), its matmul rate
    on small matrices."""
    from napari_crfgan.experiments import bench

    monkeypatch.setattr(bench, "_in_worker", lambda fn, args: fn(*args))
    monkeypatch.setattr(bench, "matmul_gflops", functools.partial(bench.matmul_gflops, n=256))
    return bench


def test_bench_sample_reports_the_flop_floor_of_both_runs(monkeypatch):
    from napari_crfgan.model.flops import network_macs

    r = _in_process(monkeypatch).bench_sampling("tiny-32", chunk=8, threads=1)
    assert r["matmul_gflops"] > 0 and r["volume_mb"] == 0.1 and "not the weights" in r["peak_memory_includes"]
    for q in (r["one_pass"], r["chunked"]):
        assert q["finite"] and q["flop_floor_s"] > 0
        assert q["floor_ratio"] == pytest.approx(q["seconds"] / q["flop_floor_s"], rel=1e-2, abs=0.01)
    assert r["one_pass"]["flops"] == 2 * network_macs("crfgan", get_config("tiny-32"))["head_full_volume"]
    assert r["chunked"]["flops"] > r["one_pass"]["flops"]  # the halos and the statistics pass
    assert r["max_abs_diff"] <= 1e-5


def test_bench_sample_skips_the_one_pass_run_and_says_why(monkeypatch, capsys):
    from napari_crfgan import cli

    bench = _in_process(monkeypatch)
    r = bench.bench_sampling("tiny-32", chunk=8, threads=1, one_pass="skip")
    assert r["one_pass"]["skipped"] == "asked to skip" and r["chunked"]["finite"]
    assert 0 < r["one_pass"]["flops"] < r["chunked"]["flops"] and r["one_pass"]["flop_floor_s"] > 0
    assert r["max_abs_diff"] is None and r["peak_memory_ratio"] is None
    monkeypatch.setattr(bench, "bench_sampling", lambda *a, **k: r)
    cli.cmd_bench_sample(argparse.Namespace(preset="tiny-32", chunk=8, threads=1, one_pass="skip", json=False))
    out = capsys.readouterr().out
    assert "one_pass  skipped: asked to skip" in out and "not computed" in out and "floor" in out


def test_one_pass_is_skipped_when_its_estimate_exceeds_available_memory(monkeypatch):
    from napari_crfgan.experiments import bench

    monkeypatch.setattr(bench, "available_memory_mb", lambda device: 1000.0)
    assert "exceeds the 1,000 MB available" in bench.one_pass_skip_reason("paper-256")  # 5,120 MB estimated
    assert bench.one_pass_skip_reason("paper-256", "run") is None
    assert bench.one_pass_skip_reason("tiny-32") is None
    with pytest.raises(ValueError, match="one_pass"):
        bench.one_pass_skip_reason("tiny-32", "maybe")


def test_paper_512_builds_on_meta_with_the_papers_generator():
    cfg = get_config("paper-512")
    with torch.device("meta"):
        system = build_system("crfgan", cfg)
        emb = system.trunk(torch.zeros(1, cfg.latent_dim))
        paper_256 = build_system("crfgan", get_config("paper-256")).network_counts()
    assert emb.shape == (1, 64, 128, 128, 128) and cfg.crf_nodes == 128
    counts = system.network_counts()
    assert counts["trunk"] + counts["head"] == paper_256["trunk"] + paper_256["head"] == 52_448_513
