"""Negative samplers for the sampled losses (train.sampler): K ids a sequence and the log-probability of each."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from longrec.registry import Registry
from longrec.train.losses.base import ItemCounts

# (targets [B,N] with 0 = no target, k, generator) -> (negative ids [B,K], log-probability of drawing each [B,K])
Sampler = Callable[[Tensor, int, "torch.Generator | None"], tuple[Tensor, Tensor]]


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


# name -> (catalogue size I, item counts) -> the sampler
SAMPLERS: Registry[Callable[[int, ItemCounts], Sampler]] = Registry("sampler")
SAMPLERS.register("uniform", lambda num_items, counts: uniform_sampler(num_items))
SAMPLERS.register("popularity", lambda num_items, counts: popularity_sampler(counts()))
SAMPLERS.register("in_batch", lambda num_items, counts: in_batch_sampler)
