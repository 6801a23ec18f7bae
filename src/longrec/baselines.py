"""Non-neural baselines as Scorers: global popularity, the user's own frequent items, repeat-last.

Every learned model is reported beside these (same splits, same evaluator). On repeat-heavy data the personal
ones are strong, and there the history must not be masked (`eval.mask_history=false`): masking would ban
exactly the items they rank first. Each reads the newest `max_len` events of the window, like a model does.

Scores are float64 and two-tier: items of the window score above 1, every other item its popularity share in
[0, 1), so unseen items follow in popularity order instead of tying at zero (ties count against the target).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from longrec.errors import ConfigError
from longrec.ops.window import last_occurrence
from longrec.registry import Registry


@dataclass(frozen=True)
class PopularityConfig:
    pass


@dataclass(frozen=True)
class PersonalConfig:
    decay: float = 1.0  # weight of an event `age` events before the newest is decay**age; 1 = plain frequency
    # with decay = 1 equal counts are broken by recency (the item seen last first), as in the frequency baseline


@dataclass(frozen=True)
class RepeatLastConfig:
    pass


class _Baseline:
    """Common part: popularity shares from training counts, the Scorer attributes, `pick` from `scores`."""

    mask_token = 0

    def __init__(self, counts: Tensor, max_len: int) -> None:
        self.num_items = len(counts) - 1
        self.max_len = max_len
        pop = counts.double().clone()
        pop[0] = 0.0
        self.pop = pop / (pop.max() + 1.0)  # [I+1] in [0, 1)

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(items [B,N], weight [B,N] float64): what each window event adds to its item's score (0 at pads)."""
        return items, mask.double()

    def scores(self, query: tuple[Tensor, Tensor], c0: int, c1: int) -> Tensor:
        items, weight = query
        B = items.shape[0]
        pop = self.pop.to(items.device)[c0:c1]
        hist = torch.zeros(B, c1 - c0, dtype=torch.float64, device=items.device)  # [B, C]
        inside = (items >= c0) & (items < c1) & (weight > 0)
        rows = torch.arange(B, device=items.device)[:, None].expand_as(items)
        hist.index_put_((rows[inside], items[inside] - c0), weight[inside], accumulate=True)
        return torch.where(hist > 0, 1.0 + hist, pop.expand(B, -1))

    def pick(self, query: tuple[Tensor, Tensor], cands: Tensor) -> Tensor:
        full = self.scores(query, 0, self.num_items + 1)  # [B, I+1]: baselines run on catalogues that fit
        return full.gather(1, cands)


class Popularity(_Baseline):
    """score_i = the number of training events of item i (the same list for every user)."""

    def __init__(self, counts: Tensor, max_len: int, cfg: PopularityConfig) -> None:
        super().__init__(counts, max_len)

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return items, torch.zeros_like(mask, dtype=torch.float64)  # the history adds nothing


class Personal(_Baseline):
    """score_i = sum over the window's events of item i of decay**age (age 0 = the newest event); with decay = 1
    the count, ties broken by the recency of the item's last event."""

    def __init__(self, counts: Tensor, max_len: int, cfg: PersonalConfig) -> None:
        super().__init__(counts, max_len)
        if not 0.0 < cfg.decay <= 1.0:
            raise ConfigError(f"config: 'model.baseline_args.decay' must be in (0, 1], got {cfg.decay}")
        self.decay = cfg.decay

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, N = items.shape
        age = torch.arange(N - 1, -1, -1, device=items.device, dtype=torch.float64)  # (N,): 0 at the newest
        w = self.decay**age * mask  # (B, N)
        if self.decay == 1.0:
            # + 0.5 * recency in (0, 0.5] on the item's last event only: counts stay apart, equal counts are ordered
            last = last_occurrence(items, mask)  # (B, N) bool
            w = w + 0.5 * last * (N - age) / (N + 1)
        return items, w


class RepeatLast(_Baseline):
    """The window's distinct items, the most recent first (the last item, then the one before ...)."""

    def __init__(self, counts: Tensor, max_len: int, cfg: RepeatLastConfig) -> None:
        super().__init__(counts, max_len)

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, N = items.shape
        recency = torch.arange(1, N + 1, device=items.device, dtype=torch.float64) / (N + 1)  # (N,) in (0, 1)
        return items, last_occurrence(items, mask) * recency


BASELINES: Registry[type[_Baseline]] = Registry("baseline")
BASELINES.register("popularity", Popularity, PopularityConfig)
BASELINES.register("personal", Personal, PersonalConfig)
BASELINES.register("repeat_last", RepeatLast, RepeatLastConfig)


def baseline_config(name: str, args: dict[str, Any]) -> Any:
    """The baseline's config dataclass built from `args` (unknown keys and wrong types are ConfigErrors)."""
    from longrec.config import from_dict  # config imports this module lazily, to validate

    entry = BASELINES.get(name)
    return from_dict(entry.config, args, "model.baseline_args") if entry.config else None  # type: ignore[type-var]


def build_baseline(name: str, counts: Tensor, max_len: int, args: dict[str, Any]) -> _Baseline:
    """A registered baseline; `args` is validated against its config dataclass. counts [I+1]: training counts."""
    return BASELINES.get(name).obj(counts, max_len, baseline_config(name, args))  # type: ignore[call-arg]
