"""Mean-field CRF over spatial patches of the embedding (CRF-GAN).

Each node is one patch of the embedding on the grid `cfg.crf_grid`; its features
are the patch's voxels over all channels (a spatial patch, not a channel map: the
reference code reshapes without a permute, which makes a node a group of channels).
The learned parameter is W [N, N], zero-initialised and used symmetrised. Pairwise
potential P_ij = cos(f_i, f_j) * W_sym[i, j]; `cfg.crf_iterations` synchronous
mean-field updates

    logit_i <- u_i + sum_j P_ij * (2 sigmoid(logit_j) - 1),

optionally damped (`cfg.crf_damping` a: logit <- (1 - a) update + a logit); the
output is the mean node logit. Class-conditional models also carry W_class
[K, N, N] and pass D^H's class logits through the same updates with a softmax in
place of the sigmoid (the authors' conditional branch).

What the output means. The unary is D^H's real/fake logit broadcast to every node,
and the update is odd in it: flip the sign of u and every logit flips. So the CRF
adds no signal of its own where D^H is undecided (u = 0 gives logit 0 at every
node whatever W is), and the direction of its pressure on the generator follows
D^H's verdict. A node's value is D^H's verdict on the volume, re-weighted by how
similar that patch is to the others under the learned W: a *patch verdict*, not a
calibrated probability that the patch is consistent.

With large |W| the plain synchronous update can oscillate with period 2; the last
update's size is kept in `CRFOutput.residual` so a caller can see it, and damping
makes the iteration converge.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .presets import ModelConfig


class CRFOutput(NamedTuple):
    logit: torch.Tensor  # [B, 1], the mean node logit
    node_logits: torch.Tensor  # [B, N]
    class_logits: torch.Tensor | None  # [B, K] mean over nodes (conditional models), else None
    residual: torch.Tensor  # max |change| of any node logit in the last update (0: converged)


class PatchCRF(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.grid = cfg.crf_grid
        self.iterations = cfg.crf_iterations
        self.damping = cfg.crf_damping
        self.weight = nn.Parameter(torch.zeros(cfg.crf_nodes, cfg.crf_nodes))
        # per-class pairwise weights for the class logits (conditional models only)
        # (the reference step's conditional CRF; the fast step keeps napari-crfgan 0.1's plain CRF)
        self.class_weight = (nn.Parameter(torch.zeros(cfg.num_classes, cfg.crf_nodes, cfg.crf_nodes))
                             if cfg.num_classes and cfg.step == "reference" else None)

    def symmetric_weight(self) -> torch.Tensor:
        return (self.weight + self.weight.t()) / 2

    def node_features(self, embedding: torch.Tensor) -> torch.Tensor:
        """[B, C, D, H, W] -> [B, N, C * patch voxels], nodes in D-major grid order."""
        b, c, d, h, w = embedding.shape
        gd, gh, gw = self.grid
        x = embedding.reshape(b, c, gd, d // gd, gh, h // gh, gw, w // gw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gd * gh * gw, -1)

    def similarity(self, embedding: torch.Tensor) -> torch.Tensor:
        """cos(f_i, f_j) [B, N, N] of the node features."""
        f = F.normalize(self.node_features(embedding).float(), dim=-1)
        return f @ f.transpose(1, 2)

    def pairwise(self, embedding: torch.Tensor) -> torch.Tensor:
        """P [B, N, N]: cosine similarity of node features times the learned weights."""
        return self.similarity(embedding) * self.symmetric_weight()

    def _mean_field(self, unary: torch.Tensor, message) -> tuple[torch.Tensor, torch.Tensor]:
        logits, change = unary, unary.new_zeros(())
        for _ in range(self.iterations):
            update = unary + message(logits)
            new = update if not self.damping else (1 - self.damping) * update + self.damping * logits
            change = (new - logits).detach().abs().amax()
            logits = new
        return logits, change

    def forward(self, embedding: torch.Tensor, unary: torch.Tensor,
                class_unary: torch.Tensor | None = None) -> CRFOutput:
        """Mean-field inference.

        embedding: [B, C, D, H, W]; unary: [B, 1] (broadcast to every node) or [B, N];
        class_unary: [B, K] class logits of D^H (conditional models), broadcast likewise.
        """
        sim = self.similarity(embedding)
        p = sim * self.symmetric_weight()
        u = unary.float().expand(p.shape[0], p.shape[1])
        logits, residual = self._mean_field(
            u, lambda x: torch.bmm(p, (2 * torch.sigmoid(x) - 1).unsqueeze(-1)).squeeze(-1))
        class_logits = None
        if class_unary is not None and self.class_weight is not None:
            w = (self.class_weight + self.class_weight.transpose(1, 2)) / 2  # [K, N, N]
            pk = sim.unsqueeze(1) * w.unsqueeze(0)  # [B, K, N, N]
            uk = class_unary.float().unsqueeze(1).expand(-1, p.shape[1], -1)  # [B, N, K]
            node_class, class_residual = self._mean_field(
                uk, lambda x: torch.einsum("bkij,bjk->bik", pk, 2 * torch.softmax(x, dim=-1) - 1))
            class_logits = node_class.mean(dim=1)
            residual = torch.maximum(residual, class_residual)
        return CRFOutput(logits.mean(dim=1, keepdim=True), logits, class_logits, residual)

    def neighbours(self) -> list[tuple[int, int]]:
        """Index pairs (i, j), i < j, of face-adjacent patches on the grid."""
        gd, gh, gw = self.grid
        index = {cell: n for n, cell in enumerate(itertools.product(range(gd), range(gh), range(gw)))}
        pairs = []
        for (a, b, c), i in index.items():
            for nb in ((a + 1, b, c), (a, b + 1, c), (a, b, c + 1)):
                if nb in index:
                    pairs.append((i, index[nb]))
        return pairs
