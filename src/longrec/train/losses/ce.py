"""ce: softmax cross-entropy over the whole catalogue, in catalogue chunks (the default)."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.config import TrainConfig
from longrec.losses import chunked_ce, select
from longrec.train.losses.base import ItemCounts, Loss, LossFn


def build(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    def ce(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        return chunked_ce(*select(h, targets), table)

    return ce


CE = Loss(build, repeat=True)  # full CE is what the repeat head's bonus (losses.repeat_ce) extends
