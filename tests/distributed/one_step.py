"""One training iteration of each configuration below, as the trainer runs it, in this process or as
one rank of `torchrun`; writes every parameter and its gradient (the last step's, averaged over the
ranks by DDP) to OUT/<config>.pt, from rank 0.

    torchrun --nproc_per_node=2 tests/distributed/one_step.py OUT      # batch 2 per rank
    python tests/distributed/one_step.py OUT                            # batch 4 in one process
"""
import sys
from pathlib import Path

import torch

from napari_crfgan import distributed
from napari_crfgan.model import build_system, get_config
from napari_crfgan.runtime import process_device
from napari_crfgan.training.trainer import _iteration_seed

GLOBAL_BATCH = 4
CONFIGS = {
    "crfgan": ("crfgan", {}),
    "hagan": ("hagan", {}),
    # per-sample random draws of the recipe (augmentation, style noise) are shared out like z
    "crfgan-augment-style": ("crfgan", {"augment": "translation,cutout,intensity", "augment_p": 0.5,
                                        "trunk": "style"}),
}


def main(out: Path) -> None:
    device = process_device("cpu")
    torch.set_num_threads(1)
    world, rows = distributed.world_size(), GLOBAL_BATCH // distributed.world_size()
    gen = torch.Generator().manual_seed(1234)
    volumes = torch.rand(GLOBAL_BATCH, 1, 32, 32, 32, generator=gen) * 2 - 1  # the same data on every rank
    for name, (model, fields) in CONFIGS.items():
        torch.manual_seed(0)
        system = build_system(model, get_config("tiny-32", **fields)).to(device)
        optimizers = system.make_optimizers()
        if world > 1:
            system.distribute()
        torch.manual_seed(_iteration_seed(0, 0))
        idx = distributed.sample_rows(lambda n: torch.randperm(GLOBAL_BATCH)[:n], rows)
        losses = distributed.mean_over_ranks(system.train_step(volumes[idx], None, 0, optimizers))
        if distributed.is_main():
            state = {k: p.detach().clone() for k, p in system.named_parameters()}
            grads = {k: p.grad.detach().clone() for k, p in system.named_parameters() if p.grad is not None}
            torch.save({"params": state, "grads": grads, "losses": losses, "world": world}, out / f"{name}.pt")
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
