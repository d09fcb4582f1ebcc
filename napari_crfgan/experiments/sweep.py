"""`crfgan sweep`: training recipes x seeds as short runs, ranked on held-out data.

Every (recipe, seed) is one run folder under ``<out>/runs`` trained with the same
preset, data, split, iterations and batch; runs go side by side, one process and one
torch thread each (so they share the cores instead of fighting over them). A killed
sweep resumes: finished runs are reused, unfinished ones continued, finished
evaluations read back from ``eval.json`` beside each checkpoint.

Each run is sampled (the same latent seeds for all) and scored against the held-out
test list of one recorded split (``<out>/split.json``), never against its training
volumes: coverage and recall (k = 5 on shallow features), KID, the MS-SSIM gap between
sample pairs and real pairs, the grid measure and the memorisation fraction. Recipes
are ranked by the mean of their ranks over these six (the median over seeds where a
recipe has several). The best `top` recipes then get `top_seeds` more seeds, and the
table is written again.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from ..data import make_split, write_split
from ..data.split import find_split
from ..evaluation import evaluate
from ..evaluation.memorisation import memorisation
from ..model import get_config
from ..model.recipes import RECIPES, recipe
from ..sampling import Sampler
from ..training import TrainOptions
from ..training.options import option
from .montage import montage, write_png
from .runs import train_all

EVAL_NAME = "eval.json"
#: the ranking's columns: result key, how to read it, and which way is better
COLUMNS = (
    ("coverage", "coverage", "higher"),
    ("recall", "recall", "higher"),
    ("kid", "KID (shallow)", "lower"),
    ("msssim_gap", "MS-SSIM gap to real pairs (absolute)", "lower"),
    ("grid", "grid (fake - real)", "lower"),
    ("memorised", "memorised fraction", "lower"),
)


@dataclass
class SweepOptions:
    out: str = option("runs/sweep", "sweep folder: split.json, runs/<recipe>-seed<N>/, recipes.md and montages")
    recipes: str = option(",".join(RECIPES), "comma-separated recipe names (default: every recipe)")
    seeds: str = option("0", "comma-separated training seeds of every recipe")
    top: int = option(5, "how many of the best recipes get the extra seeds")
    top_seeds: str = option("1,2", "comma-separated extra seeds of the best recipes ('' : none)")
    data: str = option("demo-brain", "dataset folder or demo set")
    demo_count: int | None = option(60, "demo volumes (demo sets only)")
    model: str = option("crfgan", "GAN system of every run")
    preset: str = option("small-64", "model configuration of every run")
    iterations: int = option(500, "training iterations of every run")
    batch_size: int = option(4, "volumes per iteration")
    num_samples: int = option(32, "generated volumes per run for the evaluation")
    workers: int = option(2, "runs trained at once (one process and one torch thread each)")
    device: str = option("cpu", "training and sampling device")
    report: str | None = option(None, "also write the ranked table here (e.g. docs/recipes.md)")

    def recipe_names(self) -> list[str]:
        names = [n.strip() for n in self.recipes.split(",") if n.strip()]
        for n in names:
            recipe(n)  # ValueError naming the choices
        if not names:
            raise ValueError("choose at least one recipe")
        return names


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _train_options(o: SweepOptions, split_path: Path, name: str, seed: int) -> TrainOptions:
    return TrainOptions(data=o.data, out=Path(o.out) / "runs" / f"{name}-seed{seed}", model=o.model, preset=o.preset,
                        iterations=o.iterations, batch_size=o.batch_size, device=o.device, seed=seed,
                        demo_count=o.demo_count, recipe=name, split=str(split_path),
                        checkpoint_every=max(50, o.iterations // 4))


def _scores(metrics: dict, mem: dict) -> dict:
    div = metrics["msssim_diversity"]
    return {"coverage": metrics["coverage"]["value"], "recall": metrics["recall"]["value"],
            "kid": metrics["kid_shallow"]["value"], "msssim_gap": abs(div["value"] - div["real"]),
            "grid": metrics["grid"]["value"], "grid_p": metrics["grid"].get("p"),
            "fd": metrics["fd_shallow"]["value"], "fd_floor": metrics["real_vs_real"]["fd_shallow"]["value"],
            "memorised": mem["value"]}


def _evaluate_run(run: dict, real: np.ndarray, train: np.ndarray, o: SweepOptions, images: Path, key: str) -> dict:
    path = Path(run["checkpoint"]).parent / EVAL_NAME
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("checkpoint_iteration") == o.iterations:
            return saved
    sampler = Sampler(run["checkpoint"], device=o.device)
    fake = np.stack([v.model_units for v in sampler.sample(o.num_samples, seed=0)])
    metrics = evaluate(real, fake, features=("shallow",), seeds=(0,), kid_subsets=50, mmd_permutations=50,
                       msssim_pairs=32, n_boot=100)
    mem = memorisation(train, real, fake)
    write_png(images / f"sweep_{key}.png", montage([list(real[:4]), list(fake[:4])]))
    out = {"scores": _scores(metrics, mem), "seconds": run.get("seconds"), "iters_per_s": run.get("iters_per_s"),
           "checkpoint_iteration": o.iterations, "montage": f"sweep_{key}.png"}
    path.write_text(json.dumps(out, indent=1))
    return out


def rank(results: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """Recipes by the mean of their ranks over :data:`COLUMNS` (each column the median over seeds; tied
    values share their mean rank)."""
    med = {name: {k: float(np.median([r["scores"][k] for r in runs])) for k, _, _ in COLUMNS}
           for name, runs in results.items()}
    names = list(med)
    total = dict.fromkeys(names, 0.0)
    for key, _, better in COLUMNS:
        values = np.array([med[n][key] for n in names])
        ranks = rankdata(-values if better == "higher" else values)  # ties share their mean rank
        for n, r in zip(names, ranks):
            total[n] += r / len(COLUMNS)
    return sorted(((n, {"mean_rank": total[n], "median": med[n], "seeds": len(results[n])}) for n in names),
                  key=lambda item: item[1]["mean_rank"])


def run_sweep(o: SweepOptions, log: Callable[[str], None] = lambda msg: None) -> dict:
    """Train, evaluate and rank; returns ``{"ranking", "runs", "split", "seconds"}`` (also ``<out>/sweep.json``)."""
    names = o.recipe_names()
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    split = find_split("auto", out)
    if split is None:
        split = make_split(o.data, (0.5, 0.1, 0.4), seed=0, demo_count=o.demo_count)
        write_split(split, out)
        split = find_split("auto", out)  # as read back: with its path, which every run records
    size = get_config(o.preset).size
    train_set, test_set = split.dataset("train", size), split.dataset("test", size)
    real, train = test_set.volumes(), train_set.volumes()
    images = out / "images"
    images.mkdir(exist_ok=True)
    log(f"sweep: {len(names)} recipes x seeds {o.seeds}; {split.describe()}")

    def train_and_score(pairs):
        opts = {(n, s): _train_options(o, split.path, n, s) for n, s in pairs}
        runs = train_all(opts, train_set if o.workers <= 1 else None, log, workers=o.workers, threads=1)
        return {key: {**_evaluate_run(run, real, train, o, images, f"{key[0]}-seed{key[1]}"), "recipe": key[0],
                      "seed": key[1]} for key, run in runs.items()}

    evaluated = train_and_score([(n, s) for s in _ints(o.seeds) for n in names])
    results: dict[str, list[dict]] = {}
    for (n, _), r in evaluated.items():
        results.setdefault(n, []).append(r)
    extra = [s for s in _ints(o.top_seeds) if s not in _ints(o.seeds)]
    if extra and o.top:
        best = [n for n, _ in rank(results)[:o.top]]
        log(f"sweep: extra seeds {extra} for the best {len(best)}: {', '.join(best)}")
        more = train_and_score([(n, s) for s in extra for n in best])
        for (n, _), r in more.items():
            results[n].append(r)
        evaluated.update(more)
    ranking = rank(results)
    result = {"ranking": ranking, "runs": {f"{n}-seed{s}": r for (n, s), r in evaluated.items()},
              "split": split.describe(), "options": dataclasses.asdict(o), "seconds": time.perf_counter() - t0,
              "floor_fd": float(np.median([r["scores"]["fd_floor"] for r in evaluated.values()]))}
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    md = sweep_markdown(result)
    (out / "recipes.md").write_text(md)
    if o.report:  # the page and its montages, in the page's own images/ folder
        report = Path(o.report)
        (report.parent / "images").mkdir(parents=True, exist_ok=True)
        for r in evaluated.values():
            shutil.copyfile(images / r["montage"], report.parent / "images" / r["montage"])
        report.write_text(md)
    log(f"sweep: wrote {out / 'recipes.md'} ({result['seconds'] / 60:.1f} min)")
    return result


def command_of(options: dict) -> str:
    """The `crfgan sweep` command line of these options (flags that differ from the defaults)."""
    defaults = dataclasses.asdict(SweepOptions())
    flags = [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in options.items()
             if k in defaults and v != defaults[k]]
    return " ".join(["crfgan sweep", *flags])


def _extra_seeds(o: dict) -> str:
    if o["top"] and o["top_seeds"]:
        return f" and {o['top_seeds']} more for the best {o['top']}"
    if len(_ints(o["seeds"])) == 1:
        return " and no extra seeds for the best (one seed cannot tell a recipe from luck: a first look, not a ranking)"
    return ""


def sweep_markdown(result: dict, image_dir: str = "images") -> str:
    """The ranked table (medians over seeds), each recipe's fields, time per run and montages."""
    o = result["options"]
    head = "| rank | recipe | seeds | " + " | ".join(label for _, label, _ in COLUMNS) + " | FD / floor | s per run |"
    lines = [
        "# Training recipes, ranked on held-out volumes",
        "",
        f"Produced by `{command_of(o)}`.",
        "",
        (f"`crfgan sweep`: {o['model']} {o['preset']}, {o['iterations']} iterations at batch {o['batch_size']} per "
         f"run, training seeds {o['seeds']} for every recipe{_extra_seeds(o)}, "
         f"on {o['data']} ({result['split']}), {o['workers']} runs at a time; the sweep took "
         f"{result['seconds'] / 60:.0f} min. {o['num_samples']} samples per run scored against the test "
         "list. Rank: the mean of the ranks over the six columns (medians over seeds). Higher is better for "
         "coverage and recall; lower for the rest. Memorised: fraction of samples closer to a training volume "
         "than the 5th percentile of test volumes are (null 0.05)."),
        "",
        head,
        "|" + "---|" * (head.count("|") - 1),
    ]
    times = {}
    for r in result["runs"].values():
        times.setdefault(r["recipe"], []).append(r.get("seconds") or float("nan"))
    for i, (name, entry) in enumerate(result["ranking"], 1):
        m = entry["median"]
        fd = np.median([r["scores"]["fd"] / r["scores"]["fd_floor"] for r in result["runs"].values()
                        if r["recipe"] == name])
        cells = [f"{m[k]:.3f}" for k, _, _ in COLUMNS]
        lines.append(f"| {i} | {name} | {entry['seeds']} | " + " | ".join(cells)
                     + f" | {fd:.1f} | {np.nanmedian(times[name]):.0f} |")
    lines += ["", "Recipes (fields on top of the papers' recipe):", ""]
    lines += [f"- `{name}`: {RECIPES.get(name) or 'the papers: BCE, spectral norm, nearest upsampling'}"
              for name, _ in result["ranking"]]
    lines += ["", "Samples (top: held-out real, bottom: generated), first seed of each recipe:", ""]
    for name, _ in result["ranking"]:
        first = min((r for r in result["runs"].values() if r["recipe"] == name), key=lambda r: r["seed"])
        lines += [f"**{name}** (seed {first['seed']})", "", f"![{name}]({image_dir}/{first['montage']})", ""]
    return "\n".join(lines) + "\n"
