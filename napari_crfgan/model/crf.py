"""Mean-field CRF over spatial patches of the embedding (CRF-GAN).

Each node is one patch of the embedding on the grid `cfg.crf_grid`; its features
are the patch's voxels over all channels (a spatial patch, not a channel map).
The only learned parameter is W [N, N], zero-initialised and used symmetrised.
Pairwise potential P_ij = cos(f_i, f_j) * W_sym[i, j]; mean-field updates
logit_i <- u_i + sum_j P_ij * (2 sigmoid(logit_j) - 1), `cfg.crf_iterations` times.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from .presets import ModelConfig


class PatchCRF(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.grid = cfg.crf_grid
        self.iterations = cfg.crf_iterations
        self.weight = nn.Parameter(torch.zeros(cfg.crf_nodes, cfg.crf_nodes))

    def symmetric_weight(self) -> torch.Tensor:
        return (self.weight + self.weight.t()) / 2

    def node_features(self, embedding: torch.Tensor) -> torch.Tensor:
        """[B, C, D, H, W] -> [B, N, C * patch voxels], nodes in D-major grid order."""
        b, c, d, h, w = embedding.shape
        gd, gh, gw = self.grid
        x = embedding.reshape(b, c, gd, d // gd, gh, h // gh, gw, w // gw)
        return x.permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(b, gd * gh * gw, -1)

    def pairwise(self, embedding: torch.Tensor) -> torch.Tensor:
        """P [B, N, N]: cosine similarity of node features times the learned weights."""
        f = F.normalize(self.node_features(embedding).float(), dim=-1)
        return (f @ f.transpose(1, 2)) * self.symmetric_weight()

    def forward(self, embedding: torch.Tensor, unary: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean-field inference.

        embedding: [B, C, D, H, W]; unary: [B, 1] (broadcast to every node) or [B, N].
        Returns (the mean node logit [B, 1], per-node logits [B, N]).
        """
        p = self.pairwise(embedding)
        u = unary.float().expand(p.shape[0], p.shape[1])
        logits = u
        for _ in range(self.iterations):
            logits = u + torch.bmm(p, (2 * torch.sigmoid(logits) - 1).unsqueeze(-1)).squeeze(-1)
        return logits.mean(dim=1, keepdim=True), logits

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
