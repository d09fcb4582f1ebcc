"""The augmentation task (CRF-GAN paper, Table 5): does synthetic data help a classifier?

A classifier learns to tell volumes with a lung nodule from volumes without
(``demo-chest``: ``nodule`` / ``no-nodule``; any folder with a two-class
``labels.csv`` works): a fixed bright-blob filter (:class:`BlobEnhance`) followed by
a small learned 3D CNN (:class:`NoduleClassifier`). It is trained in several *arms*:

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

Class fidelity (per generator arm): the real-only classifiers, one per seed, label
the arm's synthetic volumes; the share they put in the class each volume was
generated for (:func:`class_fidelity`). The real-only classifiers' test accuracy
(``real_only_accuracy``) is the reference: a generator whose classes look like the
real ones scores about that. :func:`run_augmentation` runs one split;
:func:`combine_augmentation` merges the results of several (mean, std over all
runs, and the std of the per-split means).

The generators must not have seen the validation or test volumes: train them on
:func:`split_indices`' training part (``crfgan paper-tables`` does; see
:func:`write_split_folder`).
"""
from __future__ import annotations

import math
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

from ..data.split import split_indices  # one split function for the package (re-exported)
from ..runtime import torch_threads

__all__ = ["AugmentationSettings", "BlobEnhance", "NoduleClassifier", "EarlyStopping", "split_indices",
           "write_split_folder", "synthesise", "train_classifier", "binary_scores", "predict", "class_fidelity",
           "run_augmentation", "combine_augmentation", "run_downstream", "augmentation_markdown"]

@dataclass
class AugmentationSettings:
    """Classifier training settings (the same for every arm and seed)."""

    max_epochs: int = 50
    patience: int = 6  # epochs without a lower validation loss before stopping
    # 4 and 3e-3 (were 8 and 1e-3): with 40 training volumes, 5 steps an epoch were too few to leave chance
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 8  # channels of the classifier's two learned conv layers
    blob_sigma: float = 1.0  # scale (voxels) of the classifier's fixed blob filter (BlobEnhance)
    flip: bool = True  # random flips of training volumes along each axis
    synthetic_fraction: float = 0.5  # share of synthetic volumes in the augmented training set
    split: tuple[float, float, float] = (0.5, 0.25, 0.25)  # train / val / test, per class
    split_seed: int = 0
    synthetic_seed: int = 100_000  # first latent seed of the synthetic volumes
    threshold: float = 0.5  # on the sigmoid output
    threads: int | None = None  # torch CPU threads (None: leave as is)


# ---------------------------------------------------------------------------- model

def _gaussian_kernels(sigma: float) -> torch.Tensor:
    """1D Gaussian and its first and second derivatives, [3, 2r + 1] with r = ceil(3 sigma)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    g1 = -t / sigma ** 2 * g
    g2 = (t ** 2 / sigma ** 4 - 1 / sigma ** 2) * g
    return torch.stack([g, g1, g2 - g2.mean()])  # second derivative: no response to a constant


def _filter_axis(x: torch.Tensor, kernel: torch.Tensor, axis: int) -> torch.Tensor:
    """`x` filtered along `axis` by the odd-length 1D `kernel`, border voxels repeated.

    Shifted sums: a 7-tap kernel on a one-channel volume is several times faster this
    way than through conv3d on the CPU.
    """
    n, r = x.shape[axis], len(kernel) // 2
    padded = x.index_select(axis, torch.arange(-r, n + r, device=x.device).clamp(0, n - 1))
    out = kernel[0] * padded.narrow(axis, 0, n)
    for t in range(1, len(kernel)):
        out = out + kernel[t] * padded.narrow(axis, t, n)
    return out


def _largest_eigenvalue(a11, a22, a33, a12, a13, a23) -> torch.Tensor:
    """Largest eigenvalue of symmetric 3x3 matrices given elementwise (closed form, no batched eigh)."""
    q = (a11 + a22 + a33) / 3
    b11, b22, b33 = a11 - q, a22 - q, a33 - q
    p = torch.sqrt((b11 ** 2 + b22 ** 2 + b33 ** 2 + 2 * (a12 ** 2 + a13 ** 2 + a23 ** 2)) / 6).clamp_min(1e-12)
    det = (b11 * (b22 * b33 - a23 ** 2) - a12 * (a12 * b33 - a23 * a13) + a13 * (a12 * a23 - b22 * a13)) / p ** 3
    phi = torch.acos((det / 2).clamp(-1.0, 1.0)) / 3
    return q + 2 * p * torch.cos(phi)


class BlobEnhance(nn.Module):
    """A fixed (not learned) bright-blob filter: the classifier's first stage.

    For each voxel, the Hessian of the volume smoothed at scale `sigma` (voxels); the
    response is ``sigma^2 * max(0, -largest eigenvalue)``: high only where the intensity
    curves down in every direction, at a ball about ``2 sqrt(3) sigma`` voxels across,
    zero along a vessel (flat along its axis), an edge or a plate. Values above
    `ceiling` (model units; 0.4 is ~110 HU in the CT window) are clipped first, so
    bone reads as soft tissue. Then max pooling by `pool`, which keeps a blob's peak.

    Why fixed: from 40 training volumes a CNN at 64^3 memorises them (by anatomy) long
    before it finds 2-5 voxel nodules among vessels of about the same brightness; the
    filter hands it the one cue that tells them apart (shape), and flips commute with it,
    so it is computed once per volume (:meth:`all`), not per epoch.
    """

    def __init__(self, sigma: float = 1.0, ceiling: float = 0.4, pool: int = 2) -> None:
        super().__init__()
        if sigma <= 0:
            raise ValueError("sigma must be positive")
        self.sigma, self.ceiling, self.pool = float(sigma), float(ceiling), int(pool)
        self.register_buffer("kernels", _gaussian_kernels(self.sigma), persistent=False)

    @property
    def key(self) -> tuple:
        return self.sigma, self.ceiling, self.pool

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, D, H, W] volumes in model units -> [N, 1, D/pool, H/pool, W/pool] blob responses."""
        g, g1, g2 = self.kernels
        v = x[:, 0].clamp(max=self.ceiling)
        along_w = [_filter_axis(v, k, 3) for k in (g, g1, g2)]  # 0th, 1st, 2nd derivative along W

        def dh(t, k):
            return _filter_axis(t, k, 2)

        def dd(t, k):
            return _filter_axis(t, k, 1)

        w0h0 = dh(along_w[0], g)
        w1h0 = dh(along_w[1], g)
        h_dd, h_hh, h_ww = dd(w0h0, g2), dd(dh(along_w[0], g2), g), dd(dh(along_w[2], g), g)
        h_dh, h_dw, h_hw = dd(dh(along_w[0], g1), g1), dd(w1h0, g1), dd(dh(along_w[1], g1), g)
        response = F.relu(-_largest_eigenvalue(h_dd, h_hh, h_ww, h_dh, h_dw, h_hw)) * self.sigma ** 2
        response = response[:, None]
        return F.max_pool3d(response, self.pool) if self.pool > 1 else response

    def all(self, x: torch.Tensor, batch: int = 8) -> torch.Tensor:
        """:meth:`forward` in chunks of `batch` volumes (bounded memory)."""
        if not len(x):
            return x.new_empty((0, 1, *(n // self.pool for n in x.shape[2:])))
        return torch.cat([self(x[i:i + batch]) for i in range(0, len(x), batch)])


class NoduleClassifier(nn.Module):
    """Nodule / no-nodule from a volume: the fixed :class:`BlobEnhance` filter, then a small
    learned CNN on its response map: a 1x1x1 conv (`width` channels), max pooling by 2, a
    3x3x3 conv, global max pooling, one logit. At 64^3 the learned part runs at 32^3 and
    16^3 voxels and sees about 50 mm around each voxel: it learns which blob responses
    are nodules (strong, isolated) rather than vessel branchings or borders.

    Global max (no mean): a nodule is one local event, and a mean over the whole volume
    would let the classifier tell training volumes apart by their anatomy instead.
    """

    #: scales the blob response (a nodule's is ~0.1-0.3) to a few units; at 10 about a third
    #: of the seeds stayed stuck at chance within 50 epochs
    GAIN = 30.0

    def __init__(self, width: int = 8, sigma: float = 1.0) -> None:
        super().__init__()
        self.enhance = BlobEnhance(sigma)
        self.mix = nn.Conv3d(1, width, 1)
        self.conv = nn.Conv3d(width, width, 3, padding=1)
        self.fc = nn.Linear(width, 1)

    def head(self, response: torch.Tensor) -> torch.Tensor:
        """Logits from :class:`BlobEnhance` responses (the learned part)."""
        h = F.max_pool3d(F.leaky_relu(self.mix(response * self.GAIN), 0.1), 2)
        h = F.leaky_relu(self.conv(h), 0.1)
        return self.fc(h.amax(dim=(2, 3, 4)))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.enhance(x))


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
def _loss_and_logits(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     batch: int) -> tuple[float, torch.Tensor]:
    logits = torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])
    return float(F.binary_cross_entropy_with_logits(logits, y)), logits


def train_classifier(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                     seed: int, settings: AugmentationSettings, enhanced: bool = False) -> tuple[nn.Module, dict]:
    """Train one classifier with early stopping; returns (model with the best weights, history).

    The volumes go through the fixed :class:`BlobEnhance` once, before the first epoch;
    ``enhanced=True`` says `train_x` and `val_x` are its output already (as
    :func:`run_augmentation` passes them, computed once for all seeds). The returned
    model takes volumes.
    """
    torch.manual_seed(seed)
    model = NoduleClassifier(settings.width, settings.blob_sigma)
    if not enhanced:
        train_x, val_x = model.enhance.all(train_x), model.enhance.all(val_x)
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
            if settings.flip:  # label-preserving: independent flips along D, H and W (they commute with the filter)
                for axis in (2, 3, 4):
                    flip = torch.rand(len(idx), generator=gen) < 0.5
                    x = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(axis), x)
            loss = F.binary_cross_entropy_with_logits(model.head(x), y, pos_weight=pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        val_loss, _ = _loss_and_logits(model.head, val_x, val_y, settings.batch_size)
        history.append({"epoch": epoch, "train_loss": total / len(train_x), "val_loss": val_loss})
        if stopper.step(epoch, val_loss, model):
            stopped = True
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    model.eval()
    return model, {"epochs_run": epoch, "best_epoch": stopper.best_epoch, "best_val_loss": stopper.best,
                   "early_stopped": stopped, "history": history}


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 8, threshold: float = 0.5,
            enhanced: bool = False) -> np.ndarray:
    """0/1 predictions (1: the positive class) of `model` for volumes `x` [N, 1, S, S, S].

    ``enhanced=True``: `x` is a :class:`NoduleClassifier`'s :class:`BlobEnhance` output already.
    """
    model.eval()
    fn = model.head if enhanced else model
    logits = torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)]) if len(x) else torch.empty(0)
    return (torch.sigmoid(logits) >= threshold).numpy().astype(np.int64)


def class_fidelity(classifiers: nn.Module | Sequence[nn.Module], samples, labels: torch.Tensor | None = None,
                   positive: int = 1, counts: Mapping[int, int] | None = None, first_seed: int = 100_000,
                   batch: int = 8, threshold: float = 0.5, class_names: Sequence[str] | None = None) -> dict:
    """How often classifiers trained on real volumes recognise the class a synthetic volume was generated for.

    A conditional generator that ignores its label, or draws the wrong class, scores
    near 50% (balanced classes) or below, however realistic its volumes look; real
    volumes score the classifiers' own accuracy, which bounds what a generator can reach.

    Args:
        classifiers: one model or several (e.g. each seed's real-only classifier).
        samples: volumes [N, 1, S, S, S] with their class indices in `labels`, or a conditional
            :class:`~napari_crfgan.sampling.Sampler` (then `counts` volumes per class are drawn
            with :func:`synthesise` from `first_seed`).
        labels: the class each volume was generated for (dataset class indices).
        positive: the class index the classifiers' positive output stands for.
        class_names: names for the per-class accuracies (default: the indices).

    Returns:
        ``{"mean", "std"}`` of the accuracy over classifiers (std ddof=1), ``runs`` (one accuracy
        per classifier), ``per_class`` (class -> mean accuracy over classifiers on its volumes) and
        ``count`` (volumes per class).
    """
    if isinstance(samples, torch.Tensor):
        if labels is None:
            raise ValueError("class_fidelity needs the labels the volumes were generated for")
        x, lab = samples, torch.as_tensor(labels).long()
    else:
        if counts is None:
            raise ValueError("class_fidelity needs `counts` (volumes per class) to sample a generator")
        x, lab = synthesise(samples, counts, first_seed)
    if len(x) != len(lab) or len(x) == 0:
        raise ValueError(f"class_fidelity needs as many labels as volumes (at least one), got {len(x)} "
                         f"volumes and {len(lab)} labels")
    models = [classifiers] if isinstance(classifiers, nn.Module) else list(classifiers)
    if not models:
        raise ValueError("class_fidelity needs at least one classifier")
    target = (lab.numpy() == int(positive)).astype(np.int64)
    classes = sorted(set(lab.tolist()))
    names = {k: (str(class_names[k]) if class_names is not None else str(k)) for k in classes}
    runs, per_class = [], {names[k]: [] for k in classes}
    responses: dict[tuple, torch.Tensor] = {}  # the fixed filter's output, once for all classifiers that share it
    for model in models:
        if isinstance(model, NoduleClassifier):
            key = model.enhance.key
            if key not in responses:
                responses[key] = model.enhance.all(x, batch)
            hit = predict(model, responses[key], batch, threshold, enhanced=True) == target
        else:
            hit = predict(model, x, batch, threshold) == target
        runs.append(float(hit.mean()))
        for k in classes:
            per_class[names[k]].append(float(hit[lab.numpy() == k].mean()))
    return {**_mean_std(runs), "runs": runs, "per_class": {k: float(np.mean(v)) for k, v in per_class.items()},
            "count": {names[k]: int((lab == k).sum()) for k in classes}}


def run_augmentation(real_dataset, generators: Mapping[str, object | None], seeds: Sequence[int] = tuple(range(10)),
                     settings: AugmentationSettings | None = None, positive: str | int = "nodule",
                     split: dict[str, list[int]] | None = None,
                     progress: Callable[[str], None] | None = None) -> dict:
    """Train the classifier arms over `seeds` and score them on the held-out real test volumes.

    One split of the real volumes; run it per split and merge with :func:`combine_augmentation`.

    Args:
        real_dataset: a labelled :class:`~napari_crfgan.data.VolumeDataset` (two classes).
        generators: arm name -> conditional :class:`~napari_crfgan.sampling.Sampler`, a sequence of
            them (one per generator training seed: each adds its own synthetic volumes to the real
            ones, and the arm's runs are every generator x classifier seed), or None for the
            real-only arm, e.g. ``{"real only": None, "CRF-GAN": [s1, s2, s3], "HA-GAN": s4}``.
            The real-only classifiers are trained once, whatever the number of generators.
        seeds: classifier seeds (the paper uses 10).
        settings: :class:`AugmentationSettings` (defaults if None).
        positive: the positive class, by name or index ("nodule").
        split: precomputed ``{"train", "val", "test"}`` indices (default: :func:`split_indices`
            with the settings' fractions and seed).
        progress: optional callable receiving a short message per run.

    Returns:
        A JSON-able dict: ``arms`` (name -> ``precision``/``recall``/``f1``/``accuracy`` as
        ``{"mean", "std"}`` in [0, 1], ``synthetic`` count (per generator), ``epochs_run``, ``runs``
        (one per generator and classifier seed, with ``generator`` its index where the arm has generators);
        generator arms also ``class_fidelity``: :func:`class_fidelity` of the real-only
        classifiers, one per seed, on each of the arm's generators' synthetic volumes; ``generators``: how many),
        ``real_only_accuracy``
        (those classifiers' test accuracy, ``{"mean", "std", "runs"}``), ``split`` (indices and counts),
        ``positive``, ``seeds``, ``settings``, ``seconds``. Without a real-only arm (None) in
        `generators`, the real-only classifiers are still trained, for class fidelity alone.
    """
    settings = settings or AugmentationSettings()
    with torch_threads(settings.threads, flush_denormal=False):
        return _run_arms(real_dataset, generators, seeds, settings, positive, split, progress or (lambda msg: None))


def _train_arm(name, x, y, val_x, val_y, test_x, test_y, seeds, settings, say) -> tuple[list[dict], list[nn.Module]]:
    runs, models = [], []
    for seed in seeds:
        t = time.perf_counter()
        model, hist = train_classifier(x, y, val_x, val_y, int(seed), settings, enhanced=True)
        pred = predict(model, test_x, settings.batch_size, settings.threshold, enhanced=True)
        scores = binary_scores(pred, test_y.numpy())
        runs.append({"seed": int(seed), **scores, **{k: v for k, v in hist.items() if k != "history"},
                     "val_losses": [h["val_loss"] for h in hist["history"]],
                     "seconds": round(time.perf_counter() - t, 2)})
        models.append(model)
        say(f"{name} seed {seed}: F1 {scores['f1']:.3f}, accuracy {scores['accuracy']:.3f}, stopped after "
            f"{hist['epochs_run']} epochs (best {hist['best_epoch']})")
    return runs, models


def _samplers_of(generator) -> list:
    """An arm's generators: none (real only), one Sampler, or a sequence of them (one per training seed)."""
    if generator is None:
        return []
    return list(generator) if isinstance(generator, (list, tuple)) else [generator]


def _merge_fidelity(results: list[dict]) -> dict:
    """One class-fidelity entry from those of an arm's generators: every (generator, classifier) pair once."""
    if len(results) == 1:
        return results[0]
    runs = [r for res in results for r in res["runs"]]
    return {**_mean_std(runs), "runs": runs,
            "per_class": {c: float(np.mean([res["per_class"][c] for res in results])) for c in results[0]["per_class"]},
            "count": results[0]["count"]}


def _arm_summary(runs: list[dict], n_synthetic: int) -> dict:
    return {
        "synthetic": n_synthetic,
        **{k: _mean_std([r[k] for r in runs]) for k in ("precision", "recall", "f1", "accuracy")},
        "epochs_run": _mean_std([r["epochs_run"] for r in runs]),
        "best_epoch": _mean_std([r["best_epoch"] for r in runs]),
        "runs": runs,
    }


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
    samplers = {name: _samplers_of(g) for name, g in generators.items()}
    for name, sampler in ((n, s) for n, ss in samplers.items() for s in ss):  # fail before any training
        if sampler.cfg.num_classes < 2:
            raise ValueError("the augmentation task needs a class-conditional generator (train with conditional)")
        if sampler.cfg.size != real_dataset.size:
            raise ValueError(f"generator {name!r} makes {sampler.cfg.size}^3 volumes, the data is "
                             f"{real_dataset.size}^3")
        gen_names = list(sampler.class_names) or names
        if gen_names != names:
            raise ValueError(f"generator {name!r} has classes {gen_names}, the data {names}")

    # the classifier's fixed first stage, once per volume rather than once per seed and epoch
    enhance = BlobEnhance(settings.blob_sigma)
    train_f, val_f, test_f = (enhance.all(v) for v in (train_x, val_x, test_x))
    # the real-only arm first: its classifiers (one per seed) also judge every generator's class fidelity
    real_name = next((k for k, v in generators.items() if v is None), None)
    real_runs, real_models = _train_arm(real_name or "real only (for class fidelity)", train_f, train_y, val_f,
                                        val_y, test_f, test_y, seeds, settings, say)
    arms: dict[str, dict] = {}
    for name, group in samplers.items():
        if not group:
            arms[name] = _arm_summary(real_runs, 0)
            continue
        runs, fidelity = [], []
        for g, sampler in enumerate(group):  # each generator (training seed) of the arm, the same classifier seeds
            say(f"{name}: sampling {n_syn} synthetic volumes" + (f" (generator {g})" if len(group) > 1 else ""))
            sx, sl = synthesise(sampler, counts, settings.synthetic_seed)
            arm_runs, _ = _train_arm(name, torch.cat([train_f, enhance.all(sx)]),
                                     torch.cat([train_y, (sl == pos).float()]), val_f, val_y, test_f, test_y, seeds,
                                     settings, say)
            runs += [{**r, "generator": g} for r in arm_runs]
            fidelity.append(class_fidelity(real_models, sx, sl, positive=pos, batch=settings.batch_size,
                                           threshold=settings.threshold, class_names=names))
        arms[name] = _arm_summary(runs, len(sx))
        arms[name]["generators"] = len(group)
        arms[name]["class_fidelity"] = _merge_fidelity(fidelity)
        say(f"{name}: class fidelity {arms[name]['class_fidelity']['mean']:.3f} (real-only classifiers)")
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
        "real_only_accuracy": {**_mean_std([r["accuracy"] for r in real_runs]),
                               "runs": [r["accuracy"] for r in real_runs]},
        "seconds": round(time.perf_counter() - t0, 1),
    }


_SCORES = ("precision", "recall", "f1", "accuracy")


def _split_key(result: dict):
    if "split_seed" in result:  # set by callers that pass their own split (paper-tables)
        return ("seed", result["split_seed"])
    return ("test", tuple(result["split"]["test"]))


def combine_augmentation(results: Sequence[dict]) -> dict:
    """Merge :func:`run_augmentation` results of several splits (and/or generator seeds) into one.

    Every (result, classifier seed) run counts once: each arm's scores, ``class_fidelity``
    and ``real_only_accuracy`` get ``mean`` and ``std`` (ddof=1) over all runs, plus
    ``split_std``: the std (ddof=1) of the per-split means, how much the table moves with the
    choice of the held-out volumes (0 for a single split). Results of the same split (the
    same ``split_seed`` when set, else the same test volumes) form one split. ``runs`` hold
    every run with its ``split`` (index into ``splits``). The output has the keys of a single
    result, so :func:`augmentation_markdown` takes it as is.
    """
    results = list(results)
    if not results:
        raise ValueError("combine_augmentation needs at least one result")
    arm_names = list(results[0]["arms"])
    for r in results[1:]:
        if list(r["arms"]) != arm_names:
            raise ValueError(f"the results have different arms: {arm_names} and {list(r['arms'])}")
    keys = list(dict.fromkeys(_split_key(r) for r in results))
    of = [keys.index(_split_key(r)) for r in results]

    def stats(per_result: list[list[float]]) -> dict:
        values = [v for vs in per_result for v in vs]
        by_split: dict[int, list[float]] = {}
        for i, vs in zip(of, per_result):
            by_split.setdefault(i, []).extend(vs)
        means = [float(np.mean(v)) for v in by_split.values() if v]
        return {**_mean_std(values), "split_std": _mean_std(means)["std"], "n": len(values)}

    arms: dict[str, dict] = {}
    for name in arm_names:
        per = [r["arms"][name] for r in results]
        runs = [{**run, "split": i} for i, a in zip(of, per) for run in a["runs"]]
        arm = {"synthetic": per[0]["synthetic"],
               **{k: stats([[run[k] for run in a["runs"]] for a in per]) for k in _SCORES},
               "epochs_run": stats([[run["epochs_run"] for run in a["runs"]] for a in per]),
               "best_epoch": stats([[run["best_epoch"] for run in a["runs"]] for a in per]),
               "runs": runs}
        if "generators" in per[0]:
            arm["generators"] = per[0]["generators"]
        if all("class_fidelity" in a for a in per):
            arm["class_fidelity"] = stats([a["class_fidelity"]["runs"] for a in per])
            arm["class_fidelity"]["per_class"] = {
                c: float(np.mean([a["class_fidelity"]["per_class"][c] for a in per]))
                for c in per[0]["class_fidelity"]["per_class"]}
        arms[name] = arm
    first = results[0]
    out = {k: v for k, v in first.items() if k not in ("arms", "split", "seconds", "real_only_accuracy")}
    out.update(
        arms=arms,
        split={"counts": first["split"]["counts"], "positives": first["split"]["positives"]},
        splits=[{"key": list(k) if k[0] == "seed" else "test", "test": results[of.index(i)]["split"]["test"]}
                for i, k in enumerate(keys)],
        n_results=len(results),
        seconds=round(sum(r.get("seconds", 0.0) for r in results), 1),
    )
    if all("real_only_accuracy" in r for r in results):
        out["real_only_accuracy"] = stats([r["real_only_accuracy"]["runs"] for r in results])
    return out


def _pct(entry: dict) -> str:
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"


def augmentation_markdown(result: dict, paper_f1: Mapping[str, str] | None = None) -> str:
    """A Markdown table of a :func:`run_augmentation` or :func:`combine_augmentation` result.

    Percent, mean ± std over classifier seeds (over every split and seed of a combined
    result, whose notes add the std of the per-split means). Class fidelity: how often the
    real-only classifiers recognise the class a generator's synthetic volume was made for.
    """
    head = ("| training data | real | synthetic | precision (%) | recall (%) | F1 (%) | accuracy (%) "
            "| class fidelity (%) | epochs run (best) |")
    sep = "|---|---|---|---|---|---|---|---|---|"
    if paper_f1:
        head += " paper F1 (%) |"
        sep += "---|"
    lines = [head, sep]
    n_real = result["split"]["counts"]["train"]
    for name, arm in result["arms"].items():
        fidelity = _pct(arm["class_fidelity"]) if "class_fidelity" in arm else "—"
        row = (f"| {name} | {n_real} | {arm['synthetic']} | {_pct(arm['precision'])} | {_pct(arm['recall'])} "
               f"| {_pct(arm['f1'])} | {_pct(arm['accuracy'])} | {fidelity} "
               f"| {arm['epochs_run']['mean']:.1f} ({arm['best_epoch']['mean']:.1f}) |")
        if paper_f1:
            row += f" {paper_f1.get(name, '')} |"
        lines.append(row)
    c, p = result["split"]["counts"], result["split"]["positives"]
    s = result["settings"]
    splits = result.get("splits")
    if splits is not None:  # combined
        gens = max((a.get("generators", 1) for a in result["arms"].values() if a["synthetic"]), default=1)
        runs = ", ".join(f"{k}: {a['f1']['n']}" for k, a in result["arms"].items())
        how = (f"{len(splits)} stratified splits (each: train {c['train']} ({p['train']} {result['positive']}), "
               f"validation {c['val']} ({p['val']}), test {c['test']} ({p['test']}))"
               + (f" x {gens} generators (training seeds) per system" if gens > 1 else "")
               + f" x {len(result['seeds'])} classifier seeds (runs per arm: {runs})")
        spread = ("std over all runs (ddof=1); the std of the per-split means (F1): "
                  + ", ".join(f"{k} {100 * a['f1']['split_std']:.2f}" for k, a in result["arms"].items()))
    else:
        how = (f"Real volumes split (stratified, seed {s['split_seed']}): train {c['train']} "
               f"({p['train']} {result['positive']}), validation {c['val']} ({p['val']}), test {c['test']} "
               f"({p['test']}). {len(result['seeds'])} classifier seeds")
        spread = "std over seeds (ddof=1)"
    lines += ["", f"{how}; early stopping on the validation loss (patience {s['patience']}, at most "
                  f"{s['max_epochs']} epochs), best weights kept; positive class: {result['positive']}; {spread}."]
    if "real_only_accuracy" in result:
        lines += ["", f"Class fidelity: accuracy of the real-only classifiers (one per seed) on each generator's "
                      f"synthetic volumes, against the class each was generated for (50% = labels ignored). "
                      f"The same classifiers reach {_pct(result['real_only_accuracy'])} % on the real test "
                      "volumes: a faithful generator scores about that, not 100%."]
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
