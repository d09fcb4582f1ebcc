"""Mask-to-volume synthesis judged as in the empirical study (issue 14): segmentation Dice, FD / KID,
per-structure intensity agreement and the painted-nodule check, on demo-chest with its masks.

The data: demo-chest (`count` volumes with their label masks) cut once by data/split.py into
train / val / test, stratified by nodule / no-nodule (``<work>/split.json``):

- the GAN (pix2pix or spade) trains on the **train** pairs only;
- synthetic pairs are the GAN's volumes of the **val** masks: masks the GAN never saw, so the synthetic
  set adds anatomy the real training set does not have (the val images are never used);
- a small 3D U-Net segmenter (model/segmenter.py) trains on the train pairs (``real only``, the floor),
  on the train pairs plus the synthetic pairs (``real + synthetic``) and on the synthetic pairs alone,
  from each of `seg_seeds`, the same steps and batch for every arm;
- everything is scored on the **test** pairs, which neither the GAN nor any segmenter saw: Dice per
  structure (mean and 95% t-interval over seeds), FD / KID (shallow random features, the package's
  `evaluate`) of the GAN's volumes of the test masks against the real test volumes, the mean HU inside
  each structure of those volumes against the real ones (same masks), and the painted nodule.

:func:`run_mask_eval` runs it (trained runs and results are reused from `work`), :func:`mask_markdown`
renders the section of results.md; `crfgan paper-tables` (Table 6) and `crfgan mask-eval` both call them.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import make_split, to_modality_units, write_split
from ..data.preprocess import from_modality_units
from ..evaluation import evaluate
from ..model import system_config
from ..synthesis import Synthesizer
from ..training import TrainOptions
from .mask_measures import (dice_per_structure, nanmean, paint_sphere, painted_contrast, seed_interval,
                            structure_means)
from .runs import train_one
from .segmentation import SegmenterSettings, predict, train_segmenter

#: the segmenter's classes on demo-chest, by label name (class 0: everything else, air and outside)
STRUCTURES = {
    "lung": ("lung", "lung vessel", "airway"),
    "soft tissue": ("fat", "muscle", "abdomen", "mediastinal fat", "intervertebral disc", "spinal canal",
                    "heart and aorta"),
    "bone": ("rib", "vertebra"),
    "nodule": ("nodule",),
}
BODY = "body"  # every class but 0: the body outline
#: acceptance: |synthetic - real| mean HU in these structures at most HU_TOLERANCE
HU_CHECKED, HU_TOLERANCE, NODULE_CONTRAST = ("lung", "soft tissue"), 50.0, 300.0
ARMS = ("real only", "real + synthetic", "synthetic only")
RESULT_NAME = "mask_eval.json"


@dataclass(frozen=True)
class MaskEvalSettings:
    """The size of the mask-synthesis evaluation (one per paper-tables budget)."""

    model: str = "pix2pix"
    count: int = 40  # demo-chest volumes with masks
    split: tuple[float, float, float] = (0.4, 0.3, 0.3)  # GAN + real segmenter / synthetic masks / test
    split_seed: int = 0
    iterations: int = 400  # GAN iterations (the budget's preset and batch size)
    gan_seed: int = 0
    seg_seeds: tuple[int, ...] = (0, 1, 2)
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)
    nodule_radius: float = 4.0  # voxels of the model's grid
    nodule_shell: float = 2.0  # voxels of lung around the painted ball
    eval_options: dict = field(default_factory=lambda: {
        "features": ("shallow",), "seeds": (0, 1, 2), "kid_subsets": 50, "mmd_permutations": 50,
        "msssim_pairs": 10, "n_boot": 100})


def settings_from_record(record: dict) -> MaskEvalSettings:
    """The settings back from their JSON form (lists were tuples)."""
    r = {k: tuple(v) if isinstance(v, list) else v for k, v in record.items()}
    r["segmenter"] = SegmenterSettings(**r["segmenter"])
    r["eval_options"] = {k: tuple(v) if isinstance(v, list) else v for k, v in r["eval_options"].items()}
    return MaskEvalSettings(**r)


# ---------------------------------------------------------------------------- data
def _classes(label_names: dict[int, str]) -> np.ndarray:
    """Lookup table label -> segmenter class (0 for labels of no structure)."""
    table = np.zeros(max(label_names, default=0) + 1, dtype=np.int64)
    by_name = {n: k for k, n in label_names.items()}
    for cls, names in enumerate(STRUCTURES.values(), start=1):
        for name in names:
            if name in by_name:
                table[by_name[name]] = cls
    return table


def _pairs(dataset) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, S, S, S] in model units, labels [N, S, S, S] uint8) of a paired dataset."""
    items = [dataset[i] for i in range(len(dataset))]
    return (np.stack([it[0].numpy() for it in items]).astype(np.float32),
            np.stack([it[1].numpy() for it in items]).astype(np.uint8))


# ---------------------------------------------------------------------------- parts
def _segmentation(arms: dict, test_images, test_classes, settings: MaskEvalSettings, work: Path, gan_key: dict,
                  log) -> dict:
    """Dice per structure on the test pairs for every arm and seed. Each run's result is kept in `work` and
    reused only by a run of the same settings (and, for the arms with synthetic pairs, the same GAN)."""
    structures = {name: (k,) for k, name in enumerate(STRUCTURES, start=1)}
    structures[BODY] = tuple(range(1, len(STRUCTURES) + 1))
    test_x = torch.from_numpy(test_images)[:, None]
    out: dict = {}
    for arm, (images, classes) in arms.items():
        runs = []
        for seed in settings.seg_seeds:
            path = work / "segmenter" / f"{arm.replace(' ', '_').replace('+', 'plus')}-seed{seed}.json"
            key = {"segmenter": dataclasses.asdict(settings.segmenter), "pairs": int(len(images)),
                   "test": int(len(test_images)), "gan": None if arm == "real only" else gan_key}
            kept = json.loads(path.read_text()) if path.is_file() else {}
            if kept.get("key") == key:
                runs.append({**kept, "reused": True})
                continue
            t = time.perf_counter()
            model = train_segmenter(torch.from_numpy(images)[:, None], torch.from_numpy(classes), len(STRUCTURES) + 1,
                                    seed, settings.segmenter)
            pred = predict(model, test_x).numpy()
            cases = [dice_per_structure(p, c, structures) for p, c in zip(pred, test_classes)]
            run = {"key": key, "seed": seed, "dice": {s: nanmean([c[s] for c in cases]) for s in structures},
                   "cases": cases, "seconds": round(time.perf_counter() - t, 1)}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run))
            log(f"segmenter {arm} seed {seed}: " + ", ".join(
                f"{s} {v:.3f}" for s, v in run["dice"].items() if v is not None) + f" ({run['seconds']:.0f} s)")
            runs.append(run)
        out[arm] = {"pairs": int(len(images)), "runs": runs,
                    "dice": {s: seed_interval([r["dice"][s] for r in runs], (0.0, 1.0)) for s in structures}}
    return out


def _intensity(real_hu, synth_hu, labels, label_names: dict[int, str]) -> dict:
    """Mean HU inside each structure (and each label) of every test case, real and synthetic, same masks."""
    groups = {name: [k for k, n in label_names.items() if n in names] for name, names in STRUCTURES.items()}
    per_label = {n: [k] for k, n in sorted(label_names.items())}
    out = {}
    for key, table in (("structures", groups), ("labels", per_label)):
        rows = {}
        for name, ks in table.items():
            real = [structure_means(r, m, {name: ks})[name] for r, m in zip(real_hu, labels)]
            fake = [structure_means(s, m, {name: ks})[name] for s, m in zip(synth_hu, labels)]
            diffs = [f - r for f, r in zip(fake, real) if f is not None]
            if not diffs:
                continue
            rows[name] = {"real": nanmean(real), "synthetic": nanmean(fake), "diff": float(np.mean(diffs)),
                          "diff_std": float(np.std(diffs, ddof=1)) if len(diffs) > 1 else None,
                          "cases": len(diffs)}
        out[key] = rows
    return out


def _painted(synth: Synthesizer, labels, plain_hu, label_names, settings: MaskEvalSettings) -> dict:
    """The painted-nodule check on every test mask where a ball of the radius fits in the lung."""
    by_name = {n: k for k, n in label_names.items()}
    cases = []
    for i, (mask, plain) in enumerate(zip(labels, plain_hu)):
        painted = paint_sphere(mask, by_name["lung"], by_name["nodule"], settings.nodule_radius,
                               settings.nodule_shell)
        if painted is None or not painted[2].any():
            continue
        new, ball, shell = painted
        hu = synth.volume(new)
        cases.append({"case": i, "ball_voxels": int(ball.sum()), "inside": float(hu[ball].mean()),
                      "shell": float(hu[shell].mean()), "contrast": painted_contrast(hu, ball, shell),
                      "unpainted_contrast": painted_contrast(plain, ball, shell)})
    contrasts = [c["contrast"] for c in cases]
    return {"radius": settings.nodule_radius, "shell": settings.nodule_shell, "cases": cases,
            "mean": nanmean(contrasts), "min": float(min(contrasts)) if contrasts else None,
            "skipped": len(labels) - len(cases)}


def _acceptance(result: dict) -> dict:
    """Each criterion of issue 14 and whether this run meets it."""
    rows = result["intensity"]["structures"]
    hu = {s: rows[s]["diff"] for s in HU_CHECKED if s in rows}
    floor, both = (result["segmentation"][a]["dice"] for a in ("real only", "real + synthetic"))
    dice_ok = {s: (both[s]["mean"] is not None and floor[s]["low"] is not None and both[s]["mean"] >= floor[s]["low"])
               for s in floor if floor[s]["mean"] is not None}
    painted = result["painted"]["mean"]
    return {"hu": {"diff": hu, "holds": bool(hu) and all(abs(d) <= HU_TOLERANCE for d in hu.values())},
            "nodule": {"contrast": painted, "holds": painted is not None and painted >= NODULE_CONTRAST},
            "dice": {"per_structure": dice_ok, "holds": bool(dice_ok) and all(dice_ok.values())}}


# ---------------------------------------------------------------------------- the run
def run_mask_eval(settings: MaskEvalSettings, preset: str, batch_size: int, work: str | Path, device: str = "cpu",
                  log=None) -> dict:
    """Train (or reuse) the GAN, the segmenters, measure; the result is also `<work>/mask_eval.json`."""
    log = log or (lambda msg: None)
    work = Path(work)
    t0 = time.perf_counter()
    size = system_config(settings.model, preset).size
    split = make_split("demo-chest", settings.split, seed=settings.split_seed, demo_count=settings.count)
    split_path = write_split(split, work, force=True)
    log(f"mask synthesis: {split.describe()}")
    parts = {p: split.dataset(p, size, masks="demo") for p in ("train", "val", "test")}
    options = TrainOptions(data="demo-chest", masks="demo", demo_count=settings.count, model=settings.model,
                           preset=preset, iterations=settings.iterations, batch_size=batch_size, device=device,
                           seed=settings.gan_seed, split=str(split_path), checkpoint_every=100,
                           out=work / f"{settings.model}-seed{settings.gan_seed}")
    gan = train_one(options, parts["train"], log)
    synth = Synthesizer(gan["checkpoint"], device=device)
    names = parts["test"].label_names or dict(enumerate(synth.label_names))
    table = _classes(names)
    (train_x, train_m), (val_x, val_m), (test_x, test_m) = (_pairs(parts[p]) for p in ("train", "val", "test"))
    log(f"synthesizing {len(val_m)} volumes of the val masks and {len(test_m)} of the test masks")
    hu_of = [synth.volume(m) for m in val_m], [synth.volume(m) for m in test_m]
    syn_x = np.stack([from_modality_units(v, synth.modality) for v in hu_of[0]]).astype(np.float32)
    syn_test = np.stack([from_modality_units(v, synth.modality) for v in hu_of[1]]).astype(np.float32)
    arms = {"real only": (train_x, table[train_m]),
            "real + synthetic": (np.concatenate([train_x, syn_x]), table[np.concatenate([train_m, val_m])]),
            "synthetic only": (syn_x, table[val_m])}
    result: dict = {"settings": dataclasses.asdict(settings), "preset": preset, "batch_size": batch_size,
                    "model": settings.model, "counts": split.counts(), "split": str(split_path),
                    "gan": {**{k: v for k, v in gan.items() if k != "history"},
                            "checkpoint_iteration": synth.checkpoint.iteration}}
    gan_key = {"checkpoint": str(gan["checkpoint"]), "iteration": synth.checkpoint.iteration}
    result["segmentation"] = _segmentation(arms, test_x, table[test_m], settings, work, gan_key, log)
    log("FD / KID of the synthetic test volumes against the real ones")
    metrics = evaluate(test_x, syn_test, **settings.eval_options)
    result["realism"] = {k: {"value": metrics[k]["value"], "std": metrics[k]["std"],
                             "floor": metrics["real_vs_real"][k]["value"]} for k in ("fd_shallow", "kid_shallow")}
    result["realism"]["counts"] = metrics["counts"]
    real_hu = [to_modality_units(x, synth.modality) for x in test_x]
    result["intensity"] = _intensity(real_hu, hu_of[1], test_m, names)
    result["painted"] = _painted(synth, test_m, hu_of[1], names, settings)
    result["acceptance"] = _acceptance(result)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    (work / RESULT_NAME).write_text(json.dumps(result, indent=1, default=lambda o: list(o) if isinstance(o, tuple)
                                               else str(o)))
    return result
