"""The repeat head: a learned score bonus for the items already in the user's window (model.repeat=true).

On repeat-heavy logs (check-ins, listening, tutoring) the best cheap predictor is the user's own item counts, and a
model that must rebuild an item's exact identity from a D-wide state misses it. The head adds to the score of each
item i of the window, at position t,

    b_{t,i} = SCALE (w_age[bucket(t - m_i)] + w_count[bucket(c_{t,i})] + w_gap[bucket(τ_t - τ_{m_i})] + u · h_t),

m_i the item's last occurrence up to t, c_{t,i} its count there, τ the timestamps (the gap term only when the log
has them), bucket = floor(log2(1 + x)) capped. The tables and u start at zero: the head starts as the plain model.
Items outside the window get no bonus. Computed for every (position, earlier position) pair: O(N²) elementwise per
row, with no D factor; evaluation needs the last position only (O(N)).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longrec.model.time import BUCKETS as TIME_BUCKETS
from longrec.model.time import bucket as time_bucket
from longrec.ops.window import last_occurrence

# The bonuses must reach the logits' scale (several units) in a few hundred steps, and Adam moves a parameter by
# about lr per step whatever its gradient: the head's parameters are scaled up in the forward, a learning-rate
# multiplier for the head alone (measured: unscaled, a 15-minute NYC run sat below the plain model)
SCALE = 32.0
AGE_BUCKETS = 16  # events ago: 0, 1, 2-3, 4-7, ... 2^14 and more
COUNT_BUCKETS = 12  # occurrences in the window: 1, 2-3, 4-7, ... 2^11 and more


@dataclass(frozen=True)
class Slots:
    """The window items that get a bonus at each scored position: item [B,T,N] ids (0 where invalid), bias
    [B,T,N] (0 where invalid); T = N for training (every position), T = 1 for evaluation (the last one)."""

    item: Tensor
    bias: Tensor


def _log2_bucket(x: Tensor, n: int) -> Tensor:
    return torch.log2(1.0 + x.float().clamp(min=0)).floor().clamp(max=n - 1).long()


class RepeatHead(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w_age = nn.Parameter(torch.zeros(AGE_BUCKETS))
        self.w_count = nn.Parameter(torch.zeros(COUNT_BUCKETS))
        self.w_gap = nn.Parameter(torch.zeros(TIME_BUCKETS))
        self.u = nn.Parameter(torch.zeros(dim))

    def forward(self, items: Tensor, mask: Tensor, h: Tensor, times: Tensor | None = None) -> Slots:
        """Every position: items [B,N], mask [B,N], h [B,N,D], times [B,N] seconds or None -> Slots with T = N.
        O(B N²) memory: for training windows."""
        B, N = items.shape
        real = mask & (items > 0)
        same = (items[:, :, None] == items[:, None, :]) & real[:, :, None] & real[:, None, :]  # (B, m, m')
        upto = same.to(torch.int32).cumsum(-1)  # (B, m, t): occurrences of item m among positions <= t
        count = upto.transpose(1, 2)  # (B, t, m): count of item m up to t
        at_m = upto.diagonal(dim1=1, dim2=2)[:, None, :]  # (B, 1, m): its count up to m itself
        idx = torch.arange(N, device=items.device)
        # m is the item's last occurrence up to t: m <= t and no later copy in (m, t]
        valid = real[:, None, :] & (idx[None, :, None] >= idx[None, None, :]) & (count == at_m)  # (B, t, m)
        age = (idx[:, None] - idx[None, :]).clamp(min=0)[None]  # (1, t, m)
        gap = None
        if times is not None:
            tt = times.to(torch.float64).masked_fill(~mask, float("nan"))
            gap = tt[:, :, None] - tt[:, None, :]  # (B, t, m): seconds since the item's last event
        return self._slots(items[:, None, :], valid, age, count, gap, h)

    def last(self, items: Tensor, mask: Tensor, h: Tensor, times: Tensor | None = None) -> Slots:
        """The last position only: h [B,D] -> Slots with T = 1. O(B (N + I)) memory: for long evaluation windows."""
        B, N = items.shape
        real = mask & (items > 0)
        width = int(items.max()) + 1 if items.numel() else 1
        counts = torch.zeros(B, width, dtype=torch.long, device=items.device)
        counts.scatter_add_(1, items, real.long())
        valid = last_occurrence(items, real)  # (B, N): the item's last occurrence in the window
        age = (N - 1 - torch.arange(N, device=items.device)).expand(B, N)[:, None]  # (B, 1, N)
        gap = None
        if times is not None:
            tt = times.to(torch.float64).masked_fill(~mask, float("nan"))
            gap = (tt[:, -1:] - tt)[:, None]  # (B, 1, N)
        return self._slots(items[:, None, :], valid[:, None], age, counts.gather(1, items)[:, None], gap, h[:, None])

    def _slots(self, item: Tensor, valid: Tensor, age: Tensor, count: Tensor, gap: Tensor | None,
               h: Tensor) -> Slots:
        """item [B,1,N], valid/age/count/gap [B or 1,T,N], h [B,T,D] -> Slots (bias 0 and item 0 where invalid)."""
        bias = self.w_age[_log2_bucket(age, AGE_BUCKETS)] + self.w_count[_log2_bucket(count - 1, COUNT_BUCKETS)]
        if gap is not None:
            bias = bias + self.w_gap[time_bucket(gap)]
        bias = SCALE * (bias + (h @ self.u)[:, :, None])  # (B, T, N): + the state's propensity to repeat
        return Slots(torch.where(valid, item, 0), torch.where(valid, bias, 0.0))
