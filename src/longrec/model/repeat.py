"""The repeat head: a learned score bonus for the items already in the user's window (model.repeat=true).

On repeat-heavy logs (check-ins, listening, tutoring) the best cheap predictor is the user's own item counts, and a
model that must rebuild an item's exact identity from a D-wide state misses it. The head adds to the score of each
item i of the window, at position t,

    b_{t,i} = SCALE (w_age[bucket(t - m_i)] + w_count[bucket(c_{t,i})] + w_gap[bucket(τ_t - τ_{m_i})]
                     + Σ_g w_decay[g] log Σ_{j <= t: item j = i} γ_g^(t - j) + u · h_t),

m_i the item's last occurrence up to t, c_{t,i} its count there, τ the timestamps (the gap term only when the log
has them), bucket = floor(log2(1 + x)) capped. The decayed counts (model.repeat_decays = (γ_1, ...), none by
default) are the personal-frequency baseline's score: with them the head can rank the window as the user's
recency-decayed counts do, which the age and count buckets of the last occurrence alone cannot. The tables, u and
w_decay start at zero: the head starts as the plain model. Items outside the window get no bonus. Each event's
count so far, decayed counts and next occurrence come from one sort per row; the bonus is then computed for every
(scored position, earlier position) pair: O(T N) elementwise per row for T scored positions, with no D factor.
Training scores every position (T = N) or the newest `train.last_targets`; evaluation the last one (T = 1, O(N)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from longrec.model.time import BUCKETS as TIME_BUCKETS
from longrec.model.time import bucket as time_bucket
from longrec.model.time import floor_log2

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


class Runs(NamedTuple):
    """A row-wise sort that puts like real items together in position order: order [B,N] (sorted entry -> position),
    spos [B,N] (the positions in that order), same [B,N-1] (sorted entry j+1 continues entry j's item), run [B,N]
    (the run, one item's events or one pad, that each sorted entry belongs to)."""

    order: Tensor
    spos: Tensor
    same: Tensor
    run: Tensor


def runs(items: Tensor, real: Tensor) -> Runs:
    """items [B,N], real [B,N] -> Runs: the one sort per row that occurrences and log_decayed_counts share."""
    B, N = items.shape
    pos = torch.arange(N, device=items.device).expand(B, N)
    key = torch.where(real, items, -1 - pos)  # pads and non-real events: distinct keys below every item id
    # like items together, in position order: a stable sort of key, as positions break the ties (ONNX's is not stable)
    order = torch.argsort(key * N + pos, dim=1)
    sk, spos = key.gather(1, order), pos.gather(1, order)
    same = sk[:, 1:] == sk[:, :-1]
    run = torch.cat([torch.zeros(B, 1, dtype=torch.long, device=items.device), (~same).long().cumsum(1)], 1)
    return Runs(order, spos, same, run)


def occurrences(items: Tensor, real: Tensor, sorted_runs: Runs | None = None) -> tuple[Tensor, Tensor]:
    """items [B,N], real [B,N] bool -> (count [B,N]: occurrences of items[b,m] among the real events at positions
    <= m; next [B,N]: the position of its next real occurrence after m, N if none). Non-real entries: count 0,
    next N. One sort per row (`runs`, or the given one): O(N log N). Written in ops that export to ONNX (no stable
    sort, no cummax)."""
    B, N = items.shape
    pos = torch.arange(N, device=items.device).expand(B, N)
    order, spos, same, run = sorted_runs if sorted_runs is not None else runs(items, real)
    nxt_sorted = torch.where(same, spos[:, 1:], N)
    nxt_sorted = torch.cat([nxt_sorted, torch.full((B, 1), N, dtype=nxt_sorted.dtype, device=items.device)], 1)
    j = torch.arange(N, device=items.device).expand(B, N)
    start = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=items.device), ~same], 1)  # (B, N): a run begins
    # where each run begins, scattered by run (column N takes the entries that begin none, and is dropped)
    begin = torch.zeros(B, N + 1, dtype=j.dtype, device=items.device).scatter(1, torch.where(start, run, N), j)
    rank = j - begin.gather(1, run) + 1  # 1-based place of the entry within its item's run
    count = torch.zeros_like(pos).scatter_(1, order, rank)
    nxt = torch.zeros_like(pos).scatter_(1, order, nxt_sorted)
    return torch.where(real, count, 0), torch.where(real, nxt, N)


def log_decayed_counts(items: Tensor, real: Tensor, log_gamma: Tensor, sorted_runs: Runs | None = None) -> Tensor:
    """items [B,N], real [B,N], log_gamma [G] (< 0) -> [B,N,G]: log Σ_{j <= m, real, item j = item m} γ^(m - j),
    the decayed count of item m's occurrences up to m (0 where not real). Per item run of the sorted row, a
    logcumsumexp of -j log γ (float64; each run is lifted above all earlier runs of the row so that they vanish
    from its sums, never a positive exponent outside the log), then + m log γ."""
    B, N = items.shape
    order, spos, _, run = sorted_runs if sorted_runs is not None else runs(items, real)
    lg = log_gamma.to(torch.float64)
    v = -spos[..., None].double() * lg  # (B, N, G), in [0, N |log γ|]
    lift = float(N) * float(-lg.min()) + 64.0 if lg.numel() else 0.0  # > the spread of v: earlier runs underflow
    acc = torch.logcumsumexp(v + lift * run[..., None].double(), dim=1) - lift * run[..., None].double()
    sorted_ld = acc + spos[..., None].double() * lg  # (B, N, G) in sorted order
    out = torch.zeros_like(sorted_ld).scatter_(1, order[..., None].expand_as(sorted_ld), sorted_ld)
    return torch.where(real[..., None], out, 0.0).to(log_gamma.dtype)


def _log2_bucket(x: Tensor, n: int) -> Tensor:
    return floor_log2(1.0 + x.float().clamp(min=0)).clamp(max=n - 1).long()


class RepeatHead(nn.Module):
    def __init__(self, dim: int, decays: tuple[float, ...] = ()) -> None:
        super().__init__()
        self.w_age = nn.Parameter(torch.zeros(AGE_BUCKETS))
        self.w_count = nn.Parameter(torch.zeros(COUNT_BUCKETS))
        self.w_gap = nn.Parameter(torch.zeros(TIME_BUCKETS))
        self.u = nn.Parameter(torch.zeros(dim))
        # no parameter without decays: runs saved before the decayed counts load unchanged
        self.register_buffer("log_gamma", torch.tensor(decays).log() if decays else None, persistent=False)
        self.w_decay = nn.Parameter(torch.zeros(len(decays))) if decays else None

    def forward(self, items: Tensor, mask: Tensor, h: Tensor, times: Tensor | None = None) -> Slots:
        """The newest T positions: items [B,N], mask [B,N], h [B,T,D] (T <= N: the encoder output at positions
        N-T..N-1), times [B,N] seconds or None -> Slots [B,T,N]. O(B N log N + B T N) memory and time: T = N for
        full training windows, T < N for training on the newest targets only (train.last_targets), T = 1 to
        score (`last`)."""
        B, N = items.shape
        T = h.shape[1]
        real = mask & (items > 0)
        sorted_runs = runs(items, real)  # one sort per row, shared with the decayed counts
        count, nxt = occurrences(items, real, sorted_runs)  # (B, N): the count of item m up to m; its next copy after m
        t = torch.arange(N - T, N, device=items.device)[None, :, None]  # (1, T, 1)
        m = torch.arange(N, device=items.device)[None, None, :]  # (1, 1, N)
        # m is the item's last occurrence up to t: m <= t < its next copy; its count up to t is then its count at m
        valid = real[:, None, :] & (m <= t) & (t < nxt[:, None, :])  # (B, T, N)
        age = (t - m).clamp(min=0)  # (1, T, N)
        gap = None
        if times is not None:
            tt = times.to(torch.float64).masked_fill(~mask, float("nan"))
            gap = tt[:, N - T:, None] - tt[:, None, :]  # (B, T, N): seconds since the item's last event
        slots = self._slots(items[:, None, :], valid, age, count[:, None, :], gap, h)
        lg, w = self.log_gamma, self.w_decay
        if not isinstance(lg, Tensor) or w is None:
            return slots
        # Σ_g w_g (log D_g(m) + (t - m) log γ_g): the G axis is summed before the (T, N) pairs are formed
        ld = log_decayed_counts(items, real, lg, sorted_runs) @ w  # (B, N)
        decay = ld[:, None, :] + age * (lg @ w)  # (B, T, N)
        return Slots(slots.item, torch.where(valid, slots.bias + SCALE * decay, 0.0))

    def last(self, items: Tensor, mask: Tensor, h: Tensor, times: Tensor | None = None) -> Slots:
        """The last position only: h [B,D] -> Slots with T = 1. O(B N log N) time, O(B N) memory: for long
        evaluation windows."""
        return self(items, mask, h[:, None], times)

    def _slots(self, item: Tensor, valid: Tensor, age: Tensor, count: Tensor, gap: Tensor | None,
               h: Tensor) -> Slots:
        """item [B,1,N], valid/age/count/gap [B or 1,T,N], h [B,T,D] -> Slots (bias 0 and item 0 where invalid)."""
        bias = self.w_age[_log2_bucket(age, AGE_BUCKETS)] + self.w_count[_log2_bucket(count - 1, COUNT_BUCKETS)]
        if gap is not None:
            bias = bias + self.w_gap[time_bucket(gap)]
        bias = SCALE * (bias + (h @ self.u)[:, :, None])  # (B, T, N): + the state's propensity to repeat
        return Slots(torch.where(valid, item, 0), torch.where(valid, bias, 0.0))
