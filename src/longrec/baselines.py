"""Non-neural baselines as Scorers: global popularity, the user's own frequent items, repeat-last, item-kNN.

Every learned model is reported beside these (same splits, same evaluator). On repeat-heavy data the personal
ones are strong, and there the history must not be masked (`eval.mask_history=false`): masking would ban
exactly the items they rank first. Each reads the newest `max_len` events of the window, like a model does.

Scores are float64 and two-tier: items of the window score above 1, every other item its popularity share in
[0, 1), so unseen items follow in popularity order instead of tying at zero (ties count against the target).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
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


@dataclass(frozen=True)
class ItemKNNConfig:
    span: int = 5  # j -> i counts when i follows j within `span` events of a user's training sequence
    decay: float = 1.0  # a window event `age` events before the newest votes with weight decay**age


Sequences = Callable[[], Iterable[np.ndarray]]  # the training part of every user's sequence, item indices


class _Baseline:
    """Common part: popularity shares from training counts, the Scorer attributes, `pick` from `scores`."""

    mask_token = 0
    device = torch.device("cpu")  # counts on the CPU: the catalogues they serve fit
    needs_sequences = False  # build_baseline hands the training sequences to those that say so

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
        N = items.shape[1]
        age = torch.arange(N - 1, -1, -1, device=items.device, dtype=torch.float64)  # (N,): 0 at the newest
        w = decayed(mask, self.decay)  # (B, N)
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


class ItemKNN(_Baseline):
    """Item-to-item nearest neighbours: score_i = sum over the window's events j of decay**age_j * sim(j, i), with
    sim(j, i) = c(j -> i) / sqrt(n_j n_i), c counting how often i follows j within `span` events in the training
    sequences and n the items' training counts. A model-free measure of what a window's older events say about
    the next item; items with no co-occurrence follow in popularity order."""

    needs_sequences = True

    def __init__(self, counts: Tensor, max_len: int, cfg: ItemKNNConfig, sequences: Sequences) -> None:
        super().__init__(counts, max_len)
        self.decay = cfg.decay
        self.sim_t = item_similarity(sequences(), counts, cfg.span).t().coalesce()  # [I+1, I+1]: sim(j, i)^T

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(items [B,N], votes [B,I+1] float64: each window item's summed weight), built once per batch for
        every item chunk `scores` is asked for."""
        B = items.shape[0]
        votes = torch.zeros(B, self.num_items + 1, dtype=torch.float64)
        rows = torch.arange(B)[:, None].expand_as(items)
        votes.index_put_((rows, items.cpu()), decayed(mask, self.decay).cpu(), accumulate=True)
        votes[:, 0] = 0.0
        return items, votes

    def scores(self, query: tuple[Tensor, Tensor], c0: int, c1: int) -> Tensor:
        items, votes = query
        sim = self.sim_t if c1 - c0 == self.num_items + 1 else self.sim_t.index_select(0, torch.arange(c0, c1))
        knn = torch.sparse.mm(sim, votes.t()).t().to(items.device)  # [B, C]: only this chunk's candidates
        return torch.where(knn > 0, 1.0 + knn, self.pop.to(items.device)[c0:c1].expand(len(items), -1))


def decayed(mask: Tensor, decay: float) -> Tensor:
    """[B, N] float64: decay**age at the window's events (age 0 = the newest position), 0 at pads."""
    N = mask.shape[1]
    age = torch.arange(N - 1, -1, -1, device=mask.device, dtype=torch.float64)
    return decay**age * mask


def item_similarity(seqs: Iterable[np.ndarray], counts: Tensor, span: int) -> Tensor:
    """Sparse [I+1, I+1] float64 COO: sim(j, i) = c(j -> i) / sqrt(n_j n_i) over pairs j = s[t], i = s[t+d],
    1 <= d <= span, of every sequence s (j == i pairs are kept: a repeat is a neighbour too)."""
    n = len(counts)
    keys = [s[:-d].astype(np.int64) * n + s[d:] for s in seqs for d in range(1, min(span, len(s) - 1) + 1)]
    if not keys:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64),
                                       (n, n))
    uniq, c = np.unique(np.concatenate(keys), return_counts=True)
    j, i = torch.from_numpy(uniq // n), torch.from_numpy(uniq % n)
    norm = torch.sqrt(counts.double()[j] * counts.double()[i]).clamp_min(1.0)
    return torch.sparse_coo_tensor(torch.stack([j, i]), torch.from_numpy(c).double() / norm, (n, n),
                                   check_invariants=True).coalesce()


BASELINES: Registry[type[_Baseline]] = Registry("baseline")
BASELINES.register("popularity", Popularity, PopularityConfig)
BASELINES.register("personal", Personal, PersonalConfig)
BASELINES.register("repeat_last", RepeatLast, RepeatLastConfig)
BASELINES.register("item_knn", ItemKNN, ItemKNNConfig)


def baseline_config(name: str, args: dict[str, Any]) -> Any:
    """The baseline's config dataclass built from `args` (unknown keys and wrong types are ConfigErrors)."""
    from longrec.config import from_dict  # config imports this module lazily, to validate

    entry = BASELINES.get(name)
    return from_dict(entry.config, args, "model.baseline_args") if entry.config else None  # type: ignore[type-var]


def build_baseline(name: str, counts: Tensor, max_len: int, args: dict[str, Any],
                   sequences: Sequences | None = None) -> _Baseline:
    """A registered baseline; `args` is validated against its config dataclass. counts [I+1]: training counts;
    sequences: the training sequences, for the baselines that need them (item_knn)."""
    cls, cfg = BASELINES.get(name).obj, baseline_config(name, args)
    if not cls.needs_sequences:
        return cls(counts, max_len, cfg)  # type: ignore[call-arg]
    if sequences is None:
        raise ConfigError(f"baseline {name} is computed from the training sequences, and none were given")
    return cls(counts, max_len, cfg, sequences)  # type: ignore[call-arg]
