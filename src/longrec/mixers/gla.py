"""Gated linear attention (GLA, Yang et al., ICML 2024): a data-dependent decay per key channel and head.

S_t = diag(α_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / √d_k, log α_t = logsigmoid(W_2 W_1 x_t + b) / τ (a rank-16
projection, τ = 16, as in the paper), then y = W_o(swish(W_r x) ⊙ RMSNorm(o)) with the norm per head. Pads get
log α = 0 and k = v = 0: the state passes through them unchanged. Also home of what the gated mixers share (retention,
gated_delta): the per-head norm with its swish gate and the op-backend option.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.errors import ConfigError
from longrec.mixers.base import MIXERS, MixerState, StatefulOpMixer, op_backend
from longrec.ops.backend import Backend
from longrec.ops.gla import gated_linear_attn

GATED_OP_BACKENDS = (Backend.CHUNKED, Backend.LOOP, Backend.SCRIPT)  # their pure-torch ops: no fla backend yet


def head_width(total: float, heads: int, what: str) -> int:
    """The per-head width of `total` channels; a ConfigError unless they split evenly into whole heads."""
    if total < heads or total != int(total) or int(total) % heads:
        raise ConfigError(f"config: the {what} width ({total:g}) must split evenly into {heads} heads")
    return int(total) // heads


def gated_head_norm(o: Tensor, gate: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    """RMS-normalise each head's output over its channels (times `weight` [V] if given), then gate by swish:
    o [B,H,N,V], gate [B,N,H*V] -> [B,N,H*V]. RetNet's group norm, GLA's and Gated DeltaNet's FusedRMSNormGated; the
    norm makes the output blind to the scale of o, so the ops need no normaliser."""
    B, H, N, V = o.shape
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        o = o * weight
    return F.silu(gate) * o.transpose(1, 2).reshape(B, N, H * V)  # (B, N, H*V)


@dataclass(frozen=True)
class GLAConfig:
    expand_k: float = 0.5  # key width = expand_k * dim, value width = dim (the paper: 0.5, a D/2 x D state a layer)
    gate_rank: int = 16  # rank of the decay's projection x -> gate_rank -> keys (the paper: 16)
    tau: float = 16.0  # log α = logsigmoid(·) / τ; τ = 16 (the paper) keeps α near 1: ≈ 0.96 at init, memory ≈ 23
    eps: float = 1e-5  # per-head RMS norm
    backend: str = "chunked"  # gated_linear_attn: chunked (torch, default) | loop (the oracle; or naive) | script


class GLAMixer(StatefulOpMixer):
    """Gated linear attention over left-padded windows; step() is one state update, O(H K V) per event."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: GLAConfig) -> None:
        super().__init__()  # dropout: no attention matrix to drop from; the block drops the mixer output
        if cfg.gate_rank < 1 or cfg.tau <= 0:
            raise ConfigError(f"config: gla needs gate_rank >= 1 and tau > 0, got {cfg}")
        self.heads, self.tau, self.eps = heads, cfg.tau, cfg.eps
        self.head_k = head_width(cfg.expand_k * dim, heads, "gla key")
        self.head_v = head_width(dim, heads, "gla value")
        self.backend = op_backend(cfg.backend, GATED_OP_BACKENDS)
        HK, HV = heads * self.head_k, heads * self.head_v
        self.proj = nn.Linear(dim, 2 * HK + 2 * HV, bias=False)  # q, k, v and the output gate r, as in the paper
        self.decay = nn.Sequential(nn.Linear(dim, cfg.gate_rank, bias=False), nn.Linear(cfg.gate_rank, HK))
        self.norm_weight = nn.Parameter(torch.ones(self.head_v))  # the norm's affine weight, shared by the heads
        self.out = nn.Linear(HV, dim, bias=False)

    def _run(self, x: Tensor, mask: Tensor, state: MixerState | None, final: bool) -> tuple[Tensor, MixerState]:
        """x [B,N,D], mask [B,N], state {"S": [B,H,K,V]} or None -> (y [B,N,D] zero at pads, {"S": the state after
        the window} when `final`, else {})."""
        B, N, D = x.shape
        H, K, V = self.heads, self.head_k, self.head_v
        m = mask[..., None].to(x.dtype)  # (B, N, 1)
        q, k, v, r = self.proj(x).split([H * K, H * K, H * V, H * V], dim=-1)  # (B, N, H*K or H*V)
        g = F.logsigmoid(self.decay(x)) / self.tau  # (B, N, H*K): log α per key channel
        q, k, v, g = (t.reshape(B, N, H, -1).transpose(1, 2) for t in (q * K**-0.5, k * m, v * m, g * m))  # (B,H,N,·)
        S0 = state["S"] if state is not None else None
        o, S = gated_linear_attn(q, k, v, g, S0, final, self.backend)  # (B, H, N, V)
        return self.out(gated_head_norm(o, r, self.norm_weight, self.eps)) * m, ({"S": S} if S is not None else {})


    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        dt = self.out.weight.dtype
        return {"S": torch.zeros(batch, self.heads, self.head_k, self.head_v, device=device, dtype=dt)}


MIXERS.register("gla", GLAMixer, GLAConfig)
