"""gbce: gSASRec's generalised BCE against train.negatives uniform negatives a sequence, calibrated by gbce_t."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.config import ExperimentConfig, TrainConfig
from longrec.errors import ConfigError
from longrec.losses import gbce
from longrec.train.losses.base import ItemCounts, Loss, LossFn
from longrec.train.losses.samplers import uniform_sampler


def build(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    k, draw = train.negatives, uniform_sampler(num_items)

    def generalized(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        return gbce(h, targets, table, draw(targets, k, gen)[0], train.gbce_t, num_items)

    return generalized


def check(cfg: ExperimentConfig) -> None:
    t = cfg.train
    if t.sampler != "uniform" or not 0.0 <= t.gbce_t <= 1.0:
        raise ConfigError(f"config: train.loss=gbce needs train.sampler=uniform (its calibration assumes uniform "
                          f"negatives) and train.gbce_t in [0, 1], got {t.sampler!r}, {t.gbce_t}")


GBCE = Loss(build, check)
