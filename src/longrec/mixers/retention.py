"""Multi-scale retention (RetNet, Sun et al. 2023; the retention channel of FuXi-Linear): a fixed decay per head.

S_t = γ_h S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / √d per head h, with RetNet's schedule γ_h = 1 - 2^(-5-h) (each head
remembers ≈ 2^(5+h) events), then y = W_o(swish(W_g x) ⊙ RMSNorm(o)), the norm per head without affine weights
(RetNet's group norm). The norm is blind to the scale of o, which is why RetNet's decay-sum normalisations are
left out. No xPos rotation: order enters through the decays (and the encoder's positions, if any). Pads get
log γ = 0 and k = v = 0, so the state passes through them unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longrec.errors import ConfigError
from longrec.mixers.base import MIXERS, MixerState, StatefulOpMixer, op_backend
from longrec.mixers.gla import GATED_OP_BACKENDS, gated_head_norm, head_width
from longrec.ops.gla import gated_linear_attn

# decay schedules: (heads, exp_min, exp_max) -> e [H], γ_h = 1 - 2^(-e_h)
SCHEDULES: dict[str, Callable[[int, float, float], Tensor]] = {
    "retnet": lambda H, lo, hi: lo + torch.arange(H, dtype=torch.float64),  # RetNet: 5, 6, 7, ... (exp_max unused)
    "spread": lambda H, lo, hi: torch.linspace(lo, hi, H, dtype=torch.float64),  # the same span for any H
}


@dataclass(frozen=True)
class RetentionConfig:
    schedule: str = "retnet"  # retnet: e_h = exp_min + h (RetNet); spread: e_h evenly over [exp_min, exp_max]
    exp_min: float = 5.0  # the fastest head: γ = 1 - 2^-5, memory ≈ 32 events (RetNet)
    exp_max: float = 8.0  # spread: the slowest head, γ = 1 - 2^-8 (≈ 256 events, past max_len = 200); H = 4 = RetNet
    learnable: bool = False  # True: learn each head's decay from the schedule's value (RetNet keeps them fixed)
    eps: float = 1e-6  # per-head RMS norm
    backend: str = "chunked"  # gated_linear_attn: chunked (torch, default) | loop (the oracle; or naive) | script


def decay_schedule(cfg: RetentionConfig, heads: int) -> Tensor:
    """[H] float64: γ_h in (0, 1) from the configured schedule; an unknown schedule is a ConfigError."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"config: retention schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if not 0 < cfg.exp_min <= cfg.exp_max:
        raise ConfigError(f"config: retention needs 0 < exp_min <= exp_max, got {cfg.exp_min}, {cfg.exp_max}")
    return 1 - 2.0 ** -SCHEDULES[cfg.schedule](heads, cfg.exp_min, cfg.exp_max)


class RetentionMixer(StatefulOpMixer):
    """Multi-scale retention over left-padded windows; step() is one state update, O(H d²) per event."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: RetentionConfig) -> None:
        super().__init__()  # dropout: no attention matrix to drop from; the block drops the mixer output
        self.heads, self.eps = heads, cfg.eps
        self.head_dim = head_width(dim, heads, "retention")
        self.backend = op_backend(cfg.backend, GATED_OP_BACKENDS)
        # log γ = -exp(w): any learned w keeps γ in (0, 1); 1-D, so make_optimizer applies no weight decay
        w = torch.log(-torch.log(decay_schedule(cfg, heads))).float()  # (H,)
        self.decay_log: Tensor
        if cfg.learnable:
            self.decay_log = nn.Parameter(w)
        else:
            self.register_buffer("decay_log", w, persistent=False)  # rebuilt from the config, not checkpointed
        self.proj = nn.Linear(dim, 4 * dim, bias=False)  # q, k, v and the output gate, bias-free as RetNet
        self.out = nn.Linear(dim, dim, bias=False)

    def log_decay(self) -> Tensor:
        """[H]: log γ_h, in the parameters' dtype."""
        return -self.decay_log.to(self.out.weight.dtype).exp()

    def _run(self, x: Tensor, mask: Tensor, state: MixerState | None, final: bool) -> tuple[Tensor, MixerState]:
        """x [B,N,D], mask [B,N], state {"S": [B,H,d,d]} or None -> (y [B,N,D] zero at pads, {"S": the state after
        the window} when `final`, else {})."""
        B, N, D = x.shape
        H, d = self.heads, self.head_dim
        m = mask[..., None].to(x.dtype)  # (B, N, 1)
        q, k, v, r = self.proj(x).chunk(4, dim=-1)  # (B, N, D) each
        q, k, v = (t.reshape(B, N, H, d).transpose(1, 2) for t in (q / math.sqrt(d), k * m, v * m))  # (B, H, N, d)
        g = self.log_decay()[None, :, None] * mask[:, None, :].to(x.dtype)  # (B, H, N): log γ_h, 0 at pads
        S0 = state["S"] if state is not None else None
        o, S = gated_linear_attn(q, k, v, g, S0, final, self.backend)  # (B, H, N, d)
        return self.out(gated_head_norm(o, r, None, self.eps)) * m, ({"S": S} if S is not None else {})


    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        H, d, dt = self.heads, self.head_dim, self.out.weight.dtype
        return {"S": torch.zeros(batch, H, d, d, device=device, dtype=dt)}


MIXERS.register("retention", RetentionMixer, RetentionConfig)
