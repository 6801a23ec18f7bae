"""The training-loss contract: a registered loss builds one pure loss function and owns its config rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from longrec.config import ExperimentConfig, TrainConfig
from longrec.registry import Registry

# (h [B,N,D], targets [B,N] with 0 = no target, table [I+1,D], generator) -> scalar loss
LossFn = Callable[[Tensor, Tensor, Tensor, "torch.Generator | None"], Tensor]
# () -> [I+1] training count of each item (PAD count 0); called only by the losses that need it
ItemCounts = Callable[[], Tensor]


def no_rules(cfg: ExperimentConfig) -> None:
    """A loss without config rules of its own."""


@dataclass(frozen=True)
class Loss:
    """A training loss (train.loss).

    build:  (train config, catalogue size I, item counts) -> the loss function
    check:  its config rules, each a one-line ConfigError naming the field (load_config calls it)
    repeat: the repeat head (model.repeat) trains with it: batch_loss then adds the head's bonus to full CE
    """

    build: Callable[[TrainConfig, int, ItemCounts], LossFn]
    check: Callable[[ExperimentConfig], None] = no_rules
    repeat: bool = False


LOSSES: Registry[Loss] = Registry("loss")
