"""Mixed precision (bf16 autocast on the CPU) and activation checkpointing, on tiny-32 steps."""
import pytest
import torch

from napari_crfgan import cli
from napari_crfgan.model import build_system, get_config


def _steps(model: str, n: int, precision: str = "fp32", checkpointing: bool = False, **fields):
    torch.manual_seed(0)
    system = build_system(model, get_config("tiny-32", **fields))
    system.set_precision(precision)
    system.set_activation_checkpointing(checkpointing)
    optimizers = system.make_optimizers()
    real = torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = []
    for it in range(n):
        torch.manual_seed(100 + it)
        losses.append(system.train_step(real, None, it, optimizers))
    return system, losses


@pytest.mark.parametrize("model", ["crfgan", "hagan"])
def test_bf16_steps_on_cpu_stay_finite_and_close_to_fp32(model):
    _, full = _steps(model, 3)
    system, half = _steps(model, 3, precision="bf16")
    assert system.autocast_dtype == torch.bfloat16
    for a, b in zip(full, half):
        for name in ("d", "g", "encoder"):
            assert torch.isfinite(torch.tensor(b[name])), name
            assert b[name] == pytest.approx(a[name], rel=0.05), name  # bf16 keeps 8 bits of mantissa
    assert all(bool(torch.isfinite(p).all()) for p in system.parameters())


@pytest.mark.parametrize("model,fields", [("crfgan", {}), ("hagan", {}), ("crfgan", {"trunk": "style"}),
                                          ("crfgan", {"d_spectral_norm": False})])
def test_activation_checkpointing_computes_the_same_step(model, fields):
    plain, plain_losses = _steps(model, 2, **fields)
    kept, kept_losses = _steps(model, 2, checkpointing=True, **fields)
    assert kept.trunk.checkpointing and kept.d_high.checkpointing
    assert kept_losses == pytest.approx(plain_losses, rel=1e-5)
    for (name, a), b in zip(plain.named_parameters(), kept.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
    # spectral norm's power iteration ran once per forward, as without checkpointing
    for a, b in zip(plain.buffers(), kept.buffers()):
        torch.testing.assert_close(b, a)


def test_fp16_on_the_cpu_is_refused_before_any_work(tmp_path, capsys):
    code = cli.main(["train", "--data", "demo-brain", "--preset", "tiny-32", "--device", "cpu", "--precision", "fp16",
                     "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err.strip() == \
        "crfgan: error: --precision fp16 needs a CUDA device, not cpu; bf16 runs on the CPU"
    assert not (tmp_path / "run").exists()


def test_bench_measures_with_and_without_activation_checkpointing(capsys):
    assert cli.main(["bench", "--compare", "checkpointing", "--preset", "tiny-32", "--iterations", "1", "--repeats",
                     "1", "--device", "cpu", "--json"]) == 0
    r = __import__("json").loads(capsys.readouterr().out)
    assert set(r["results"]) == {"with", "without"}
    for s in r["results"].values():
        assert s["peak_memory_mb"] > 0 and s["iters_per_s"] > 0
    assert r["results"]["with"]["static_mb"] == r["results"]["without"]["static_mb"]  # the same weights
    assert set(r["with / without"]) == {"peak_memory", "activation_memory", "speed"}
