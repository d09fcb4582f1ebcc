"""How big a paper-tables run is (:class:`Budget`, :data:`BUDGETS`) and the paper's own numbers (:data:`PAPER`).

``tiny`` is for tests (its numbers mean nothing), ``small`` runs on a 2-core CPU,
``paper`` is the GPU scale of the CRF-GAN paper and refuses to run without CUDA.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..downstream import AugmentationSettings
from ..mask_eval import MaskEvalSettings
from ..segmentation import SegmenterSettings


#: The systems compared, in table order: the paper's two, then the ablation (CRF-GAN with the
#: CRF left out), which tells whether a difference comes from the CRF or from dropping
#: HA-GAN's G^L / D^L / E^G. The code compares "crfgan" with "hagan" and with "crfgan-nocrf".
MODELS = ("crfgan", "hagan", "crfgan-nocrf")


class PaperTablesError(ValueError):
    """The tables cannot be made here (missing matplotlib, no CUDA for the paper budget)."""


@dataclass(frozen=True)
class Budget:
    """Everything that sets the size (and time) of a paper-tables run."""

    name: str
    description: str
    gan_preset: str  # preset of the trained models (Tables 1 and 5)
    gan_batch_size: int
    brain_count: int  # demo-brain volumes (Table 1), split train / val / test by brain_split
    brain_iterations: int
    num_samples: int  # generated volumes per system and training seed for Table 1
    chest_count: int  # demo-chest volumes (Table 5), split train / val / test
    chest_iterations: int
    aug_seeds: int  # classifier seeds per split and generator (Table 5)
    gan_seeds: tuple[int, ...] = (0, 1, 2)  # training seeds of every system in Table 1
    brain_split: tuple[float, float, float] = (0.5, 0.1, 0.4)  # train / val / test of demo-brain (Table 1)
    split_seed: int = 0  # of the demo-brain split
    chest_splits: tuple[int, ...] = (0, 1, 2)  # seeds of the demo-chest splits (Table 5)
    chest_gan_seeds: tuple[int, ...] = (0, 1, 2)  # generator training seeds per split (Table 5)
    paired_boot: int = 200  # bootstrap replicates of the paired differences (Table 1)
    workers: int = 3  # GAN training processes at once when parallel_training
    aug_settings: AugmentationSettings = field(default_factory=AugmentationSettings)
    mask_eval: MaskEvalSettings = field(default_factory=MaskEvalSettings)  # Table 6 (the budget's preset and batch)
    eval_options: dict = field(default_factory=dict)  # passed to evaluate()
    param_presets: tuple[str, ...] = ("paper-64", "paper-128", "paper-256")
    memory_presets: tuple[str, ...] = ("paper-64", "paper-128")  # measured on bench_device
    bench_device: str = "cpu"
    memory_batches: tuple[int, ...] = (2, 4, 6)
    memory_iterations: int = 1  # timed iterations after the warm-up step (memory-only runs)
    speed_batch: int = 2  # Table 4; its runs also give Table 3's memory at this batch
    speed_iterations: int = 20  # enough timed iterations and repeats for a median and a spread to mean something
    speed_repeats: int = 3
    cuda_presets: tuple[str, ...] = ("paper-256",)  # measured only where CUDA exists
    threads: int | None = 1  # torch CPU threads of training and evaluation (None: torch's default)
    # torch CPU threads of the benchmark workers (Tables 3 and 4), which run one at a time
    # (None: torch's default, all cores)
    bench_threads: int | None = None
    parallel_training: bool = False  # train the systems at once, one worker process each
    needs_cuda: bool = False


BUDGETS: dict[str, Budget] = {
    "tiny": Budget(
        name="tiny",
        description="tests only: tiny-32 models, a handful of iterations, 2 classifier seeds; the numbers mean nothing",
        gan_preset="tiny-32", gan_batch_size=2, brain_count=16, brain_iterations=4, num_samples=8,
        chest_count=12, chest_iterations=4, aug_seeds=2, gan_seeds=(0,), chest_splits=(0,), chest_gan_seeds=(0,),
        paired_boot=20,
        aug_settings=AugmentationSettings(max_epochs=6, patience=2, batch_size=4),
        eval_options={"features": ("shallow",), "seeds": (0,), "kid_subsets": 10, "mmd_permutations": 20,
                      "msssim_pairs": 4, "n_boot": 50},
        memory_presets=("tiny-32",), memory_batches=(2,), speed_iterations=2, speed_repeats=2,
        cuda_presets=("tiny-32",), bench_threads=1,
        # 12 volumes: the ones Table 5 made (4 train / 4 val / 4 test); a 2-voxel ball fits a tiny-32 lung
        mask_eval=MaskEvalSettings(count=12, iterations=4, seg_seeds=(0, 1), nodule_radius=2.0, nodule_shell=1.0,
                                   segmenter=SegmenterSettings(steps=4, width=4),
                                   eval_options={"features": ("shallow",), "seeds": (0,), "kid_subsets": 10,
                                                 "mmd_permutations": 20, "msssim_pairs": 4, "n_boot": 20}),
    ),
    "small": Budget(
        name="small",
        description="small-64 models on CPU (2 cores), about 100 minutes: 3 systems x 3 training seeds on "
                    "demo-brain, 3 systems x 3 splits x 3 training seeds on demo-chest, three processes of one "
                    "torch thread at a time; Table 6 (pix2pix, 400 iterations, 9 segmenters) adds about 40 minutes",
        gan_preset="small-64", gan_batch_size=4, brain_count=60, brain_iterations=500, num_samples=32,
        chest_count=80, chest_iterations=250, aug_seeds=5,
        aug_settings=AugmentationSettings(), parallel_training=True,
    ),
    "paper": Budget(
        name="paper",
        description="GPU scale (not run here): paper-256 models for 80k / 40k iterations on a CUDA GPU",
        gan_preset="paper-256", gan_batch_size=4, brain_count=512, brain_iterations=80_000, num_samples=512,
        chest_count=512, chest_iterations=40_000, aug_seeds=10, paired_boot=1000,
        aug_settings=AugmentationSettings(max_epochs=100, patience=10, batch_size=8, width=16),
        mask_eval=MaskEvalSettings(count=200, iterations=40_000,
                                   segmenter=SegmenterSettings(steps=4000, batch_size=4, width=16)),
        memory_presets=("paper-64", "paper-128", "paper-256"), bench_device="cuda", cuda_presets=(),
        threads=None, needs_cuda=True, parallel_training=False,
    ),
}

#: The CRF-GAN paper's published comparison with HA-GAN, measured on a GPU: realism on
#: LUNA16 at 256^3 (MedicalNet features), augmentation on LIDC malignancy. Quoted in the
#: "paper" columns of results.md; nothing else in results.md comes from here.
PAPER = {
    "params_fewer_pct": {"paper-64": 27.4, "paper-128": 28.1, "paper-256": 28.2},
    "memory_mb": {  # GPU, batch 2 / 4 / 6
        "paper-128": {"hagan": (2812, 2984, 3098), "crfgan": (2622, 2712, 2774)},
        "paper-256": {"hagan": (7710, 10434, None), "crfgan": (7494, 9010, None)},
    },
    "memory_less_pct_avg": 9.4,
    "speed_faster_pct": {"paper-128": 14.6, "paper-256": 10.2},
    "fid": {"crfgan": 0.047, "hagan": 0.061},  # LUNA16 256^3, MedicalNet features
    "mmd": {"crfgan": 0.084, "hagan": 0.086},
    "f1": {"real only": (76.92, 5.27), "+ CRF-GAN": (79.21, 3.19), "+ HA-GAN": (75.79, 3.63)},
}
