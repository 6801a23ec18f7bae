"""The time channel: the gap since the previous event, log2-bucketed, as a learned embedding added to each event.

A log's timestamps (seconds, float64) travel beside the items; pads and events without a predecessor in the
model's input get bucket 0, whose embedding is zero. Gaps are measured inside the input window (its first
event has no predecessor), so a window's forward and the same events streamed one `step` at a time agree.
"""

from __future__ import annotations

import torch
from torch import Tensor

BUCKETS = 32  # bucket b >= 1 holds gaps in [2^(b-1) - 1, 2^b - 1) seconds; the last one everything above ~34 years


def gap_buckets(times: Tensor, prev: Tensor | None = None) -> Tensor:
    """times [B,N] float64 seconds (NaN = pad or unknown), prev [B] the time before column 0 (NaN = none)
    -> [B,N] int64 in 0..BUCKETS-1: 1 + min(floor(log2(1 + gap)), BUCKETS - 2), or 0 without both times."""
    B = times.shape[0]
    before = prev[:, None] if prev is not None else times.new_full((B, 1), float("nan"))
    return bucket(times - torch.cat([before, times[:, :-1]], dim=1))  # (B, N): NaN where either time is missing


def bucket(gap: Tensor) -> Tensor:
    """Gaps in seconds, any shape (NaN = unknown) -> int64 buckets: 0 unknown, else 1 + floor(log2(1 + gap)) capped
    at BUCKETS - 1 (negative gaps count as 0)."""
    b = 1 + floor_log2(1 + gap.clamp(min=0)).clamp(max=BUCKETS - 2)
    return torch.where(gap.isnan(), 0, b.nan_to_num(0)).long()


def floor_log2(x: Tensor) -> Tensor:
    """floor(log2(x)) for x >= 1 (NaN stays NaN), exact at the powers of two: log2's rounding is corrected by one
    comparison each side, because the ONNX export computes log2 as ln(x) / ln(2), which puts ln(2) / ln(2) just
    below 1 (a gap of one second would fall a bucket short)."""
    e = torch.log2(x).floor()
    return e - (2.0**e > x).to(e.dtype) + (2.0 ** (e + 1) <= x).to(e.dtype)
