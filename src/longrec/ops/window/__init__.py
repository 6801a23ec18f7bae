"""Per-item facts of a left-padded window: where each item last occurs (the repeat head, the counted baselines)."""

from __future__ import annotations

import torch
from torch import Tensor


def last_occurrence(items: Tensor, mask: Tensor) -> Tensor:
    """items [B,N] int64, mask [B,N] bool -> [B,N] bool: True where a real event is its item's last in the row."""
    B, N = items.shape
    pos = torch.arange(N, device=items.device).expand(B, N)
    width = int(items.max()) + 1 if items.numel() else 1
    last = torch.full((B, width), -1, dtype=torch.long, device=items.device)
    last.scatter_reduce_(1, items, torch.where(mask, pos, -1), reduce="amax")  # later positions win
    return mask & (last.gather(1, items) == pos)
