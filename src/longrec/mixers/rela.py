"""RecGRELA's token mixer: rotary-enhanced linear attention plus the Adaptive Rank Modulator (local conv and gate).

With a = LN(x) (the Block's norm): g = SiLU(W_g a); u = W_in a (the values); [q; k] = φ(W_qk u), φ = elu + 1;
attention_t = R_t φ(q_t) · Σ_m R_m φ(k_m) u_m^T / (φ(q_t) · Σ_m φ(k_m) + n ε) per head (rotary R over the full width,
positions from the mask, numerator only; n = number of summed events, so this is the published mean form);
c = SiLU(causal depthwise conv over u); y = W_out((attention + c) ⊙ g). Sums run over every real event (global, as
published) or over the prefix (causal, through causal_linear_attn; streams with a constant-size state).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState, positions
from longrec.ops.linear_attn import causal_linear_attn


@dataclass(frozen=True)
class RelaConfig:
    causal: bool = False  # False: attention over every real event, as published; True: prefix sums, streams
    kernel: int = 4  # width of the causal depthwise conv of the local branch (published: 4)
    rope_base: float = 10000.0  # rotary angle of channel pair i at position p: p · base^(-i / (D/2))
    eps: float = 1e-6  # added to the mean-normalised denominator φ(q)·mean φ(k), as published


def rotary(x: Tensor, pos: Tensor, base: float) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [..., D] by pos [...] · base^(-i/(D/2)); returns [..., D]."""
    half = x.shape[-1] // 2
    theta = base ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)  # (D/2,)
    angle = pos.to(x.dtype)[..., None] * theta  # (..., D/2)
    cos, sin = angle.cos(), angle.sin()
    re, im = x[..., 0::2], x[..., 1::2]  # (..., D/2)
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).flatten(-2)  # (..., D)


class RelaMixer(nn.Module):
    """Gated rotary-enhanced linear attention with a local conv branch; global or causal."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: RelaConfig) -> None:
        super().__init__()
        if dim % (2 * heads):
            raise ValueError(f"rela: dim ({dim}) must split into {heads} heads of an even size (rotary pairs)")
        if cfg.kernel < 1:
            raise ValueError(f"rela: kernel must be >= 1, got {cfg.kernel}")
        self.causal = cfg.causal
        self.heads, self.kernel, self.base, self.eps = heads, cfg.kernel, cfg.rope_base, cfg.eps
        self.gate = nn.Linear(dim, dim)  # W_g: the gated rank selector
        self.inp = nn.Linear(dim, dim)  # W_in: u, the values
        self.qk = nn.Linear(dim, 2 * dim)  # W_qk over u
        self.conv = nn.Conv1d(dim, dim, cfg.kernel, groups=dim)  # depthwise, made causal by left padding
        self.out = nn.Linear(dim, dim)

    def _split(self, t: Tensor) -> Tensor:
        B, N, D = t.shape
        return t.view(B, N, self.heads, D // self.heads).transpose(1, 2)  # (B, H, N, d)

    def _mix(self, a: Tensor, mask: Tensor, state: MixerState | None) -> tuple[Tensor, MixerState | None]:
        """a [B,N,D], mask [B,N] -> (y [B,N,D], state after the window); state None = the global form."""
        B, N, D = a.shape
        real = mask[..., None]  # (B, N, 1)
        u = self.inp(a).masked_fill(~real, 0.0)  # (B, N, D): pads never enter the sums or the conv window
        q, k = (F.elu(self.qk(u)) + 1.0).chunk(2, dim=-1)  # (B, N, D) each, > 0
        k = k.masked_fill(~real, 0.0)
        pos = positions(mask) + (state["count"][:, None] if state is not None else 0)  # (B, N)
        qr, kr = rotary(q, pos, self.base), rotary(k, pos, self.base)  # rotated before the split into heads
        qh, kh, qrh, krh, uh = (self._split(t) for t in (q, k, qr, kr, u))  # (B, H, N, d)
        new: MixerState | None = None
        if state is None:
            n = mask.sum(-1).clamp(min=1)[:, None]  # (B, 1); a row with no real event only has zeroed outputs
            num = qrh @ (krh.transpose(-1, -2) @ uh)  # (B, H, N, d)
            den = qh @ kh.sum(dim=2)[..., None]  # (B, H, N, 1)
            window = F.pad(u.transpose(1, 2), (self.kernel - 1, 0))  # (B, D, kernel-1+N)
        else:
            n = pos + 1
            num, S = causal_linear_attn(qrh, krh, uh, initial_state=state["S"], output_final_state=True)
            ones = torch.ones_like(uh[..., :1])  # (B, H, N, 1): the output is φ(q_t) · Σ_{m≤t} φ(k_m)
            den, z = causal_linear_attn(qh, kh, ones, initial_state=state["z"][..., None], output_final_state=True)
            window = torch.cat([state["u"], u.transpose(1, 2)], dim=-1)  # (B, D, kernel-1+N)
            assert S is not None and z is not None
            new = {"S": S, "z": z[..., 0], "count": state["count"] + mask.sum(-1), "u": window[..., N:]}
        att = num / (den + self.eps * n[:, None, :, None])  # (B, H, N, d)
        att = att.transpose(1, 2).reshape(B, N, D)
        local = F.silu(self.conv(window)).transpose(1, 2)  # (B, N, D)
        y = self.out((att + local) * F.silu(self.gate(a)))
        return y * real, new

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B,N,D] (the Block's LN(x)), mask [B,N] -> [B,N,D] (zero at pads)."""
        state = self._empty(x.shape[0], x.device) if self.causal else None
        return self._mix(x, mask, state)[0]

    def _empty(self, batch: int, device: torch.device) -> MixerState:
        D, H, dt = self.out.in_features, self.heads, self.out.weight.dtype
        return {
            "S": torch.zeros(batch, H, D // H, D // H, device=device, dtype=dt),  # Σ R φ(k) u^T
            "z": torch.zeros(batch, H, D // H, device=device, dtype=dt),  # Σ φ(k)
            "count": torch.zeros(batch, dtype=torch.long, device=device),  # real events so far: the next position
            "u": torch.zeros(batch, D, self.kernel - 1, device=device, dtype=dt),  # the conv's last kernel-1 inputs
        }

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        return self._empty(batch, device) if self.causal else None

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() of a left-padded window [B,N,D] plus the state after its last real event."""
        if not self.causal:
            raise ValueError("global rela has no state to prefill")
        y, state = self._mix(x, mask, self._empty(x.shape[0], x.device))
        assert state is not None
        return y, state

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        """x_t [B,D] -> (y_t [B,D], state): the causal form over one position, from the given state."""
        ones = torch.ones(x_t.shape[0], 1, dtype=torch.bool, device=x_t.device)
        y, new = self._mix(x_t[:, None], ones, state)
        assert new is not None
        return y[:, 0], new


MIXERS.register("rela", RelaMixer, RelaConfig)
