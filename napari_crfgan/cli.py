"""`crfgan`: the command line over the Python API. Argument parsing and printing only.

Flags of `train` and `demo` come from their options dataclasses (TrainOptions,
DemoOptions): one source for names, defaults, help and choices. Errors print one line
(`crfgan: error: ...`) and exit with 2, never a traceback (`--debug` shows it); Ctrl-C
or SIGTERM during training stops after the current step and keeps a checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import sys
import typing
import warnings
from pathlib import Path

from .files import check_writable, write_bytes_atomic

DEMO_SOURCES = "demo-brain|demo-chest"


# ---- options dataclasses -> argparse -----------------------------------------------------
def add_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of the dataclass `cls` (fields with metadata cli=False are left out)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
        choices = meta.get("choices")
        kw: dict = {"dest": f.name, "help": meta.get("help"), "default": f.default}
        if kind is bool:  # a flag; --x / --no-x where the default is None ("the recipe's" or "the preset's")
            kw["action"] = argparse.BooleanOptionalAction if f.default is None else "store_true"
        else:
            # every count of the options is at least 1 and a seed fits 64 bits: refused by argparse, naming the flag
            kw["type"] = (seed_int if f.name == "seed" else positive_int) if kind is int else \
                kind if kind is float else str
            kw["choices"] = choices() if callable(choices) else choices
            if "const" in meta:
                kw.update(nargs="?", const=meta["const"])
        if meta.get("required"):
            kw.update(required=True, default=None)
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def options_from(args: argparse.Namespace, cls):
    """An instance of `cls` from the parsed flags (fields without a flag keep their defaults)."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)})


# ---- training with a progress bar ----------------------------------------------------------
class _Stop:
    """First Ctrl-C or SIGTERM (what a cluster scheduler sends before it kills a job) asks the trainer to
    stop cleanly after the current step and keep a checkpoint; a second Ctrl-C interrupts at once. A second
    SIGTERM does not: under torchrun a worker gets one from the agent and one sent to the group."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True


def _prepare(options):
    """The training data with a tqdm bar; warnings (skipped files) printed as one line each."""
    from tqdm import tqdm

    from .training import prepare_dataset

    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars or bars[-1].total != total or done < bars[-1].n:
            if bars:
                bars[-1].close()
            bars.append(tqdm(total=total, desc="preparing data", unit="vol", leave=False))
        bars[-1].n = done
        bars[-1].refresh()

    from . import distributed

    main = distributed.is_main()  # under torchrun rank 0 alone speaks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dataset = prepare_dataset(options, progress=progress if main else None)
        finally:
            for bar in bars:
                bar.close()
    if not main:
        return dataset
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    part = f" (the train list of {dataset.split['path']})" if dataset.split else ""
    masks = f", with masks of {dataset.mask_classes} labels" if getattr(dataset, "mask_classes", 0) else ""
    print(f"data: {len(dataset)} volumes from {options.data}{part} ({dataset.modality}, "
          f"{dataset.spacing[0]:.2f} mm voxels at {dataset.size}^3{masks})", file=sys.stderr)
    return dataset


def _with_progress(options, run):
    """Call `run(on_report, should_stop)` with a tqdm bar over the iterations and Ctrl-C as stop."""
    from tqdm import tqdm

    from . import distributed
    from .model import system_spec

    shown = system_spec(options.model).loss_labels  # the losses; diagnostics stay in the reports
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(total=options.iterations, desc=f"{options.model} {options.preset}", unit="it",
                  disable=not distributed.is_main()) as bar:
            def on_report(report) -> None:
                bar.n = report.iteration
                bar.set_postfix({k: f"{v:.3f}" for k, v in report.losses.items() if k in shown}, refresh=False)
                bar.refresh()

            result = run(on_report, lambda: stop.requested)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


def _print_run(run) -> None:
    from . import distributed

    if not distributed.is_main():
        return
    if run.stopped:
        print(f"stopped at iteration {run.iteration}; checkpoint kept", file=sys.stderr)
    print(f"checkpoint: {run.checkpoint_path}")
    if run.last is not None:
        print(f"iteration {run.iteration}, {run.metrics['iters_per_s']:.3f} it/s, "
              f"peak memory {run.metrics['peak_memory_mb']:.1f} MB on {run.metrics['device']}")


# ---- commands -------------------------------------------------------------------------------
def cmd_train(args) -> None:
    from .runtime import process_device
    from .training import TrainOptions, decide_start, run_training

    options = options_from(args, TrainOptions)
    options.validate()
    process_device(options.device)  # under torchrun: join the process group
    decide_start(options)  # refuse before the data are prepared
    dataset = _prepare(options)
    _print_run(_with_progress(options, lambda on_report, should_stop: run_training(
        options, dataset, on_report=on_report, should_stop=should_stop)))


def cmd_demo(args) -> None:
    from .experiments.demo import DemoOptions, check_demo_folder, ensure_split, run_demo

    options = options_from(args, DemoOptions)
    train_options = options.train_options()
    train_options.validate()
    check_demo_folder(train_options)
    ensure_split(train_options)
    dataset = _prepare(train_options)
    result = _with_progress(train_options, lambda on_report, should_stop: run_demo(
        options, on_report=on_report, should_stop=should_stop, dataset=dataset,
        log=lambda msg: print(msg, file=sys.stderr)))
    if result["run"].stopped:
        print(f"stopped at iteration {result['run'].iteration}; checkpoint kept", file=sys.stderr)


def cmd_sample(args) -> list[Path]:
    from tqdm import tqdm

    from .sampling import Sampler

    if args.interpolate is not None and args.num < 2:
        raise ValueError(f"--num must be at least 2 with --interpolate (the walk's frames), got {args.num}")
    from .training.options import SEED_LIMIT

    last = max(args.seed + args.num - 1, args.interpolate or 0)
    if last >= SEED_LIMIT:
        raise ValueError(f"--seed {args.seed} with --num {args.num} runs past the largest seed, 2^63 - 1")
    check_writable(args.out)
    sampler = Sampler(args.checkpoint, device=args.device)
    if args.interpolate is not None:
        paths = sampler.write_walk(args.out, args.seed, args.interpolate, steps=args.num, label=args.label,
                                   chunk=args.chunk, overwrite=args.overwrite)
    else:
        with tqdm(total=args.num, desc="sampling", unit="vol") as bar:
            paths = sampler.write_samples(args.out, args.num, seed=args.seed, label=args.label, chunk=args.chunk,
                                          progress=lambda done, total: bar.update(done - bar.n),
                                          overwrite=args.overwrite)
    print(f"wrote {len(paths)} volumes of {sampler.cfg.size}^3 at {sampler.spacing[0]:.2f} mm to {args.out}")
    return paths


def cmd_synthesize(args) -> Path:
    from .runtime import torch_threads
    from .synthesis import Synthesizer

    check_writable(Path(args.out).parent)
    with torch_threads(args.threads):
        synthesizer = Synthesizer(args.checkpoint, device=args.device)
        path = synthesizer.write(args.mask, args.out, overwrite=args.overwrite, patch=args.patch,
                                 overlap=args.overlap, seed=args.seed, resample=not args.no_resample)
    print(f"wrote {path} on the grid of {args.mask} ({synthesizer.checkpoint.describe()}, {synthesizer.modality})")
    return path


def cmd_pretrain(args) -> None:
    from .experiments.pretrain import PretrainOptions, run_pretrain

    options = options_from(args, PretrainOptions)
    train_options = options.train_options()
    _with_progress(train_options, lambda on_report, should_stop: run_pretrain(
        options, log=lambda msg: print(msg, file=sys.stderr), on_report=on_report, should_stop=should_stop))


def cmd_params(args) -> None:
    from .model import parameter_summary, system_config
    from .model.flops import network_macs, step_macs

    cfg = system_config(args.model, args.preset, step=args.step)
    result = {"model": args.model, "preset": args.preset, **parameter_summary(args.model, cfg),
              "macs": {"networks": network_macs(args.model, cfg),
                       "step": {"batch": args.batch_size, "total": step_macs(args.model, cfg, args.batch_size),
                                "step": cfg.step, "trunk_upsampling": cfg.trunk_upsampling}}}
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result["networks"].items():
        print(f"{k:16s} {v:>14,} parameters")
    print(f"{'total':16s} {result['total']:>14,} parameters")
    for k, v in result["macs"]["networks"].items():
        print(f"{k:16s} {v / 1e9:>14.3f} GMAC forward (batch 1; head: one training slab)")
    step = result["macs"]["step"]
    print(f"{'training step':16s} {step['total'] / 1e9:>14.3f} GMAC ({step['step']} step, batch {step['batch']}, "
          "forward and backward)")


def cmd_bench(args) -> None:
    if args.compare == "checkpointing":
        return _bench_checkpointing(args)
    if args.compare == "processes":
        return _bench_processes(args)
    from .experiments.bench import bench

    result = bench(args.preset, batch_size=args.batch_size, iterations=args.iterations, device=args.device,
                   repeats=args.repeats, threads=args.threads, step=args.step)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{args.preset} ({result['step']} step), batch {args.batch_size}, {result['device']}: medians of "
          f"{args.repeats} alternating runs of {args.iterations} timed iterations [smallest, largest run]")
    for model, r in result["results"].items():
        lo, hi = r["iters_per_s_range"]
        print(f"{model:13s} params {r['params']:>11,}  peak {r['peak_memory_mb']:>8.1f} MB (static "
              f"{r['static_mb']:.1f}, activations {r['activation_mb']})  {r['iters_per_s']:.3f} it/s "
              f"[{lo:.3f}, {hi:.3f}]")
    for name, q in result["ratios"].items():
        sp, pk = q["speed"], q["peak_memory"] or {}
        print(f"{name}: params {q['params']}, peak memory {pk.get('median')} [{pk.get('min')}, {pk.get('max')}], "
              f"speed {sp['median']} [{sp['min']}, {sp['max']}]")


def _bench_checkpointing(args) -> None:
    from .experiments.bench import bench_checkpointing

    r = bench_checkpointing(args.preset, model=args.model, batch_size=args.batch_size, iterations=args.iterations,
                            device=args.device, repeats=args.repeats, threads=args.threads)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.model} {args.preset}, batch {args.batch_size}, {r['device']}: activation checkpointing, medians of "
          f"{args.repeats} alternating runs of {args.iterations} timed iterations [smallest, largest run]")
    for name, s in r["results"].items():
        lo, hi = s["iters_per_s_range"]
        print(f"{name:8s} peak {s['peak_memory_mb']:>8.1f} MB (static {s['static_mb']:.1f}, activations "
              f"{s['activation_mb']})  {s['iters_per_s']:.3f} it/s [{lo:.3f}, {hi:.3f}]")
    for name, q in r["with / without"].items():
        print(f"with / without {name}: {q['median']} [{q['min']}, {q['max']}]")


def _bench_processes(args) -> None:
    from .experiments.bench_processes import bench_processes

    device = "cpu" if args.device == "auto" and not _cuda() else ("cuda" if args.device == "auto" else args.device)
    r = bench_processes(args.preset, model=args.model, batch_size=args.batch_size, iterations=args.iterations,
                        world_sizes=args.processes, device=device, threads=args.threads, repeats=args.repeats)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.model} {args.preset}, {args.batch_size} volumes per process, {r['machine']}, torchrun + DDP: "
          f"median of {args.iterations} timed iterations, median of {args.repeats} alternating runs")
    for world, s in r["results"].items():
        print(f"{world} process(es) x {s['threads_per_process']} threads: {s['iters_per_s_per_process']:.3f} it/s "
              f"per process, {s['iters_per_s_total']:.3f} it/s and {s['volumes_per_s']:.3f} volumes/s in total "
              f"({s['total_speedup']['median']}x [{s['total_speedup']['min']}, {s['total_speedup']['max']}]), "
              f"peak {s['peak_memory_mb_rank0']:.1f} MB per process")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_bench_sample(args) -> None:
    from .experiments.bench import bench_sampling

    r = bench_sampling(args.preset, chunk=args.chunk, threads=args.threads, one_pass=args.one_pass)
    if args.json:
        print(json.dumps(r))
        return
    print(f"{args.preset} G^H decoding of one volume, {r['device']}, float32 matmul {r['matmul_gflops']} GFLOP/s")
    print(f"peak memory: {r['peak_memory_includes']} (volume {r['volume_mb']:.0f} MB, embedding "
          f"{r['embedding_mb']:.0f} MB)")
    for name in ("one_pass", "chunked"):
        q = r[name]
        floor = f"{q['flops'] / 1e12:.2f} TFLOP, floor {q['flop_floor_s']:.2f} s"
        if "skipped" in q:
            print(f"{name:9s} skipped: {q['skipped']} ({floor})")
            continue
        print(f"{name:9s} peak {q['peak_memory_mb']:>8.1f} MB  {q['seconds']:.2f} s  {floor} ({q['floor_ratio']}x it)")
    if r["max_abs_diff"] is None:
        print("no one-pass volume: max abs difference and peak memory ratio not computed")
    else:
        print(f"chunked / one pass peak memory: {r['peak_memory_ratio']}, max abs difference "
              f"{r['max_abs_diff']:.2e}")


def cmd_split(args) -> None:
    from .data import SplitOptions, make_split, write_split

    o = options_from(args, SplitOptions)
    split = make_split(o.data, (o.train, o.val, o.test), seed=o.seed, demo_count=o.demo_count)
    path = write_split(split, o.out, force=o.force)
    print(f"{split.describe()}\nwrote {path}; crfgan train --out {o.out} trains on the train list")


def cmd_sweep(args) -> None:
    from .experiments.sweep import SweepOptions, run_sweep

    result = run_sweep(options_from(args, SweepOptions), log=lambda msg: print(msg, file=sys.stderr, flush=True))
    for i, (name, entry) in enumerate(result["ranking"], 1):
        m = entry["median"]
        print(f"{i:2d}. {name:24s} mean rank {entry['mean_rank']:.2f}  coverage {m['coverage']:.3f}  "
              f"recall {m['recall']:.3f}  memorised {m['memorised']:.3f}  ({entry['seeds']} seed(s))")


def cmd_eval(args) -> None:
    from .evaluation import to_markdown
    from .experiments.sources import evaluate_sources

    if args.report:
        check_report(args.report, args.overwrite)
    result = evaluate_sources(args.real, args.fake, num=args.num, num_real=args.num_real, size=args.size,
                              modality=args.modality, label=args.label, seed=args.seed, features=args.features,
                              seeds=args.seeds, inject=args.inject, strength=args.strength, sigma=args.sigma,
                              train=args.train, progress=lambda msg: print(msg, file=sys.stderr))
    if args.report:
        write_bytes_atomic(args.report, f"# crfgan eval: {args.fake}\n\n{to_markdown(result)}\n".encode())
    print(json.dumps(result) if args.json else to_markdown(result))


def check_report(path: str, overwrite: bool) -> None:
    """A report path that can be written and replaces nothing unasked, checked before the work."""
    report = Path(path)
    if report.is_dir():
        raise IsADirectoryError(f"--report {path} is a folder; give a file name")
    if report.exists() and not overwrite:
        raise FileExistsError(f"--report {path} exists; pass --overwrite to replace it")
    check_writable(report.parent, "report's folder")


def cmd_downstream(args) -> None:
    from .experiments.downstream import AugmentationSettings, augmentation_markdown, run_downstream

    if args.report:
        check_report(args.report, args.overwrite)
    settings = AugmentationSettings(max_epochs=args.max_epochs, patience=args.patience, threads=args.threads)
    result = run_downstream(args.data, args.checkpoint or [], size=args.size, demo_count=args.demo_count,
                            seeds=range(args.seeds), settings=settings, positive=args.positive, device=args.device,
                            progress=lambda msg: print(msg, file=sys.stderr))
    if args.report:
        write_bytes_atomic(args.report, json.dumps(result, indent=1).encode())
    print(json.dumps(result) if args.json else augmentation_markdown(result))


def cmd_paper_tables(args) -> None:
    from .experiments.paper_tables import command_line, run_paper_tables

    command = command_line(args.budget, args.out, args.work, args.device, args.threads, args.fresh)
    run_paper_tables(args.budget, out=args.out, work=args.work, device=args.device,
                     threads=-1 if args.threads is None else (args.threads or None), fresh=args.fresh,
                     command=command, progress=lambda msg: print(msg, file=sys.stderr))
    print(f"wrote {Path(args.out) / 'results.md'}")


def cmd_mask_eval(args) -> None:
    from .experiments.paper_tables import command_line, run_mask_table

    command = command_line(args.budget, args.out, args.work, args.device, args.threads, False).replace(
        "paper-tables", "mask-eval", 1)
    result = run_mask_table(args.budget, out=args.out, work=args.work, device=args.device,
                            threads=-1 if args.threads is None else (args.threads or None), command=command,
                            progress=lambda msg: print(msg, file=sys.stderr))
    print(result["markdown"])
    print(f"wrote {Path(args.out) / 'results.md'}")


def cmd_validate_artefacts(args) -> None:
    from .experiments.validation import artefact_matrix, matrix_markdown

    rows = artefact_matrix(num=args.num, size=args.size, permutations=args.permutations)
    print(json.dumps(rows) if args.json else matrix_markdown(rows, args.num, args.size))


def positive_int(text: str) -> int:
    """argparse type of a count: an error that names the flag instead of a failure later."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed_int(text: str) -> int:
    from .training.options import SEED_LIMIT

    value = int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2^63 - 1, got {value}")
    return value


def _counts(text: str) -> tuple[int, ...]:
    """Comma-separated positive integers (world sizes)."""
    try:
        values = tuple(positive_int(v) for v in text.split(","))
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    return values


def positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # long but flat: one block of flags per command, nothing else
    from .data import SplitOptions
    from .experiments.demo import DemoOptions
    from .experiments.sources import INJECTIONS
    from .model import PRESETS, SYSTEMS, uses_masks
    from .model.presets import STEPS
    from .training import TrainOptions

    p = argparse.ArgumentParser(prog="crfgan", description=__doc__.splitlines()[0])
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a GAN system on a dataset folder or demo data")
    add_options(t, TrainOptions)
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="write full-resolution NIfTI volumes from a checkpoint")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--num", type=positive_int, default=4, help="volumes (or interpolation steps, at least 2)")
    s.add_argument("--seed", type=seed_int, default=0)
    s.add_argument("--out", default="samples")
    s.add_argument("--overwrite", action="store_true", help="replace volumes of the same names in --out")
    s.add_argument("--label", help="class index or name, for conditional models")
    s.add_argument("--chunk", type=positive_int, help="decode this many slices at a time to save memory")
    s.add_argument("--interpolate", type=seed_int, metavar="SEED_B", help="latent walk from --seed to SEED_B")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    sy = sub.add_parser("synthesize", help="write the volume a mask-to-volume model (pix2pix, spade) makes from a "
                                           "label mask, on the mask's grid")
    sy.add_argument("--checkpoint", required=True, help="run folder or checkpoint file of a pix2pix or spade model")
    sy.add_argument("--mask", required=True, help="label mask (.nii, .nii.gz or .npy): integer labels the model "
                                                  "was trained with")
    sy.add_argument("--out", required=True, help="output NIfTI file (.nii.gz or .nii), with the mask's affine")
    sy.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    sy.add_argument("--patch", type=positive_int, help="side of the patches the generator runs on, a multiple of "
                                                       "its stride (default: the model's; bounds the memory)")
    sy.add_argument("--overlap", type=int, help="voxels neighbouring patches share (default: enough to equal one "
                                                "pass over the whole volume)")
    sy.add_argument("--seed", type=seed_int, default=0, help="noise seed (models trained with a noise input)")
    sy.add_argument("--no-resample", action="store_true", help="use the mask's grid as it is, not resampled to the "
                                                               "training voxel size")
    sy.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    sy.add_argument("--device", default="auto")
    sy.set_defaults(func=cmd_synthesize)

    q = sub.add_parser("params", help="parameter counts per network")
    q.add_argument("--model", choices=SYSTEMS, default="crfgan")
    q.add_argument("--preset", choices=list(PRESETS), default="paper-256")
    q.add_argument("--step", choices=STEPS, help="training step whose MACs to count (default: the preset's)")
    q.add_argument("--batch-size", type=positive_int, default=1, help="batch of the counted training step")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_params)

    b = sub.add_parser("bench", help="peak memory and speed of every system in one run")
    b.add_argument("--preset", choices=list(PRESETS), default="paper-64")
    b.add_argument("--batch-size", type=positive_int, default=2)
    b.add_argument("--iterations", type=positive_int, default=20, help="timed iterations per run, after a warm-up")
    b.add_argument("--repeats", type=positive_int, default=3,
                   help="alternating runs per system (medians reported, with the range)")
    b.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    b.add_argument("--step", choices=STEPS, help="training step (default: the preset's, reference)")
    b.add_argument("--device", default="auto")
    b.add_argument("--compare", choices=("systems", "checkpointing", "processes"), default="systems",
                   help="systems: every system side by side; checkpointing: --model with and without activation "
                        "checkpointing; processes: --model on each of --processes processes (torchrun, DDP)")
    b.add_argument("--model", choices=[m for m in SYSTEMS if not uses_masks(m)], default="crfgan",
                   help="the system of --compare checkpointing / processes (the latent models)")
    b.add_argument("--processes", type=_counts, default=(1, 2), help="world sizes of --compare processes, e.g. 1,2")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)

    bs = sub.add_parser("bench-sample", help="peak memory of chunked vs one-pass full-volume decoding (CPU)")
    bs.add_argument("--preset", choices=list(PRESETS), default="paper-256")
    bs.add_argument("--chunk", type=positive_int, default=32, help="image slices per chunk")
    bs.add_argument("--threads", type=positive_int)
    bs.add_argument("--one-pass", choices=("auto", "run", "skip"), default="auto",
                    help="the one-pass run to compare with (auto: skipped when its estimated peak exceeds the "
                         "available memory)")
    bs.add_argument("--json", action="store_true")
    bs.set_defaults(func=cmd_bench_sample)

    sp = sub.add_parser("split", help="write train / validation / test lists of a dataset into a run folder")
    add_options(sp, SplitOptions)
    sp.set_defaults(func=cmd_split)

    e = sub.add_parser("eval", help="realism, diversity and seam metrics of generated vs real volumes")
    e.add_argument("--real", help=f"dataset folder or {DEMO_SOURCES} (default, and for the checkpoint's own data: "
                                  "the test list of the split it was trained on)")
    e.add_argument("--train", help="the generator's training volumes (default: what a checkpoint records): adds "
                                   "the memorisation block")
    e.add_argument("--fake", required=True, help="folder of generated volumes, a checkpoint, or a demo name "
                   "(its own volumes, drawn independently of --real's)")
    e.add_argument("--num", type=positive_int,
                   help="fake volumes (checkpoints: sampled, default 64; demo sets: default 24)")
    e.add_argument("--num-real", type=positive_int, help="real volumes to use (default: all; demo sets: 24)")
    e.add_argument("--size", type=positive_int, default=64, help="cube side when neither side is a checkpoint")
    e.add_argument("--modality", choices=["ct", "mri"])
    e.add_argument("--label", help="class for conditional checkpoints")
    e.add_argument("--seed", type=seed_int, default=0, help="first latent seed for checkpoints")
    e.add_argument("--features", default="shallow,resnet10",
                   help="comma-separated: shallow, resnet10, medicalnet:PATH (local weights file)")
    e.add_argument("--seeds", type=positive_int, default=3, help="random-feature seeds (mean and std)")
    e.add_argument("--inject", choices=INJECTIONS, help="corrupt the fake set first (to see each metric react)")
    e.add_argument("--strength", type=positive_float, default=0.3,
                   help="--inject seams: per-slab intensity gain and offset (std) at slab borders")
    e.add_argument("--sigma", type=positive_float, default=1.0,
                   help="--inject blur: Gaussian sigma in voxels; --inject noise: noise std (model units)")
    e.add_argument("--json", action="store_true")
    e.add_argument("--report", help="also write a Markdown report here")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --report")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("demo", help="train a small CRF-GAN on demo-brain, sample, write NIfTI and a PNG montage")
    add_options(d, DemoOptions)
    d.set_defaults(func=cmd_demo)

    ds = sub.add_parser("downstream", help="augmentation task: a nodule classifier on real vs real + synthetic volumes")
    ds.add_argument("--data", default="demo-chest", help="two-class folder with labels.csv, or demo-chest")
    ds.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                    help="conditional generator to augment with (repeatable); the generators should be trained "
                         "on the training split only")
    ds.add_argument("--positive", default="nodule", help="positive class name or index")
    ds.add_argument("--seeds", type=positive_int, default=10, help="classifier seeds per arm")
    ds.add_argument("--max-epochs", type=positive_int, default=50)
    ds.add_argument("--patience", type=positive_int, default=6, help="early stopping on the validation loss")
    ds.add_argument("--size", type=positive_int, default=64, help="cube side without checkpoints")
    ds.add_argument("--demo-count", type=positive_int, help="number of demo volumes")
    ds.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's)")
    ds.add_argument("--device", default="auto", help="sampling device")
    ds.add_argument("--json", action="store_true")
    ds.add_argument("--report", help="also write the raw result as JSON here")
    ds.add_argument("--overwrite", action="store_true", help="replace an existing --report")
    ds.set_defaults(func=cmd_downstream)

    va = sub.add_parser("validate-artefacts", help="the seam and grid tests against injected artefacts (a table)")
    va.add_argument("--num", type=positive_int, default=24, help="demo-brain volumes a side")
    va.add_argument("--size", type=positive_int, default=64, help="cube side")
    va.add_argument("--permutations", type=positive_int, default=500)
    va.add_argument("--json", action="store_true")
    va.set_defaults(func=cmd_validate_artefacts)

    from .experiments.sweep import SweepOptions
    sw = sub.add_parser("sweep", help="training recipes x seeds as short runs, ranked on held-out data "
                                      "(resumable; writes OUT/recipes.md)")
    add_options(sw, SweepOptions)
    sw.set_defaults(func=cmd_sweep)

    from .experiments.pretrain import PretrainOptions
    pr = sub.add_parser("pretrain", help="rebuild a shipped pretrained demo generator (pretrained:demo-brain, "
                                         "pretrained:demo-chest): train, then keep only its generator")
    add_options(pr, PretrainOptions)
    pr.set_defaults(func=cmd_pretrain)

    pt = sub.add_parser("paper-tables", help="train the systems and write the paper's five tables and Table 6 (mask "
                                             "synthesis) to results.md")
    pt.add_argument("--budget", choices=["tiny", "small", "paper"], default="small",
                    help="tiny: tests; small: CPU, about 100 minutes on 2 cores; paper: GPU scale (needs CUDA)")
    pt.add_argument("--out", default="docs", help="folder of results.md (figures in OUT/images)")
    pt.add_argument("--work", default="runs/paper-tables", help="checkpoints and raw JSON (finished runs reused)")
    pt.add_argument("--device", default="cpu", help="training and sampling device")
    pt.add_argument("--threads", type=int, help="torch CPU threads (default: the budget's, 1 for tiny and small; "
                                                "0: torch's default)")
    pt.add_argument("--fresh", action="store_true", help="retrain everything (delete the budget's work folder)")
    pt.set_defaults(func=cmd_paper_tables)

    me = sub.add_parser("mask-eval", help="paper-tables' Table 6 alone: a mask-to-volume GAN (pix2pix) on demo-chest "
                                          "judged by segmentation Dice, FD / KID, HU per structure, a painted nodule")
    me.add_argument("--budget", choices=["tiny", "small", "paper"], default="small",
                    help="tiny: tests; small: CPU, about an hour on 2 cores; paper: GPU scale (needs CUDA)")
    me.add_argument("--out", default="docs", help="folder of results.md (its Table 6 is replaced)")
    me.add_argument("--work", default="runs/paper-tables", help="checkpoints and raw JSON (finished runs reused)")
    me.add_argument("--device", default="cpu", help="training and synthesis device")
    me.add_argument("--threads", type=int, help="torch CPU threads (default: the budget's; 0: torch's default)")
    me.set_defaults(func=cmd_mask_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DatasetError
    from .runtime import CheckpointError
    from .training import TrainingError
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"{_who()}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user, whatever went wrong; --debug shows the traceback
        if args.debug:
            raise
        expected = (DatasetError, CheckpointError, TrainingError, ValueError, MemoryError, OSError)
        print(f"{_who()}: error: {error_line(e) if isinstance(e, expected) else unexpected_line(e)}", file=sys.stderr)
        return 2
    finally:
        if _DISTRIBUTED in sys.modules:
            sys.modules[_DISTRIBUTED].shutdown()
    return 0


_DISTRIBUTED = "napari_crfgan.distributed"  # imported by training only: the CLI starts without torch


def _who() -> str:
    """crfgan, or which torchrun process speaks."""
    dist = sys.modules.get(_DISTRIBUTED)
    return "crfgan" if dist is None or dist.world_size() == 1 else f"crfgan (rank {dist.rank()})"


def error_line(e: Exception) -> str:
    """The message of an error we expect; an OSError from the system names its file and reason."""
    from .messages import one_line

    if isinstance(e, OSError) and e.strerror and e.filename and str(e.filename) not in str(e.args[-1]):
        return f"{e.strerror}: {e.filename}"
    return one_line(e, limit=400) or type(e).__name__


def unexpected_line(e: Exception) -> str:
    from .messages import one_line

    return f"unexpected {type(e).__name__}: {one_line(e) or 'no message'} (rerun with --debug for the traceback)"


if __name__ == "__main__":
    sys.exit(main())
