"""Hydra attention (Bolya et al., 2022; HydraRec): D heads of size 1 with a cosine kernel, O(N D)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState


@dataclass(frozen=True)
class HydraConfig:
    causal: bool = False  # False: bidirectional (HydraRec on the BERT4Rec shell, no step()); True: prefix sums


class HydraMixer(nn.Module):
    """q^ = q / |q|, k^ = k / |k| over D; global y_i = q^_i * sum_m k^_m * v_m (elementwise, real m only),
    causal y_t = q^_t * sum_{m<=t} k^_m * v_m. With heads of size 1 the linear-attention state is a [B,D]
    vector and the causal op is a prefix sum: a cumsum here, as a chunked matmul kernel would cost O(N C D)."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: HydraConfig) -> None:
        super().__init__()  # heads: always D heads of size 1; dropout: the block drops the mixer output
        self.causal = cfg.causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [..., D] -> q^, k^, v [..., D]."""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def _attend(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x [B,N,D], mask [B,N] -> (y [B,N,D], kv [B,N,D]: the prefix (causal) or window (global) sums)."""
        q, k, v = self._features(x)  # (B, N, D)
        kv = k * v * mask[..., None]  # pads are in no sum
        kv = kv.cumsum(1) if self.causal else kv.sum(1, keepdim=True)  # (B, N, D) or (B, 1, D)
        return self.out(q * kv) * mask[..., None], kv

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._attend(x, mask)[0]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() and the state after the window's last event (the last prefix sum)."""
        if not self.causal:
            raise ValueError("bidirectional hydra attention has no state to prefill")
        y, kv = self._attend(x, mask)
        return y, {"S": kv[:, -1]}

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        if not self.causal:
            return None
        return {"S": torch.zeros(batch, self.out.in_features, device=device, dtype=self.out.weight.dtype)}

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        q, k, v = self._features(x_t)  # (B, D)
        S = state["S"] + k * v
        return self.out(q * S), {"S": S}


MIXERS.register("hydra", HydraMixer, HydraConfig)
