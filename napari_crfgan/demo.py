"""`crfgan demo`: the main job on the embedded demo data.

Trains a small CRF-GAN on demo-brain (synthetic T1 MRIs made from the MNI152
template), samples full-resolution volumes, writes them as NIfTI, and writes a
PNG montage of real (top row) beside generated (bottom row) slices.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .montage import montage, write_png
from .training import CHECKPOINT_NAME, TrainOptions, load_checkpoint


def run_demo(out: Path = Path("runs/demo"), iterations: int = 1500, batch_size: int = 4, num_samples: int = 4,
             device: str = "auto", seed: int = 0, data: str = "demo-brain", preset: str = "small-64") -> dict:
    from .cli import run_training
    from .sampling import Sampler
    from .training import prepare_dataset

    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    done = load_checkpoint(ckpt_path).iteration if ckpt_path.is_file() else 0
    options = TrainOptions(data=data, out=out, model="crfgan", preset=preset, iterations=iterations,
                           batch_size=batch_size, device=device, seed=seed, resume=done > 0)
    if done < iterations:
        run_training(options)
    else:
        print(f"{ckpt_path} already trained for {done} iterations; sampling from it", file=sys.stderr)

    sampler = Sampler(ckpt_path, device=device)
    volumes = sampler.sample(num_samples, seed=seed)
    sample_dir = out / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    paths = [v.save(sample_dir / f"sample_seed{v.seed:04d}.nii.gz") for v in volumes]
    dataset = prepare_dataset(options)
    real = [dataset[i][0].numpy() for i in range(min(num_samples, len(dataset)))]
    png = write_png(out / "montage.png", montage([real, [v.model_units for v in volumes]]))
    print(f"samples ({sampler.cfg.size}^3, {sampler.spacing[0]:.2f} mm voxels): {sample_dir}")
    print(f"montage (top: real, bottom: generated): {png}")
    print(f"checkpoint: {ckpt_path}")
    return {"checkpoint": ckpt_path, "samples": paths, "montage": png}
