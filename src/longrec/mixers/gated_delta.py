"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025): the delta rule with a data-dependent decay per head.

Per head, with q, k L2-normalised (after a short causal conv and SiLU, as in the paper), β_t = σ(w_β · x_t) and
α_t = exp(-exp(A) softplus(w_α · x_t + dt_bias)) (Mamba2's parametrisation, as the paper's code):
  S_t = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T,   o_t = S_t^T q_t / √d_k   (state [K, V]: ops/delta),
then y = W_o(swish(W_g x) ⊙ RMSNorm(o)) with the norm per head. The conv's step state is its last kernel-1 inputs;
pads enter it as zeros, exactly like the events before the first one. Pads get log α = 0, β = 0 and k = v = 0, so
the state passes through them unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.errors import ConfigError
from longrec.mixers.base import MIXERS, MixerState, StatefulOpMixer, op_backend
from longrec.mixers.gla import GATED_OP_BACKENDS, gated_head_norm, head_width
from longrec.ops.delta import gated_delta_rule


@dataclass(frozen=True)
class GatedDeltaConfig:
    conv: int = 4  # width of the causal depthwise conv (then SiLU) over q, k, v (the paper: 4); 0 = SiLU only
    a_max: float = 16.0  # exp(A) initialised uniform in (0, a_max) per head (the paper's code: 16)
    dt_min: float = 0.001  # softplus(dt_bias) initialised log-uniform in [dt_min, dt_max] (Mamba2; the paper's code)
    dt_max: float = 0.1
    eps: float = 1e-5  # per-head RMS norm
    backend: str = "chunked"  # gated_delta_rule: chunked (WY form, default) | loop (oracle; or naive) | script


class GatedDeltaMixer(StatefulOpMixer):
    """Gated delta rule over left-padded windows; step() is one state update, O(H d²) per event."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: GatedDeltaConfig) -> None:
        super().__init__()  # dropout: no attention matrix to drop from; the block drops the mixer output
        if cfg.conv < 0 or not 0 < cfg.dt_min <= cfg.dt_max or cfg.a_max <= 0:
            raise ConfigError(f"config: gated_delta needs conv >= 0, 0 < dt_min <= dt_max and a_max > 0, got {cfg}")
        self.heads, self.eps, self.kernel = heads, cfg.eps, cfg.conv
        d = self.head_dim = head_width(dim, heads, "gated_delta")
        self.backend = op_backend(cfg.backend, GATED_OP_BACKENDS)
        self.proj = nn.Linear(dim, 4 * dim + 2 * heads, bias=False)  # q, k, v, output gate; α's and β's logits
        # the depthwise conv's taps [kernel, 3D], oldest first, as shifted products: nn.Conv1d with groups = 3D runs
        # one slow kernel per channel in float64 on CPU (13 s for one tiny preset forward on two busy threads)
        bound = 1 / math.sqrt(cfg.conv) if cfg.conv else 0.0  # nn.Conv1d's default init for a depthwise conv
        self.conv = nn.Parameter(torch.empty(cfg.conv, 3 * dim).uniform_(-bound, bound)) if cfg.conv else None
        # 1-D, so make_optimizer applies no weight decay (as the paper's code marks them)
        self.A_log = nn.Parameter(torch.log(torch.rand(heads).clamp_min(1e-4) * cfg.a_max))  # (H,)
        dt = torch.exp(torch.rand(heads) * math.log(cfg.dt_max / cfg.dt_min) + math.log(cfg.dt_min))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (H,): softplus(dt_bias) = dt
        self.norm_weight = nn.Parameter(torch.ones(d))  # the norm's affine weight, shared by the heads
        self.out = nn.Linear(dim, dim, bias=False)

    def _run(self, x: Tensor, mask: Tensor, state: MixerState | None, final: bool) -> tuple[Tensor, MixerState]:
        """x [B,N,D], mask [B,N], state (as init_state) or None = empty -> (y [B,N,D] zero at pads, state after the
        window; S only when `final`)."""
        B, N, D = x.shape
        H, d = self.heads, self.head_dim
        m = mask[..., None].to(x.dtype)  # (B, N, 1)
        qkv, r, ab = self.proj(x).split([3 * D, D, 2 * H], dim=-1)  # (B, N, 3D), (B, N, D), (B, N, 2H)
        new: MixerState = {}
        qkv = qkv * m  # pads enter the conv as zeros, like the events before the first
        if self.conv is not None:
            before = state["conv"] if state is not None else qkv.new_zeros(B, self.kernel - 1, 3 * D)
            window = torch.cat([before, qkv], dim=1)  # (B, kernel-1+N, 3D)
            new["conv"] = window[:, N:]  # the last kernel-1 inputs
            qkv = sum(w * window[:, i : i + N] for i, w in enumerate(self.conv.unbind(0)))  # (B, N, 3D), causal
        q, k, v = (F.silu(qkv) * m).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)  # 3 x (B, H, N, d)
        q, k = F.normalize(q, dim=-1) / math.sqrt(d), F.normalize(k, dim=-1)
        a, b = ab.transpose(1, 2).chunk(2, dim=1)  # (B, H, N) each
        real = mask[:, None, :].to(x.dtype)  # (B, 1, N)
        g = -self.A_log.exp()[:, None] * F.softplus(a + self.dt_bias[:, None]) * real  # log α, 0 at pads
        beta = torch.sigmoid(b) * real  # 0 at pads: no write
        S0 = state["S"] if state is not None else None
        o, S = gated_delta_rule(q, k, v, g, beta, S0, final, self.backend)  # (B, H, N, d)
        if S is not None:
            new["S"] = S
        return self.out(gated_head_norm(o, r, self.norm_weight, self.eps)) * m, new


    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        H, d, dt = self.heads, self.head_dim, self.out.weight.dtype
        state = {"S": torch.zeros(batch, H, d, d, device=device, dtype=dt)}
        if self.conv is not None:
            state["conv"] = torch.zeros(batch, self.kernel - 1, 3 * H * d, device=device, dtype=dt)
        return state


MIXERS.register("gated_delta", GatedDeltaMixer, GatedDeltaConfig)
