"""`crfgan paper-tables` at the tiny budget writes all five tables and the figures."""
import re
import sys

import pytest
import torch

from napari_crfgan.cli import main
from napari_crfgan.experiments.paper_tables import BUDGETS, PaperTablesError, run_paper_tables
from napari_crfgan.model import build_system, get_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-tables")
    threads = torch.get_num_threads()
    try:
        code = main(["paper-tables", "--budget", "tiny", "--out", str(root / "docs"), "--work", str(root / "work")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return root, (root / "docs" / "results.md").read_text()


def test_results_md_has_all_five_tables_and_the_floor(tiny_run):
    _, md = tiny_run
    for n in range(1, 6):
        assert f"## Table {n}:" in md
    assert "| real vs real (floor) |" in md
    assert "crfgan paper-tables --budget tiny" in md  # the command that made it
    assert re.search(r"at commit `[0-9a-f]{7,}", md)
    assert "torch " + torch.__version__ in md and "torch thread" in md
    assert "## Where this run differs from the paper" in md
    # Table 1 rows: both systems with numbers
    for name in ("CRF-GAN", "HA-GAN"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert re.search(r"\d", row)
    # Table 5 arms with mean ± std
    for arm in ("real only", "+ CRF-GAN", "+ HA-GAN"):
        row = next(line for line in md.splitlines() if line.startswith(f"| {arm} |"))
        assert row.count("±") >= 3
    # Table 3 says that 256^3 needs CUDA where there is none
    if not torch.cuda.is_available():
        assert "no CUDA device" in md


def test_parameter_table_has_exact_counts(tiny_run):
    _, md = tiny_run
    system = {m: build_system(m, get_config("paper-64")) for m in ("crfgan", "hagan")}
    total = {m: sum(p.numel() for p in s.parameters()) for m, s in system.items()}
    row = next(line for line in md.splitlines() if line.startswith("| paper-64 |") and "%" in line)
    assert f"{total['hagan']:,}" in row and f"{total['crfgan']:,}" in row
    assert f"{100 * (1 - total['crfgan'] / total['hagan']):.2f}%" in row
    for preset in ("paper-128", "paper-256"):
        assert f"| {preset} |" in md


def test_figures_exist_and_are_png(tiny_run):
    root, md = tiny_run
    images = root / "docs" / "images"
    names = sorted(p.name for p in images.glob("results_*.png"))
    assert names == ["results_augmentation.png", "results_memory.png", "results_samples.png",
                     "results_training.png"]
    for name in names:
        data = (images / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000
        assert f"(images/{name})" in md
    assert (root / "work" / "tiny" / "results.json").is_file()


def test_missing_matplotlib_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(PaperTablesError, match="matplotlib"):
        run_paper_tables("tiny", out=tmp_path / "docs", work=tmp_path / "work")
    assert main(["paper-tables", "--budget", "tiny", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0]
    assert not (tmp_path / "docs" / "results.md").exists()


def test_paper_budget_needs_cuda(tmp_path):
    assert BUDGETS["paper"].needs_cuda and BUDGETS["small"].gan_preset == "small-64"
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(PaperTablesError, match="CUDA"):
        run_paper_tables("paper", out=tmp_path, work=tmp_path / "work", device="cpu")


def test_side_by_side_training_matches_in_process_training(tmp_path):
    """The small budget trains both systems in two worker processes; the checkpoints are the same."""
    import dataclasses

    from napari_crfgan.experiments.paper_tables.runs import train_both, train_options
    from napari_crfgan.runtime import load_checkpoint

    budget = dataclasses.replace(BUDGETS["tiny"], parallel_training=True, brain_iterations=2)
    opts = {m: train_options(budget, "demo-brain", tmp_path / "par" / m, m, 2, "cpu", demo_count=8)
            for m in ("crfgan", "hagan")}
    runs = train_both(budget, opts, None, lambda msg: None)
    assert set(runs) == {"crfgan", "hagan"}
    for run in runs.values():
        assert not run["reused"] and run["iterations"] == 2 and run["history"]["iteration"][-1] == 2
    seq = {m: dataclasses.replace(o, out=tmp_path / "seq" / m) for m, o in opts.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_both(dataclasses.replace(budget, parallel_training=False), {"crfgan": seq["crfgan"]}, None,
                   lambda msg: None)
    finally:
        torch.set_num_threads(threads)
    a = load_checkpoint(tmp_path / "par" / "crfgan").state
    b = load_checkpoint(tmp_path / "seq" / "crfgan").state
    assert all(torch.equal(a[k], b[k]) for k in a)
    again = train_both(budget, opts, None, lambda msg: None)  # finished runs are reused, not retrained
    assert all(r["reused"] for r in again.values())


def test_markdown_renders_again_from_the_raw_json(tiny_run, tmp_path):
    from napari_crfgan.experiments.paper_tables import render_markdown

    root, md = tiny_run
    path = render_markdown(root / "work" / "tiny" / "results.json", tmp_path)
    lines = path.read_text().splitlines()
    note = [i for i, line in enumerate(lines) if line.startswith("This page was rendered again")]
    assert len(note) == 1
    del lines[note[0]:note[0] + 2]
    assert "\n".join(lines) + "\n" == md
