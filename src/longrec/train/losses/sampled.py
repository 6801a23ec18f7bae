"""sampled: softmax over the target and train.negatives negatives a sequence (train.sampler), logQ-corrected."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.config import TrainConfig
from longrec.losses import chunked_ce, sampled_softmax, select
from longrec.train.losses.base import ItemCounts, Loss, LossFn
from longrec.train.losses.samplers import SAMPLERS


def build(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    k = train.negatives
    draw = SAMPLERS.get(train.sampler).obj(num_items, item_counts)

    def sampled(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        if not (targets > 0).any():  # nothing to draw in-batch negatives from
            return chunked_ce(*select(h, targets), table)
        return sampled_softmax(h, targets, table, *draw(targets, k, gen))

    return sampled


SAMPLED = Loss(build)
