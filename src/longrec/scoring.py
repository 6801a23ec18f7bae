"""One scorer: catalogue scores in item chunks, PAD and history masking, ranks and top-k.

Evaluation, serving and the non-neural baselines all rank through this module. A `Scorer` turns a batch of
left-padded history windows into a query once (`encode`), then scores any item range of the catalogue from it
(`scores`), so no caller ever holds more than [B, chunk] scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from longrec.metrics import ranks_from_scores

Banned = tuple[Tensor, Tensor]  # (rows, items): pairs scored -inf (a user's history), int64 [M] each


class Scorer(Protocol):
    """Scores the catalogue (items 1..num_items; column 0 is PAD) for a batch of history windows.

    max_len:    the window it reads (eval batches hold the newest max_len events)
    mask_token: id appended after the window (BERT4Rec's cloze token), 0 for none
    device:     where its batches go and its scores live
    """

    num_items: int
    max_len: int
    mask_token: int

    @property
    def device(self) -> torch.device: ...

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> Any:
        """items [B,N] int64 left-padded, mask [B,N] bool, times [B,N] float64 seconds or None -> an opaque query
        for `scores` / `pick`."""
        ...

    def scores(self, query: Any, c0: int, c1: int) -> Tensor:
        """[B, c1-c0] scores of items c0..c1-1 (float32 or float64); higher ranks first."""
        ...

    def pick(self, query: Any, cands: Tensor) -> Tensor:
        """cands [B,C] item ids -> [B,C] their scores (sampled ranking)."""
        ...


@dataclass(frozen=True)
class EncoderQuery:
    """h [B,D], the encoder output at the newest position; with a repeat head, its bonus for the window's items:
    item [B,N] ids (0 = none) and bias [B,N]."""

    h: Tensor
    item: Tensor | None = None
    bias: Tensor | None = None


class EncoderScorer:
    """A SeqEncoder's scores: score_i = h . table_i, plus the repeat head's bonus for the window's items when the
    model has one."""

    def __init__(self, model: Any, mask_token: int = 0) -> None:
        self.model = model
        self.num_items: int = model.num_items
        self.max_len: int = model.max_len
        self.mask_token = mask_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> EncoderQuery:
        self.model.eval()
        h = self.model(items, mask, times)[:, -1]  # [B, D]
        if self.model.repeat is None:
            return EncoderQuery(h)
        slots = self.model.repeat.last(items, mask, h, times)
        return EncoderQuery(h, slots.item[:, 0], slots.bias[:, 0])

    def scores(self, query: EncoderQuery, c0: int, c1: int) -> Tensor:
        s = (query.h @ self.model.item_table()[c0:c1].T).float()  # [B, C]
        if query.item is not None and query.bias is not None:
            inside = (query.item >= c0) & (query.item < c1) & (query.item > 0)
            rows = torch.arange(len(query.h), device=s.device)[:, None].expand_as(query.item)
            s.index_put_((rows[inside], query.item[inside] - c0), query.bias[inside].float(), accumulate=True)
        return s

    def pick(self, query: EncoderQuery, cands: Tensor) -> Tensor:
        table = self.model.item_table()
        s = torch.bmm(table[cands], query.h[:, :, None])[:, :, 0].float()  # [B, C]
        if query.item is not None and query.bias is not None:
            hit = (cands[:, :, None] == query.item[:, None, :]) & (query.item[:, None, :] > 0)  # [B, C, N]
            s = s + (hit * query.bias[:, None, :].float()).sum(-1)
        return s


def _masked_chunk(scorer: Scorer, query: Any, c0: int, c1: int, banned: Banned) -> Tensor:
    """Scores of items c0..c1-1 with PAD and the banned (row, item) pairs at -inf."""
    s = scorer.scores(query, c0, c1)
    if c0 == 0:
        s[:, 0] = float("-inf")  # PAD
    brow, bitem = banned
    inside = (bitem >= c0) & (bitem < c1)
    s[brow[inside], bitem[inside] - c0] = float("-inf")
    return s


def ranks(scorer: Scorer, query: Any, targets: Tensor, banned: Banned, chunk: int) -> Tensor:
    """rank = 1 + #{j != target : score_j >= score_target} over items 1..I, scoring `chunk` items at a time.

    targets [B] in 1..I; a banned target scores -inf (it ranks after every unbanned item) and a NaN target ranks
    last. With several chunks the target's score comes from the same chunk computation as the others' (a first
    pass over the chunks that hold targets), so ties and NaNs count as `ranks_from_scores` counts them."""
    n = scorer.num_items + 1
    if n <= chunk:  # the whole catalogue in one chunk: one pass
        return ranks_from_scores(_masked_chunk(scorer, query, 0, n, banned), targets)
    B = len(targets)
    target_score: Tensor | None = None
    higher = torch.zeros(B, dtype=torch.long, device=targets.device)
    rows = torch.arange(B, device=targets.device)
    for pass_ in ("targets", "count"):
        for c0 in range(0, n, chunk):
            c1 = min(c0 + chunk, n)
            here = (targets >= c0) & (targets < c1)
            if pass_ == "targets" and not here.any():
                continue
            s = _masked_chunk(scorer, query, c0, c1, banned)  # [B, C]
            if target_score is None:
                target_score = torch.full((B,), float("nan"), dtype=s.dtype, device=s.device)
            if pass_ == "targets":
                target_score[here] = s[rows[here], targets[here] - c0]
                continue
            s[rows[here], targets[here] - c0] = float("nan")  # the target itself does not count
            higher += (s >= target_score[:, None]).sum(-1)
    assert target_score is not None
    return torch.where(target_score.isnan(), n, 1 + higher)


def top_k(scorer: Scorer, query: Any, k: int, banned: Banned, chunk: int) -> tuple[Tensor, Tensor]:
    """The k best items per row, best first: (scores [B,k'], item ids [B,k']), k' = min(k, I); PAD and banned
    items score -inf and callers drop those. Chunk by chunk, keeping a running top-k."""
    n = scorer.num_items + 1
    k = min(k, n - 1)
    best_v: Tensor | None = None
    best_i: Tensor | None = None
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        s = _masked_chunk(scorer, query, c0, c1, banned)
        v, i = s.topk(min(k, c1 - c0), dim=-1)
        i = i + c0
        if best_v is not None and best_i is not None:
            both = torch.cat([best_v, v], dim=1)
            v, pos = both.topk(min(k, both.shape[1]), dim=-1)
            i = torch.cat([best_i, i], dim=1).gather(1, pos)
        best_v, best_i = v, i
    assert best_v is not None and best_i is not None
    return best_v, best_i


def banned_pairs(lists: list[Tensor | None], device: torch.device) -> Banned:
    """(rows, items) from one optional item-id tensor per row (e.g. each user's seen items)."""
    rows = [torch.full((len(t),), r, dtype=torch.long) for r, t in enumerate(lists) if t is not None]
    items = [t.long().cpu() for t in lists if t is not None]
    if not rows:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    return torch.cat(rows).to(device), torch.cat(items).to(device)

