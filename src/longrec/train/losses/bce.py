"""bce: binary cross-entropy against train.negatives uniform negatives per position (original SASRec)."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.config import TrainConfig
from longrec.losses import sampled_bce, select, uniform_negatives
from longrec.train.losses.base import ItemCounts, Loss, LossFn


def build(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    k = train.negatives

    def bce(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        hs, ts = select(h, targets)
        return sampled_bce(hs, ts, table, uniform_negatives(ts, num_items, k, gen))

    return bce


BCE = Loss(build)
