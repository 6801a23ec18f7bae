"""A toy loss in one file, registered through the public API: BPR, -log σ(s+ - s-) against train.negatives
uniform negatives a position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.config import ExperimentConfig, TrainConfig
from longrec.errors import ConfigError
from longrec.losses import select, uniform_negatives
from longrec.train.losses import LOSSES, ItemCounts, Loss, LossFn


def build(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    def bpr(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        hs, ts = select(h, targets)  # [M, D], [M]
        neg = uniform_negatives(ts, num_items, train.negatives, gen)  # [M, K]
        pos = (hs * table[ts]).sum(-1, keepdim=True)  # [M, 1]
        return F.softplus(torch.einsum("md,mkd->mk", hs, table[neg]) - pos).mean()

    return bpr


def check(cfg: ExperimentConfig) -> None:
    if cfg.train.sampler != "uniform":
        raise ConfigError(f"config: train.loss=bpr draws uniform negatives: 'train.sampler' must be uniform, got "
                          f"{cfg.train.sampler!r}")


LOSSES.register("bpr", Loss(build, check))
