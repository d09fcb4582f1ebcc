"""Training and running the small segmenter (model/segmenter.py) for the mask-synthesis evaluation.

Every arm (real, real + synthetic, synthetic) trains for the same number of steps at the same batch size,
so an arm with more pairs gets no more compute, only more variety; the seed fixes the weights and the
batch draws. The loss is cross-entropy plus soft Dice (the Dice term keeps the small structures, nodules
above all, from being drowned by the background).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.segmenter import SegmentationUNet


@dataclass(frozen=True)
class SegmenterSettings:
    steps: int = 120
    batch_size: int = 2
    lr: float = 3e-3
    width: int = 8
    flip: bool = True  # random left / right flips (W axis): the lungs are mirror images, near enough


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the batch's target."""
    probs = logits.softmax(1)
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    dims = (0, 2, 3, 4)
    inter, total = (probs * onehot).sum(dims), (probs + onehot).sum(dims)
    present = onehot.sum(dims) > 0
    return 1 - (2 * inter[present] / total[present].clamp_min(1e-6)).mean()


def train_segmenter(images: torch.Tensor, classes_map: torch.Tensor, classes: int, seed: int,
                    settings: SegmenterSettings) -> SegmentationUNet:
    """A segmenter trained on images [N, 1, S, S, S] (model units) and class maps [N, S, S, S] (long)."""
    torch.manual_seed(seed)
    model = SegmentationUNet(classes, settings.width)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(settings.steps):
        idx = torch.randint(0, len(images), (min(settings.batch_size, len(images)),), generator=gen)
        x, y = images[idx], classes_map[idx]
        if settings.flip and bool(torch.rand((), generator=gen) < 0.5):
            x, y = x.flip(-1), y.flip(-1)
        logits = model(x)
        loss = F.cross_entropy(logits, y) + soft_dice_loss(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict(model: SegmentationUNet, images: torch.Tensor) -> torch.Tensor:
    """Class maps [N, S, S, S] of images [N, 1, S, S, S], one volume at a time (bounded memory)."""
    return torch.cat([model(images[i:i + 1]).argmax(1) for i in range(len(images))])
