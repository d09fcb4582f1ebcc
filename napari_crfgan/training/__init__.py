"""Training: options and reports, the run lifecycle (start / resume / refuse) and the trainer."""
from .options import RESUME_MODES, TrainOptions, TrainReport
from .lifecycle import RunStart, decide_start
from .run import RunResult, run_training
from .trainer import TrainingError, prepare_dataset, train

__all__ = [
    "RESUME_MODES", "RunResult", "RunStart", "TrainOptions", "TrainReport", "TrainingError", "decide_start",
    "prepare_dataset", "run_training", "train",
]
