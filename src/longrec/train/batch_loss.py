"""The loss of a batch: the configured loss (longrec.train.losses) at the positions that have a target, with the
repeat head's bonus and train.last_targets."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longrec.data.loader import Batch
from longrec.losses import repeat_ce
from longrec.model.encoder import SeqEncoder
from longrec.train.losses import LossFn


def batch_loss(net: nn.Module, model: SeqEncoder, b: Batch, loss: LossFn, gen: torch.Generator | None = None,
               last_targets: int = 0) -> Tensor:
    """The mean loss over the positions of `b` that have a target; net(items, mask, times) -> h [B,N,D] (the model
    or its DDP wrapper), scored against model's item table. With the model's repeat head the loss is full CE with
    its bonus (the config allows the head only with a loss registered with repeat=True: ce).
    last_targets = K > 0: only the newest K positions of each window are scored (windows are right-aligned, so
    those are the last K columns): a long window's context at the loss and head cost of K positions."""
    h = net(b.items, b.mask, b.times)
    targets, table, repeat = b.targets, model.item_table(), model.repeat
    if 0 < last_targets < h.shape[1]:
        h, targets = h[:, -last_targets:], targets[:, -last_targets:]
    if repeat is None:
        return loss(h, targets, table, gen)
    slots = repeat(b.items, b.mask, h, b.times)
    return repeat_ce(h, targets, table, slots.item, slots.bias)
