"""The augmentation task (CRF-GAN paper, Table 5): does synthetic data help a classifier?

A small 3D CNN learns to tell volumes with a lung nodule from volumes without
(``demo-chest``: ``nodule`` / ``no-nodule``; any folder with a two-class
``labels.csv`` works). It is trained in several *arms*:

* ``real only``: the real training volumes;
* ``+ <name>``: the same real volumes plus as many synthetic ones ("50%" of the
  augmented set), sampled from a class-conditional generator with balanced
  labels (``Sampler.sample(..., label=k)``); the synthetic volume's label is the
  class it was generated for.

Each arm is trained from ``len(seeds)`` seeds (weights, batch order and flips
follow the seed) with early stopping on the loss of a real validation split,
and scored on held-out real test volumes: precision, recall and F1 with the
positive class ``nodule``, mean and std (ddof=1) over seeds. The real volumes
are split once, deterministically and stratified by class, so every arm and seed
sees the same train / validation / test volumes; the synthetic volumes are drawn
once per generator from fixed latent seeds (the same seeds for every generator).

The generators must not have seen the validation or test volumes: train them on
:func:`split_indices`' training part (``crfgan paper-tables`` does; see
:func:`write_split_folder`).
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runtime import torch_threads

__all__ = ["AugmentationSettings", "NoduleClassifier", "EarlyStopping", "split_indices", "write_split_folder",
           "synthesise", "train_classifier", "binary_scores", "run_augmentation", "run_downstream",
           "augmentation_markdown"]

@dataclass
class AugmentationSettings:
    """Classifier training settings (the same for every arm and seed)."""

    max_epochs: int = 50
    patience: int = 6  # epochs without a lower validation loss before stopping
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 8  # channels of the first conv; doubled per stage up to 4x
    flip: bool = True  # random flips of training volumes along each axis
    synthetic_fraction: float = 0.5  # share of synthetic volumes in the augmented training set
    split: tuple[float, float, float] = (0.5, 0.25, 0.25)  # train / val / test, per class
    split_seed: int = 0
    synthetic_seed: int = 100_000  # first latent seed of the synthetic volumes
    threshold: float = 0.5  # on the sigmoid output
    threads: int | None = None  # torch CPU threads (None: leave as is)


# ---------------------------------------------------------------------------- model

class NoduleClassifier(nn.Module):
    """A small 3D CNN: four conv stages (the first with stride 2, max pooling after
    the first three, no normalisation layers), global max + mean pooled, one logit.
    At 64^3 the stages run at 32^3, 16^3, 8^3 and 4^3 voxels.

    Max pooling keeps a small bright blob visible however few voxels it covers; the
    global mean pools the context.
    """

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        chans = [1, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            stride = 2 if i == 0 else 1
            layers += [nn.Conv3d(chans[i], chans[i + 1], 3, stride=stride, padding=1), nn.LeakyReLU(0.1)]
            if i < 3:
                layers.append(nn.MaxPool3d(2))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * chans[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        pooled = torch.cat([h.amax(dim=(2, 3, 4)), h.mean(dim=(2, 3, 4))], dim=1)
        return self.fc(pooled)[:, 0]


class EarlyStopping:
    """Stop after `patience` epochs without a strictly lower validation loss; keep the best weights."""

    def __init__(self, patience: int) -> None:
        if patience < 1:
            raise ValueError("patience must be at least 1")
        self.patience = patience
        self.best = float("inf")
        self.best_epoch = 0
        self.bad_epochs = 0
        self.best_state: dict | None = None

    def step(self, epoch: int, loss: float, model: nn.Module | None = None) -> bool:
        """Record epoch `epoch` (1-based) with validation `loss`; True when training should stop."""
        if loss < self.best:
            self.best, self.best_epoch, self.bad_epochs = loss, epoch, 0
            if model is not None:
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience


# ---------------------------------------------------------------------------- data

def split_indices(labels: Sequence[int], fractions: Sequence[float] = (0.5, 0.25, 0.25),
                  seed: int = 0) -> dict[str, list[int]]:
    """Stratified, deterministic train / val / test indices.

    Within each class the indices are permuted by ``numpy.random.default_rng(seed)``
    and cut by `fractions`; every part gets at least one volume of each class
    (so each class needs at least three volumes).
    """
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError("fractions must be three positive numbers (train, val, test)")
    total = float(sum(fractions))
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = len(idx)
        if n < 3:
            raise ValueError(f"class {int(cls)} has {n} volumes; the stratified split needs at least 3")
        n_val = max(1, int(round(n * fractions[1] / total)))
        n_test = max(1, int(round(n * fractions[2] / total)))
        n_train = n - n_val - n_test
        if n_train < 1:
            n_train, n_val = 1, n - 1 - n_test
        parts["train"] += idx[:n_train].tolist()
        parts["val"] += idx[n_train:n_train + n_val].tolist()
        parts["test"] += idx[n_train + n_val:].tolist()
    return {k: sorted(v) for k, v in parts.items()}


def write_split_folder(dataset, indices: Sequence[int], folder: str | os.PathLike) -> Path:
    """A dataset folder holding only `indices` of `dataset` (links, or copies) and their labels.csv.

    Used to train the generators on the training split alone. The volumes are the
    same files, so the preprocessing cache is reused.
    """
    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rows = ["filename,label"]
    for i in indices:
        rel = dataset.files[i]
        src = Path(dataset.folder) / rel
        dst = folder / rel.replace("/", "__")
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copy2(src, dst)
        rows.append(f"{dst.name},{dataset.class_names[dataset.labels[i]]}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _stack(dataset, indices: Sequence[int]) -> torch.Tensor:
    return torch.stack([dataset[int(i)] for i in indices]) if len(indices) else torch.empty(0)


def synthesise(sampler, counts: Mapping[int, int], first_seed: int = 100_000) -> tuple[torch.Tensor, torch.Tensor]:
    """`counts[k]` volumes of class k from a conditional `Sampler`: (volumes [N, 1, S, S, S], labels [N]).

    Class k uses latent seeds ``first_seed + 10_000 * k + i``: fixed, so every
    generator is sampled from the same codes.
    """
    if sampler.cfg.num_classes < 2:
        raise ValueError("the augmentation task needs a class-conditional generator (train with conditional)")
    vols, labels = [], []
    for k, n in counts.items():
        if n <= 0:
            continue
        for v in sampler.sample(int(n), seed=first_seed + 10_000 * int(k), label=int(k)):
            vols.append(torch.from_numpy(np.ascontiguousarray(v.model_units))[None])
            labels.append(int(k))
    return torch.stack(vols), torch.tensor(labels, dtype=torch.long)


# ---------------------------------------------------------------------------- training

def binary_scores(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and accuracy of 0/1 predictions (a score with an empty denominator is 0)."""
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    tp = int(np.sum(pred & target))
    fp = int(np.sum(pred & ~target))
    fn = int(np.sum(~pred & target))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1,
            "accuracy": float(np.mean(pred == target)) if len(target) else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "tn": int(np.sum(~pred & ~target))}


@torch.no_grad()
def _loss_and_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, torch.Tensor]:
    model.eval()
    logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float(F.binary_cross_entropy_with_logits(logits, y)), logits


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     seed: int, settings: AugmentationSettings) -> tuple[nn.Module, dict]:
    """Train one classifier with early stopping; returns (model with the best weights, history)."""
    torch.manual_seed(seed)
    model = NoduleClassifier(settings.width)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    stopper = EarlyStopping(settings.patience)
    # balance the classes in the loss: positives weighted by negatives / positives
    n_pos = float(train_y.sum())
    pos_weight = torch.tensor((len(train_y) - n_pos) / n_pos) if 0 < n_pos < len(train_y) else None
    history: list[dict] = []
    epoch = 0
    stopped = False
    for epoch in range(1, settings.max_epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        total = 0.0
        for i in range(0, len(order), settings.batch_size):
            idx = order[i:i + settings.batch_size]
            x, y = train_x[idx], train_y[idx]
            if settings.flip:  # label-preserving: independent flips along D, H and W
                for axis in (2, 3, 4):
                    flip = torch.rand(len(idx), generator=gen) < 0.5
                    x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(axis), x)
            loss = F.binary_cross_entropy_with_logits(model(x), y, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        val_loss, _ = _loss_and_logits(model, val_x, val_y, settings.batch_size)
        history.append({"epoch": epoch, "train_loss": total / len(train_x), "val_loss": val_loss})
        if stopper.step(epoch, val_loss, model):
            stopped = True
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return model, {"epochs_run": epoch, "best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
                   "early_stopped": stopped, "history": history}


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def run_augmentation(real_dataset, generators: Mapping[str, object | None], seeds: Sequence[int] = tuple(range(10)),
                     settings: AugmentationSettings | None = None, positive: str | int = "nodule",
                     split: dict[str, list[int]] | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Train the classifier arms over `seeds` and score them on the held-out real test volumes.

    Args:
        real_dataset: a labelled :class:`~napari_crfgan.data.VolumeDataset` (two classes).
        generators: arm name -> conditional :class:`~napari_crfgan.sampling.Sampler`, or None for
            the real-only arm, e.g. ``{"real only": None, "CRF-GAN": s1, "HA-GAN": s2}``.
        seeds: classifier seeds (the paper uses 10).
        settings: :class:`AugmentationSettings` (defaults if None).
        positive: the positive class, by name or index ("nodule").
        split: precomputed ``{"train", "val", "test"}`` indices (default: :func:`split_indices`
            with the settings' fractions and seed).
        progress: optional callable receiving a short message per run.

    Returns:
        A JSON-able dict: ``arms`` (name -> ``precision``/``recall``/``f1``/``accuracy`` as
        ``{"mean", "std"}`` in [0, 1], ``synthetic`` count, ``epochs_run``, ``runs`` per seed),
        ``split`` (indices and counts), ``positive``, ``seeds``, ``settings``, ``seconds``.
    """
    settings = settings or AugmentationSettings()
    with torch_threads(settings.threads, flush_denormal=False):
        return _run_arms(real_dataset, generators, seeds, settings, positive, split, progress or (lambda msg: None))


def _run_arms(real_dataset, generators, seeds, settings: AugmentationSettings, positive, split, say) -> dict:
    if real_dataset.labels is None or len(real_dataset.class_names) != 2:
        raise ValueError("the augmentation task needs a dataset with exactly two classes in labels.csv")
    names = list(real_dataset.class_names)
    if isinstance(positive, str) and not positive.isdigit():
        if positive not in names:
            raise ValueError(f"positive class {positive!r} is not one of {names}")
        pos = names.index(positive)
    else:
        pos = int(positive)
    labels = np.asarray(real_dataset.labels)
    split = split or split_indices(labels, settings.split, settings.split_seed)
    t0 = time.perf_counter()

    def xy(idx):
        return _stack(real_dataset, idx), torch.tensor((labels[idx] == pos).astype(np.float32))

    train_x, train_y = xy(split["train"])
    val_x, val_y = xy(split["val"])
    test_x, test_y = xy(split["test"])
    n_train = len(split["train"])
    n_syn = int(round(n_train * settings.synthetic_fraction / (1 - settings.synthetic_fraction)))
    counts = {k: n_syn // 2 + (1 if k < n_syn % 2 else 0) for k in range(2)}

    arms: dict[str, dict] = {}
    for name, sampler in generators.items():
        if sampler is None:
            x, y, n = train_x, train_y, 0
        else:
            if sampler.cfg.size != real_dataset.size:
                raise ValueError(f"generator {name!r} makes {sampler.cfg.size}^3 volumes, the data is "
                                 f"{real_dataset.size}^3")
            gen_names = list(sampler.class_names) or names
            if gen_names != names:
                raise ValueError(f"generator {name!r} has classes {gen_names}, the data {names}")
            say(f"{name}: sampling {n_syn} synthetic volumes")
            sx, sl = synthesise(sampler, counts, settings.synthetic_seed)
            x = torch.cat([train_x, sx])
            y = torch.cat([train_y, (sl == pos).float()])
            n = len(sx)
        runs = []
        for seed in seeds:
            t = time.perf_counter()
            model, hist = train_classifier(x, y, val_x, val_y, int(seed), settings)
            _, logits = _loss_and_logits(model, test_x, test_y, settings.batch_size)
            pred = (torch.sigmoid(logits) >= settings.threshold).numpy()
            scores = binary_scores(pred, test_y.numpy())
            runs.append({"seed": int(seed), **scores, **{k: v for k, v in hist.items() if k != "history"},
                         "val_losses": [h["val_loss"] for h in hist["history"]],
                         "seconds": round(time.perf_counter() - t, 2)})
            say(f"{name} seed {seed}: F1 {scores['f1']:.3f}, stopped after {hist['epochs_run']} epochs "
                f"(best {hist['best_epoch']})")
        arms[name] = {
            "synthetic": n,
            **{k: _mean_std([r[k] for r in runs]) for k in ("precision", "recall", "f1", "accuracy")},
            "epochs_run": _mean_std([r["epochs_run"] for r in runs]),
            "best_epoch": _mean_std([r["best_epoch"] for r in runs]),
            "runs": runs,
        }
    return {
        "task": "nodule / no-nodule classification on held-out real volumes",
        "positive": names[pos],
        "class_names": names,
        "size": int(real_dataset.size),
        "voxel_mm": float(real_dataset.spacing[0]),
        "split": {**{k: [int(i) for i in v] for k, v in split.items()},
                  "counts": {k: len(v) for k, v in split.items()},
                  "positives": {k: int(np.sum(labels[v] == pos)) for k, v in split.items()}},
        "seeds": [int(s) for s in seeds],
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
        "arms": arms,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def _pct(entry: dict) -> str:
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"


def augmentation_markdown(result: dict, paper_f1: Mapping[str, str] | None = None) -> str:
    """A Markdown table of a :func:`run_augmentation` result (percent, mean ± std over seeds)."""
    head = "| training data | real | synthetic | precision (%) | recall (%) | F1 (%) | epochs run (best) |"
    sep = "|---|---|---|---|---|---|---|"
    if paper_f1:
        head += " paper F1 (%) |"
        sep += "---|"
    lines = [head, sep]
    n_real = result["split"]["counts"]["train"]
    for name, arm in result["arms"].items():
        row = (f"| {name} | {n_real} | {arm['synthetic']} | {_pct(arm['precision'])} | {_pct(arm['recall'])} "
               f"| {_pct(arm['f1'])} | {arm['epochs_run']['mean']:.1f} ({arm['best_epoch']['mean']:.1f}) |")
        if paper_f1:
            row += f" {paper_f1.get(name, '')} |"
        lines.append(row)
    c, p = result["split"]["counts"], result["split"]["positives"]
    s = result["settings"]
    lines += ["", f"Real volumes split (stratified, seed {s['split_seed']}): train {c['train']} "
                  f"({p['train']} {result['positive']}), validation {c['val']} ({p['val']}), test {c['test']} "
                  f"({p['test']}). {len(result['seeds'])} classifier seeds; early stopping on the validation "
                  f"loss (patience {s['patience']}, at most {s['max_epochs']} epochs), best weights kept; "
                  f"positive class: {result['positive']}; std over seeds (ddof=1)."]
    return "\n".join(lines) + "\n"


def run_downstream(data: str, checkpoints: Sequence[str] = (), size: int = 64, demo_count: int | None = None,
                   seeds: Sequence[int] = tuple(range(10)), settings: AugmentationSettings | None = None,
                   positive: str | int = "nodule", device: str = "auto",
                   progress: Callable[[str], None] | None = None) -> dict:
    """`crfgan downstream`: the augmentation task on `data` with generators from checkpoint paths.

    A checkpoint is `NAME=PATH` or a path (named after its run folder). Generators
    trained on more volumes than the training split may have seen validation or test
    volumes: that is said through `progress`.
    """
    from ..data import VolumeDataset
    from ..sampling import Sampler

    say = progress or (lambda msg: None)
    settings = settings or AugmentationSettings()
    generators: dict = {"real only": None}
    for spec in checkpoints:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).parent.name or spec, spec
        generators[f"+ {name}"] = Sampler(path, device=device)
    sizes = {g.cfg.size for g in generators.values() if g is not None}
    if len(sizes) > 1:
        raise ValueError(f"the checkpoints make volumes of different sizes: {sorted(sizes)}")
    data_set = VolumeDataset(data, size=sizes.pop() if sizes else size, conditional=True, demo_count=demo_count)
    split = split_indices(data_set.labels, settings.split, settings.split_seed)
    for name, g in generators.items():
        if g is not None and g.checkpoint.data.get("count", 0) > len(split["train"]):
            say(f"warning: {name[2:]} was trained on {g.checkpoint.data['count']} volumes, more than the "
                f"{len(split['train'])} of the training split: it may have seen validation or test volumes "
                "(crfgan paper-tables trains on the split)")
    return run_augmentation(data_set, generators, seeds=seeds, settings=settings, positive=positive, split=split,
                            progress=say)
