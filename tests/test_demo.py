"""`crfgan demo` end to end on a tiny preset: train, sample, montage; a second call reuses the run."""
from napari_crfgan.data import read_nifti
from napari_crfgan.experiments.demo import DemoOptions, run_demo


def test_demo_trains_samples_and_reuses_its_run(tmp_path):
    options = DemoOptions(out=str(tmp_path / "demo"), iterations=2, num=2, preset="tiny-32", device="cpu",
                          demo_count=10)
    first = run_demo(options)
    assert first["run"].iteration == 2 and not first["run"].reused
    assert [p.name for p in first["samples"]] == ["sample_seed0000.nii.gz", "sample_seed0001.nii.gz"]
    assert read_nifti(first["samples"][0]).data.shape == (32, 32, 32)
    assert first["montage"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = []
    again = run_demo(options, log=logged.append)
    assert again["run"].reused and again["run"].iteration == 2
    assert any("already trained for 2 iterations" in line for line in logged)
