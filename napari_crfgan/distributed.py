"""Training on several processes with torch.distributed, as `torchrun` launches them.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; `runtime.process_device` gives each
process its device and joins the process group they describe (`join`: gloo on CPU,
NCCL on CUDA, chosen from the device). Nothing here launches processes or moves bytes itself: the gradients are
averaged by DistributedDataParallel (`GANSystem.distribute`), the rest by the few
collectives below.

The batch is global. Every rank reseeds the same RNG stream at each iteration and
draws the random numbers of the whole global batch (volume indices, latent codes,
augmentations), then keeps its own rows (`sample_rows`): a run draws the same numbers
whatever the world size, so N processes compute what one process with the same
global batch computes, up to the order of float sums, and a checkpoint resumes on any
world size.
"""
from __future__ import annotations

import os
from typing import Callable

import torch
import torch.distributed as dist


def launched() -> bool:
    """This process is one of several that torchrun started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the process that prints, shows progress and writes checkpoints."""
    return rank() == 0


def join(device: torch.device) -> None:
    """Join torchrun's process group (once): NCCL for CUDA devices, gloo on the CPU."""
    if not active():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def barrier() -> None:
    if active():
        dist.barrier()


def sample_rows(draw: Callable[[int], torch.Tensor], batch: int) -> torch.Tensor:
    """`draw(n)` makes n rows of random numbers; this rank's `batch` rows of the global batch's draw."""
    world = world_size()
    if world == 1:
        return draw(batch)
    start = rank() * batch
    return draw(batch * world)[start:start + batch]


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (every rank must call it at the same point)."""
    return bool(sum_over_ranks(torch.tensor([float(flag)])).item() > 0)


def sum_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of `t` over every rank (a copy on the collective's device)."""
    if not active():
        return t
    t = _collective_tensor(t.detach().clone())
    dist.all_reduce(t)
    return t


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value's mean over the ranks: losses of the global batch (every loss is a per-rank mean)."""
    if not active() or not values:
        return values
    t = sum_over_ranks(torch.tensor(list(values.values()), dtype=torch.float64)) / world_size()
    return dict(zip(values, t.tolist()))


def _collective_tensor(t: torch.Tensor) -> torch.Tensor:
    """NCCL needs the tensor on this rank's GPU; gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return t.to(torch.device("cuda", torch.cuda.current_device()))
    return t.cpu()
