"""`crfgan sweep` on tiny-32: recipes x seeds trained, scored on the held-out list, ranked, resumable."""
import json

from napari_crfgan.cli import main
from napari_crfgan.experiments.sweep import COLUMNS, SweepOptions, rank, run_sweep
from napari_crfgan.runtime import load_checkpoint


def test_sweep_trains_ranks_adds_seeds_to_the_best_and_resumes(tmp_path, capsys):
    o = SweepOptions(out=str(tmp_path / "sweep"), recipes="paper,hinge", seeds="0", top=1, top_seeds="1",
                     preset="tiny-32", iterations=3, batch_size=2, demo_count=32, num_samples=8, workers=1,
                     report=str(tmp_path / "docs" / "recipes.md"))
    result = run_sweep(o)
    names = [n for n, _ in result["ranking"]]
    assert sorted(names) == ["hinge", "paper"]
    seeds = {n: e["seeds"] for n, e in result["ranking"]}
    assert sorted(seeds.values()) == [1, 2]  # the best recipe after the first seed got the extra seed
    split = json.loads((tmp_path / "sweep" / "split.json").read_text())
    assert "test" in split["parts"] and split["parts"]["test"]
    ckpt = load_checkpoint(tmp_path / "sweep" / "runs" / "hinge-seed0" / "checkpoint.pt")
    assert ckpt.options["split"] == str(tmp_path / "sweep" / "split.json") and ckpt.options["recipe"] == "hinge"
    assert ckpt.data["split"]  # trained on the split's train list, and says so
    for run in result["runs"].values():
        assert set(run["scores"]) >= {k for k, _, _ in COLUMNS}
        assert (tmp_path / "docs" / "images" / run["montage"]).is_file()
    md = (tmp_path / "docs" / "recipes.md").read_text()
    assert "| 1 | " in md and "hinge" in md and "images/sweep_paper-seed0.png" in md
    assert "Produced by `crfgan sweep --out " in md and "--top-seeds 1 " in md and "--seeds" not in md  # its flags
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "sweep" / "runs").rglob("*.json")}
    # a second invocation (as after a kill) reuses every finished run and evaluation
    assert main(["sweep", "--out", o.out, "--recipes", "paper,hinge", "--seeds", "0", "--top", "1",
                 "--top-seeds", "1", "--preset", "tiny-32", "--iterations", "3", "--batch-size", "2",
                 "--demo-count", "32", "--num-samples", "8", "--workers", "1"]) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "mean rank" in capsys.readouterr().out


def test_rank_is_the_mean_rank_over_the_columns():
    def run(**scores):
        return {"scores": {"coverage": 0.5, "recall": 0.5, "kid": 0.1, "msssim_gap": 0.1, "grid": 0.0,
                           "memorised": 0.0, **scores}}
    ranking = rank({"a": [run(coverage=0.9)], "b": [run(coverage=0.1), run(coverage=0.2), run(coverage=0.15)],
                    "c": [run(kid=0.05, coverage=0.9)]})
    assert [n for n, _ in ranking] == ["c", "a", "b"]
    assert ranking[1][1]["median"]["coverage"] == 0.9 and ranking[2][1]["seeds"] == 3
