"""The trainer: one generator for both systems, yielding a typed report per step.

It never prints; the CLI shows the reports with tqdm and napari with a progress bar
and plots. Closing the generator (`gen.close()`) stops training between two steps
and writes a checkpoint at the last finished iteration.

Reproducibility: every random draw of iteration `it` (batch, slab, latent codes)
comes from torch's global RNG reseeded from (seed, it). A resumed run therefore
draws exactly what the uninterrupted run would have drawn; on CPU it ends bitwise
identical to it.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

import numpy as np
import torch

from .. import distributed
from ..data import DatasetError, VolumeDataset, find_split, open_dataset, to_modality_units
from ..model import build_system, get_config, system_spec
from ..runtime import (Checkpoint, CheckpointError, PeakMemory, load_checkpoint, process_device, save_checkpoint,
                       torch_threads)
from ..runtime.checkpoint import check_weights, load_optimizers
from .identity import data_digest, recorded_identity
from .lifecycle import decide_start
from .options import TrainOptions, TrainReport, run_identity


class TrainingError(RuntimeError):
    """Training cannot go on; the message is one sentence for the user."""


def prepare_dataset(options: TrainOptions, progress: Callable[[int, int], None] | None = None) -> VolumeDataset:
    """Load (and cache) the training volumes; raises DatasetError before any training. Under torchrun rank 0
    prepares them (and fills the cache) while the other ranks wait, then they read the cache."""
    if not distributed.active():
        return _load_dataset(options, progress)
    if not distributed.is_main():
        distributed.barrier()
        return _load_dataset(options, None)
    dataset = _load_dataset(options, progress)
    distributed.barrier()
    return dataset


def _load_dataset(options: TrainOptions, progress: Callable[[int, int], None] | None) -> VolumeDataset:
    size = get_config(options.preset).size
    kw = dict(modality=options.modality, conditional=options.conditional, progress=progress,
              **({"masks": options.masks} if options.masks else {}))
    split = find_split(options.split, options.out)
    if split is None:
        return open_dataset(options.data, size=size, demo_count=options.demo_count, **kw)
    if not split.matches(options.data, options.demo_count):
        raise DatasetError(f"{split.path} splits {split.source} (demo count {split.demo_count}), not "
                           f"{options.data}; train with --split none or make a split of this data")
    return split.dataset("train", size, **kw)


def _config_for(options: TrainOptions, dataset: VolumeDataset):
    masks = {"mask_classes": dataset.mask_classes} if options.masks else {}  # the labels the masks hold
    return get_config(options.preset, num_classes=dataset.num_classes if options.conditional else 0,
                      step=options.step, **options.config_fields(), **masks)


def _iteration_seed(seed: int, iteration: int) -> int:
    return (seed * 1_000_003 + iteration) % (2**63)


def train(options: TrainOptions, dataset: VolumeDataset | None = None) -> Iterator[TrainReport]:
    """Train `options.model` and yield a TrainReport after every iteration.

    Starts, resumes or refuses as `lifecycle.decide_start` says, before any data is read.
    """
    options.validate()
    device = process_device(options.device)
    start_plan = decide_start(options)
    if dataset is None:
        dataset = prepare_dataset(options)
    if options.conditional and dataset.num_classes < 2:
        raise TrainingError("conditional training needs a labels.csv with at least two classes")
    cfg = _config_for(options, dataset)
    with torch_threads(options.threads, flush_denormal=device.type == "cpu"):
        yield from _train_loop(options, dataset, cfg, device, start_plan.resume)


def _train_loop(options: TrainOptions, dataset: VolumeDataset, cfg, device: torch.device,
                resume: bool) -> Iterator[TrainReport]:
    memory = PeakMemory(device)
    main, world = distributed.is_main(), distributed.world_size()
    rows = options.batch_size // world  # this rank's rows of the global batch
    torch.manual_seed(options.seed)  # the initial weights
    system = build_system(options.model, cfg).to(device)
    system.set_precision(options.precision)
    system.set_activation_checkpointing(options.checkpoint_activations)
    optimizers = system.make_optimizers()
    ckpt_path = options.checkpoint_path
    start = 0
    data_record = {**dataset.summary(), "digest": data_digest(dataset)}
    options_record = {**options.record(), "world_size": world}
    if resume:
        ckpt = load_checkpoint(ckpt_path, model=options.model, preset=options.preset, config=cfg)
        check_weights(system.state_dict(), ckpt.state, f"{options.model} {options.preset}")
        system.load_state_dict(ckpt.state)
        load_optimizers(optimizers, ckpt.optimizers, ckpt_path)
        start = ckpt.iteration
        options_record["history"] = _history(options, ckpt, data_record["digest"])
    if world > 1:
        system.distribute()  # after loading: every rank starts from the same weights
    system.train()

    labels = torch.tensor(dataset.labels, dtype=torch.long) if cfg.num_classes else None
    preview_in = system.preview_input(options.seed, dataset[0])
    loss_labels = system_spec(options.model).loss_labels
    metrics: dict[str, float] = {}

    def save(iteration: int) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in system.parameters()):
            raise TrainingError(f"the weights became non-finite by iteration {iteration}; the last good "
                                f"checkpoint (iteration {saved_at if saved_at >= 0 else 'none'}) is kept")
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        try:
            save_checkpoint(ckpt_path, Checkpoint(
                model=options.model, preset=options.preset, config=cfg, iteration=iteration,
                state=system.state_dict(),
                optimizers={k: o.state_dict() for k, o in optimizers.items()},
                rng=rng, options=options_record, data=data_record, metrics=metrics,
            ))
        except OSError as e:
            kept = f"iteration {saved_at}" if saved_at >= 0 else "none yet"
            raise TrainingError(f"cannot write the checkpoint {ckpt_path} ({e.strerror or e}); training stopped "
                                f"at iteration {iteration}, the last checkpoint ({kept}) is kept") from None

    done = start
    saved_at = start if resume else -1
    t0 = time.perf_counter()
    try:
        for it in range(start, options.iterations):
            torch.manual_seed(_iteration_seed(options.seed, it))
            idx = distributed.sample_rows(lambda n: torch.randint(0, len(dataset), (n,)), rows)
            real = torch.stack([dataset[int(i)] for i in idx]).to(device)
            batch_labels = labels[idx].to(device) if labels is not None else None
            try:
                losses = distributed.mean_over_ranks(system.train_step(real, batch_labels, it, optimizers))
            except torch.OutOfMemoryError:
                raise TrainingError(
                    f"out of memory on {device} at batch size {options.batch_size} with preset "
                    f"{options.preset}; try a smaller batch size or preset (last checkpoint kept)"
                ) from None
            bad = [k for k, v in losses.items() if not np.isfinite(v)]
            if bad:
                named = [k for k in bad if k in loss_labels] or bad  # the losses, not every diagnostic
                kept = f"iteration {saved_at}" if saved_at >= 0 else "none: diverged before the first save"
                raise TrainingError(
                    f"the losses diverged at iteration {it + 1} ({', '.join(f'{k}={losses[k]}' for k in named)}); "
                    f"stopped without saving, the last good checkpoint ({kept}) is kept; try a lower learning "
                    "rate or another recipe")
            done = it + 1
            rate = (done - start) / max(time.perf_counter() - t0, 1e-9)
            metrics = {"iters_per_s": rate, "peak_memory_mb": memory.peak_mb()}
            saved = done % options.checkpoint_every == 0 or done == options.iterations
            if saved:
                if main:  # every rank holds the same weights; one writes them
                    save(done)
                saved_at = done
            preview = None
            if main and options.preview_every and (done % options.preview_every == 0 or done == options.iterations):
                preview = _preview(system, preview_in, dataset.modality)
            yield TrainReport(
                iteration=done, iterations=options.iterations, losses=losses,
                iters_per_s=rate, peak_memory_mb=metrics["peak_memory_mb"],
                eta_s=(options.iterations - done) / rate, device=str(device),
                checkpoint_path=str(ckpt_path), saved=saved, preview=preview,
            )
    except GeneratorExit:
        # Stopped by the caller between two steps: keep what was trained.
        if saved_at != done and main:
            save(done)
        raise
    finally:
        system = optimizers = None  # drop the last references so empty_cache can free GPU memory
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _history(options: TrainOptions, ckpt: Checkpoint, digest: str) -> list[dict]:
    """The checkpoint's fine-tune history, with its own identity added when this resume changes it.

    Without --fine-tune, decide_start already refused other options; other volumes under the same
    names are caught here, by their digest."""
    history = list(ckpt.options.get("history") or [])
    before = {**recorded_identity(ckpt.options), "digest": ckpt.data.get("digest")}
    now = {**run_identity(options), "digest": digest}
    changed = [k for k in now if before.get(k) is not None and before[k] != now[k]]
    if changed and not options.fine_tune:
        raise CheckpointError(f"the volumes of {options.data} changed since {options.checkpoint_path} was trained on "
                              "them (their content digest differs); resume on the same data, or pass --fine-tune")
    if changed:
        history.append({"until_iteration": ckpt.iteration, **before})
    return history


def _preview(system, z: torch.Tensor, modality: str) -> np.ndarray:
    volume = system.generate(z)[0, 0].cpu().numpy()  # the sampler's decoder, one pass
    return to_modality_units(volume, modality)
