"""Softmax self-attention (SASRec causal, BERT4Rec bidirectional) via scaled_dot_product_attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState


@dataclass(frozen=True)
class SoftmaxConfig:
    causal: bool = True  # False: bidirectional (BERT4Rec); no step()
    attn_dropout: float = -1.0  # dropout on attention weights; < 0 = the model's dropout


class SoftmaxMixer(nn.Module):
    """Multi-head softmax attention with a key-padding mask; step() keeps a growing KV cache."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: SoftmaxConfig) -> None:
        super().__init__()
        self.causal = cfg.causal
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.attn_dropout = cfg.attn_dropout if cfg.attn_dropout >= 0 else dropout

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        *lead, D = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.heads, D // self.heads).unbind(-3)  # 3 x (..., H, d)
        return q, k, v

    def _allowed(self, mask: Tensor) -> Tensor:
        """[B,1,N,N] which keys each query may attend to: real keys only, none from the future when causal."""
        N = mask.shape[1]
        allowed = mask[:, None, None, :]  # (B, 1, 1, N): real keys only
        i = torch.arange(N, device=mask.device)  # comparisons, not bool tril/eye: those do not run in onnxruntime
        if self.causal:
            allowed = allowed & (i[:, None] >= i[None, :])  # (N, N) lower triangle
        # A pad query has no real key; letting it see itself keeps softmax finite (its output is zeroed).
        return allowed | (i[:, None] == i[None, :])

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, N, D = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x))  # (B, H, N, d)
        p = self.attn_dropout if self.training else 0.0
        if bool(mask.all()):
            # No pads (full windows, as in long-history training): no mask tensor, so SDPA may take its flash
            # kernel; an explicit mask forces a slower one (10x at N = 16384 on an H200, docs/BENCHMARKS.md).
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self._allowed(mask), dropout_p=p)
        y = y.transpose(1, 2).reshape(B, N, D)
        return self.out(y) * mask[..., None]

    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """[B,H,N,N] softmax attention probabilities (rows of pads are zero)."""
        B, N, D = x.shape
        q, k, _ = (t.transpose(1, 2) for t in self._qkv(x))  # (B, H, N, d)
        allowed = self._allowed(mask)
        scores = (q @ k.transpose(-1, -2)) / (D // self.heads) ** 0.5
        return scores.masked_fill(~allowed, float("-inf")).softmax(-1) * mask[:, None, :, None]

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        if not self.causal:
            return None
        D, H = self.out.in_features, self.heads
        empty = torch.zeros(batch, H, 0, D // H, device=device, dtype=self.out.weight.dtype)
        return {"k": empty, "v": empty.clone(), "valid": torch.zeros(batch, 0, dtype=torch.bool, device=device)}

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() plus the KV cache of the window (pads kept as invalid slots)."""
        if not self.causal:
            raise ValueError("bidirectional softmax attention has no state to prefill")
        q, k, v = (t.transpose(1, 2) for t in self._qkv(x))  # (B, H, N, d)
        return self.forward(x, mask), {"k": k, "v": v, "valid": mask.clone()}

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        B, D = x_t.shape
        q, k, v = self._qkv(x_t)  # (B, H, d)
        ks = torch.cat([state["k"], k[:, :, None]], dim=2)  # (B, H, T+1, d)
        vs = torch.cat([state["v"], v[:, :, None]], dim=2)
        valid = torch.cat([state["valid"], torch.ones(B, 1, dtype=torch.bool, device=x_t.device)], dim=1)
        y = F.scaled_dot_product_attention(q[:, :, None], ks, vs, attn_mask=valid[:, None, None, :])
        return self.out(y.reshape(B, D)), {"k": ks, "v": vs, "valid": valid}


MIXERS.register("softmax", SoftmaxMixer, SoftmaxConfig)
