"""The configured training loss and its negative sampler, applied to the positions of a batch that have targets."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from longrec.config import TrainConfig
from longrec.data.loader import Batch
from longrec.losses import chunked_ce, gbce, repeat_ce, sampled_bce, sampled_softmax, select, uniform_negatives
from longrec.model.repeat import RepeatHead

# (targets [B,N] with 0 = no target, k, generator) -> (negative ids [B,K], log-probability of drawing each [B,K])
Sampler = Callable[[Tensor, int, "torch.Generator | None"], tuple[Tensor, Tensor]]
# (h [B,N,D], targets [B,N] with 0 = no target, table [I+1,D], generator) -> scalar loss
LossFn = Callable[[Tensor, Tensor, Tensor, "torch.Generator | None"], Tensor]


def uniform_sampler(num_items: int) -> Sampler:
    """K ids a sequence, uniform over 1..I, with replacement."""

    def draw(targets: Tensor, k: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        ids = torch.randint(1, num_items + 1, (len(targets), k), generator=gen, device=targets.device)
        return ids, torch.full(ids.shape, -math.log(num_items), device=targets.device)

    return draw


def popularity_sampler(counts: Tensor) -> Sampler:
    """K ids a sequence, drawn with replacement in proportion to their training counts ([I+1], PAD count 0)."""
    p = counts.double() / counts.sum()
    log_p = p.log().float()

    def draw(targets: Tensor, k: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
        ids = torch.multinomial(p.to(targets.device), len(targets) * k, replacement=True, generator=gen)
        return ids.view(len(targets), k), log_p.to(targets.device)[ids].view(len(targets), k)

    return draw


def in_batch_sampler(targets: Tensor, k: int, gen: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """For each sequence, the targets of K positions of the batch picked uniformly with replacement: item i is
    drawn with probability (its count among the batch's M targets) / M, the exact proposal for logQ."""
    flat = targets[targets > 0]  # [M]
    M = len(flat)
    pick = torch.randint(0, M, (len(targets), k), generator=gen, device=targets.device)  # [B, K]
    _, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    return flat[pick], (counts[inverse[pick]].float() / M).log()


def make_loss(train: TrainConfig, num_items: int, item_counts: Callable[[], Tensor]) -> LossFn:
    """The loss of `train.loss`; `item_counts()` ([I+1] training counts) is called only by the popularity sampler."""
    k = train.negatives
    samplers: dict[str, Callable[[], Sampler]] = {
        "uniform": lambda: uniform_sampler(num_items),
        "popularity": lambda: popularity_sampler(item_counts()),
        "in_batch": lambda: in_batch_sampler,
    }
    uniform_draw = uniform_sampler(num_items)  # gbce's calibration assumes uniform negatives
    draw = samplers[train.sampler]() if train.loss == "sampled" else uniform_draw

    def ce(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        return chunked_ce(*select(h, targets), table)

    def bce(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        hs, ts = select(h, targets)
        return sampled_bce(hs, ts, table, uniform_negatives(ts, num_items, k, gen))

    def sampled(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        if not (targets > 0).any():  # nothing to draw in-batch negatives from
            return chunked_ce(*select(h, targets), table)
        return sampled_softmax(h, targets, table, *draw(targets, k, gen))

    def generalized(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        return gbce(h, targets, table, uniform_draw(targets, k, gen)[0], train.gbce_t, num_items)

    losses: dict[str, LossFn] = {"ce": ce, "bce": bce, "sampled": sampled, "gbce": generalized}
    return losses[train.loss]


def batch_loss(net: nn.Module, table: Tensor, b: Batch, loss: LossFn, gen: torch.Generator | None,
               repeat: RepeatHead | None = None, last_targets: int = 0) -> Tensor:
    """The mean loss over the positions of `b` that have a target; net(items, mask, times) -> h [B,N,D]. With a
    repeat head the loss is full CE with its bonus (the config allows the head with train.loss=ce only).
    last_targets = K > 0: only the newest K positions of each window are scored (windows are right-aligned, so
    those are the last K columns): a long window's context at the loss and head cost of K positions."""
    h = net(b.items, b.mask, b.times)
    targets = b.targets
    if 0 < last_targets < h.shape[1]:
        h, targets = h[:, -last_targets:], targets[:, -last_targets:]
    if repeat is None:
        return loss(h, targets, table, gen)
    slots = repeat(b.items, b.mask, h, b.times)
    return repeat_ce(h, targets, table, slots.item, slots.bias)
