"""`crfgan`: the command line over the Python API. Argument parsing and printing only.

Errors the user can fix print one line (`crfgan: error: ...`) and exit with 2;
Ctrl-C during training stops after the current step and keeps a checkpoint.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import warnings
from pathlib import Path

DEMO_SOURCES = "demo-brain|demo-chest"


class _Stop:
    """First Ctrl-C asks the trainer to stop cleanly; a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True


def _train_options(args):
    from .training import TrainOptions
    return TrainOptions(
        data=args.data, out=args.out, model=args.model, preset=args.preset, iterations=args.iterations,
        batch_size=args.batch_size, resume=args.resume, device=args.device, seed=args.seed,
        checkpoint_every=args.checkpoint_every, modality=args.modality, conditional=args.conditional,
        precision=args.precision, lr_g=args.lr_g, lr_d=args.lr_d, lr_e=args.lr_e,
        demo_count=args.demo_count, threads=args.threads,
    )


def run_training(options) -> dict:
    """Train with a tqdm bar; returns the last report's figures and the checkpoint path."""
    from tqdm import tqdm

    from .training import prepare_dataset, train

    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars or bars[-1].total != total or done < bars[-1].n:
            if bars:
                bars[-1].close()
            bars.append(tqdm(total=total, desc="preparing data", unit="vol", leave=False))
        bars[-1].n = done
        bars[-1].refresh()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = prepare_dataset(options, progress=progress)
        finally:
            for bar in bars:
                bar.close()
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"data: {len(dataset)} volumes from {options.data} ({dataset.modality}, "
          f"{dataset.spacing[0]:.2f} mm voxels at {dataset.size}^3)", file=sys.stderr)

    stop = _Stop()
    previous = signal.signal(signal.SIGINT, stop)
    gen = train(options, dataset)
    last = None
    try:
        with tqdm(total=options.iterations, desc=f"{options.model} {options.preset}", unit="it") as bar:
            for report in gen:
                if last is None:
                    bar.n = report.iteration - 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in report.losses.items()}, refresh=False)
                last = report
                if stop.requested:
                    gen.close()
                    print(f"stopped at iteration {report.iteration}; checkpoint kept", file=sys.stderr)
                    break
    finally:
        signal.signal(signal.SIGINT, previous)
    checkpoint = str(Path(options.out) / "checkpoint.pt")
    summary = {"checkpoint": checkpoint}
    if last is not None:
        summary.update(iteration=last.iteration, iters_per_s=round(last.iters_per_s, 3),
                       peak_memory_mb=round(last.peak_memory_mb, 1), device=last.device)
    return summary


def cmd_train(args) -> None:
    summary = run_training(_train_options(args))
    print(f"checkpoint: {summary['checkpoint']}")
    if "iteration" in summary:
        print(f"iteration {summary['iteration']}, {summary['iters_per_s']} it/s, "
              f"peak memory {summary['peak_memory_mb']} MB on {summary['device']}")


def cmd_sample(args) -> list[Path]:
    from tqdm import tqdm

    from .sampling import Sampler

    sampler = Sampler(args.checkpoint, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    label = args.label
    paths = []
    if args.interpolate is not None:
        from .data import write_nifti
        walk = sampler.interpolate(args.seed, args.interpolate, steps=args.num, label=label, chunk=args.chunk)
        for i, frame in enumerate(walk):
            paths.append(write_nifti(out / f"walk_{args.seed}_{args.interpolate}_{i:02d}.nii.gz", frame, sampler.spacing))
    else:
        for i in tqdm(range(args.num), desc="sampling", unit="vol"):
            (vol,) = sampler.sample(1, seed=args.seed + i, label=label, chunk=args.chunk)
            paths.append(vol.save(out / f"sample_seed{vol.seed:04d}.nii.gz"))
    print(f"wrote {len(paths)} volumes of {sampler.cfg.size}^3 at {sampler.spacing[0]:.2f} mm to {out}")
    return paths


def cmd_params(args) -> None:
    from .model import build_system, get_config

    system = build_system(args.model, get_config(args.preset))
    counts = system.network_counts()
    generator = sum(v for k, v in counts.items() if k in ("trunk", "head", "low_head"))
    networks = {"generator": generator, **{k: v for k, v in counts.items() if k not in ("trunk", "head", "low_head")}}
    result = {"model": args.model, "preset": args.preset, "networks": networks,
              "generator_parts": {k: counts[k] for k in ("trunk", "head", "low_head") if k in counts},
              "total": sum(counts.values())}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in networks.items():
            print(f"{k:16s} {v:>12,}")
        print(f"{'total':16s} {result['total']:>12,}")


def cmd_bench(args) -> None:
    from .evaluation.bench import bench

    result = bench(args.preset, batch_size=args.batch_size, iterations=args.iterations, device=args.device,
                   repeats=args.repeats, threads=args.threads)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset}, batch {args.batch_size}, {result['device']}")
    for model, r in result["results"].items():
        print(f"{model:7s} params {r['params']:>12,}  peak {r['peak_memory_mb']:>9.1f} MB  {r['iters_per_s']:.3f} it/s")
    print("CRF-GAN / HA-GAN: " + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()))


def cmd_bench_sample(args) -> None:
    from .evaluation.bench import bench_sampling

    r = bench_sampling(args.preset, chunk=args.chunk, threads=args.threads)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.preset} G^H decoding of one volume, {r['device']}")
    for name in ("one_pass", "chunked"):
        print(f"{name:9s} peak {r[name]['peak_memory_mb']:>8.1f} MB  {r[name]['seconds']:.2f} s")
    print(f"chunked / one pass peak memory: {r['peak_memory_ratio']}, max abs difference {r['max_abs_diff']:.2e}")


# A demo name given as --fake draws volumes of its own, never the --real ones: a set
# compared with itself sits below the real-vs-real floor and hides what it should show.
FAKE_DEMO_SEED = 1


def cmd_eval(args) -> None:
    from .evaluation import blur, duplicate, evaluate, slab_seams, to_markdown
    from .evaluation.sources import load_volumes, model_size

    size = model_size(args.fake, model_size(args.real, args.size))
    real, modality = load_volumes(args.real, size, num=args.num_real, modality=args.modality)
    fake, _ = load_volumes(args.fake, size, num=args.num, modality=modality, seed=args.seed, label=args.label,
                           demo_seed=FAKE_DEMO_SEED)
    injected = {
        None: lambda v: v,
        "seams": lambda v: slab_seams(v, period=size // 8, strength=args.strength),
        "blur": lambda v: blur(v, sigma=args.sigma),
        "duplicate": lambda v: duplicate(v, n_distinct=max(1, len(v) // 10)),
    }
    fake = injected[args.inject](fake)
    features = tuple(args.features.split(","))
    medicalnet = next((f for f in features if f.startswith("medicalnet:")), None)
    features = tuple(f for f in features if not f.startswith("medicalnet:"))
    result = evaluate(real, fake, features=features, medicalnet=medicalnet, seeds=tuple(range(args.seeds)),
                      progress=lambda msg: print(msg, file=sys.stderr))
    result.setdefault("meta", {})["sources"] = {"real": args.real, "fake": args.fake, "inject": args.inject,
                                                "size": size}
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(f"# crfgan eval: {args.fake} vs {args.real}\n\n{to_markdown(result)}\n")
    print(json.dumps(result) if args.json else to_markdown(result))


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(out=Path(args.out), iterations=args.iterations, batch_size=args.batch_size,
             num_samples=args.num, device=args.device, seed=args.seed)


def cmd_downstream(args) -> None:
    from .data import VolumeDataset
    from .evaluation.downstream import AugmentationSettings, augmentation_markdown, run_augmentation, split_indices
    from .sampling import Sampler

    generators: dict = {"real only": None}
    for spec in args.checkpoint or []:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec).parent.name or spec, spec
        generators[f"+ {name}"] = Sampler(path, device=args.device)
    sizes = {g.cfg.size for g in generators.values() if g is not None}
    if len(sizes) > 1:
        raise ValueError(f"the checkpoints make volumes of different sizes: {sorted(sizes)}")
    size = sizes.pop() if sizes else args.size
    data = VolumeDataset(args.data, size=size, conditional=True, demo_count=args.demo_count)
    settings = AugmentationSettings(max_epochs=args.max_epochs, patience=args.patience, threads=args.threads)
    split = split_indices(data.labels, settings.split, settings.split_seed)
    for name, g in generators.items():
        if g is not None and g.checkpoint.data.get("count", 0) > len(split["train"]):
            print(f"warning: {name[2:]} was trained on {g.checkpoint.data['count']} volumes, more than the "
                  f"{len(split['train'])} of the training split: it may have seen validation or test volumes "
                  "(crfgan paper-tables trains on the split)", file=sys.stderr)
    result = run_augmentation(data, generators, seeds=range(args.seeds), settings=settings, positive=args.positive,
                              split=split, progress=lambda msg: print(msg, file=sys.stderr))
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(json.dumps(result, indent=1))
    print(json.dumps(result) if args.json else augmentation_markdown(result))


def cmd_paper_tables(args) -> None:
    from .evaluation.paper_tables import command_line, run_paper_tables

    command = command_line(args.budget, args.out, args.work, args.device, args.threads, args.fresh)
    run_paper_tables(args.budget, out=args.out, work=args.work, device=args.device,
                     threads=-1 if args.threads is None else (args.threads or None), fresh=args.fresh,
                     command=command, progress=lambda msg: print(msg, file=sys.stderr))
    print(f"wrote {Path(args.out) / 'results.md'}")


def positive_int(text: str) -> int:
    """argparse type of a count: an error that names the flag instead of a failure later."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from .model import PRESETS, SYSTEMS

    p = argparse.ArgumentParser(prog="crfgan", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train CRF-GAN or HA-GAN on a dataset folder or demo data")
    t.add_argument("--data", required=True, help=f"dataset folder (.nii, .nii.gz, .npy) or {DEMO_SOURCES}")
    t.add_argument("--model", choices=SYSTEMS, default="crfgan")
    t.add_argument("--preset", choices=list(PRESETS), default="small-64")
    t.add_argument("--iterations", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=4)
    t.add_argument("--out", default="runs/crfgan", help="run folder (checkpoint.pt goes here)")
    t.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=250)
    t.add_argument("--modality", choices=["ct", "mri"], default=None, help="preprocessing (default: detect)")
    t.add_argument("--conditional", action="store_true", help="class-conditional on the folder's labels.csv")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast on CUDA")
    t.add_argument("--lr-g", type=float)
    t.add_argument("--lr-d", type=float)
    t.add_argument("--lr-e", type=float)
    t.add_argument("--demo-count", type=int, help="number of demo volumes to generate")
    t.add_argument("--threads", type=int, help="torch CPU threads (1 is much faster when other jobs share the cores)")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write full-resolution NIfTI volumes from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=int, default=4, help="volumes (or interpolation steps)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="samples")
    s.add_argument("--label", help="class index or name, for conditional models")
    s.add_argument("--chunk", type=int, help="decode this many slices at a time to save memory")
    s.add_argument("--interpolate", type=int, metavar="SEED_B", help="latent walk from --seed to SEED_B")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    q = sub.add_parser("params", help="parameter counts per network")
    q.add_argument("--model", choices=SYSTEMS, default="crfgan")
    q.add_argument("--preset", choices=list(PRESETS), default="paper-256")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_params)

    b = sub.add_parser("bench", help="peak memory and speed of both systems in one run")
    b.add_argument("--preset", choices=list(PRESETS), default="paper-64")
    b.add_argument("--batch-size", type=int, default=2)
    b.add_argument("--iterations", type=int, default=5)
    b.add_argument("--repeats", type=int, default=2, help="alternating runs per system (best speed kept)")
    b.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    b.add_argument("--device", default="auto")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    bs = sub.add_parser("bench-sample", help="peak memory of chunked vs one-pass full-volume decoding (CPU)")
    bs.add_argument("--preset", choices=list(PRESETS), default="paper-256")
    bs.add_argument("--chunk", type=int, default=32, help="image slices per chunk")
    bs.add_argument("--threads", type=int)
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=cmd_bench_sample)

    e = sub.add_parser("eval", help="realism, diversity and seam metrics of generated vs real volumes")
    e.add_argument("--real", required=True, help=f"dataset folder or {DEMO_SOURCES}")
    e.add_argument("--fake", required=True, help="folder of generated volumes, a checkpoint, or a demo name "
                   "(its own volumes, drawn independently of --real's)")
    e.add_argument("--num", type=positive_int, help="fake volumes (checkpoints: sampled, default 64; demo sets: default 24)")
    e.add_argument("--num-real", type=positive_int, help="real volumes to use (default: all; demo sets: 24)")
    e.add_argument("--size", type=int, default=64, help="cube side when neither side is a checkpoint")
    e.add_argument("--modality", choices=["ct", "mri"])
    e.add_argument("--label", help="class for conditional checkpoints")
    e.add_argument("--seed", type=int, default=0, help="first latent seed for checkpoints")
    e.add_argument("--features", default="shallow,resnet10",
                   help="comma-separated: shallow, resnet10, medicalnet:PATH (local weights file)")
    e.add_argument("--seeds", type=int, default=3, help="random-feature seeds (mean and std)")
    e.add_argument("--inject", choices=["seams", "blur", "duplicate"],
                   help="corrupt the fake set first (to see each metric react)")
    e.add_argument("--strength", type=float, default=0.3,
                   help="--inject seams: per-slab intensity gain and offset (std) at slab borders")
    e.add_argument("--sigma", type=float, default=1.0, help="--inject blur: Gaussian sigma in voxels")
    e.add_argument("--json", action="store_true")
    e.add_argument("--report", help="also write a Markdown report here")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="train a small CRF-GAN on demo-brain, sample, write NIfTI and a PNG montage")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--iterations", type=int, default=1500)
    d.add_argument("--batch-size", type=int, default=4)
    d.add_argument("--num", type=int, default=4, help="volumes to sample")
    d.add_argument("--device", default="auto")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    ds = sub.add_parser("downstream", help="augmentation task: a nodule classifier on real vs real + synthetic volumes")
    ds.add_argument("--data", default="demo-chest", help="two-class folder with labels.csv, or demo-chest")
    ds.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                    help="conditional generator to augment with (repeatable); the generators should be trained "
                         "on the training split only")
    ds.add_argument("--positive", default="nodule", help="positive class name or index")
    ds.add_argument("--seeds", type=int, default=10, help="classifier seeds per arm")
    ds.add_argument("--max-epochs", type=int, default=50)
    ds.add_argument("--patience", type=int, default=6, help="early stopping on the validation loss")
    ds.add_argument("--size", type=int, default=64, help="cube side without checkpoints")
    ds.add_argument("--demo-count", type=int, help="number of demo volumes")
    ds.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    ds.add_argument("--device", default="auto", help="sampling device")
    ds.add_argument("--json", action="store_true")
    ds.add_argument("--report", help="also write the raw result as JSON here")
    ds.set_defaults(func=cmd_downstream)

    pt = sub.add_parser("paper-tables", help="train both systems and write the paper's five tables to results.md")
    pt.add_argument("--budget", choices=["tiny", "small", "paper"], default="small",
                    help="tiny: tests; small: CPU, under an hour on 2 cores; paper: GPU scale (needs CUDA)")
    pt.add_argument("--out", default="docs", help="folder of results.md (figures in OUT/images)")
    pt.add_argument("--work", default="runs/paper-tables", help="checkpoints and raw JSON (finished runs reused)")
    pt.add_argument("--device", default="cpu", help="training and sampling device")
    pt.add_argument("--threads", type=int, help="torch CPU threads (default: the budget's, 1 for tiny and small; "
                                                "0: torch's default)")
    pt.add_argument("--fresh", action="store_true", help="retrain everything (delete the budget's work folder)")
    pt.set_defaults(func=cmd_paper_tables)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DatasetError
    from .training import CheckpointError, TrainingError
    try:
        args.func(args)
    except (DatasetError, CheckpointError, TrainingError, ValueError, FileNotFoundError, PermissionError) as e:
        print(f"crfgan: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crfgan: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
