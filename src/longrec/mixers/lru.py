"""LRU token mixer (LRURec, Yue et al. WSDM 2024, after Orvieto et al. 2023): a complex diagonal linear recurrence.

h_t = λ ⊙ h_{t-1} + γ ⊙ (B x_t), y_t = Re(C h_t) [+ D ⊙ x_t], λ = exp(−exp(ν) + i·exp(θ)), γ = √(1 − |λ|²) kept as
log γ. Complex numbers are real pairs in a trailing axis of 2, so B and C are real linear maps: B x gives (Re, Im)
for each of the P state channels, and Re(C h) is linear in (Re h, Im h). Pads get λ = 1 and B x = 0, which leaves
the state unchanged. Dropout, residual and LayerNorm belong to the Block (post-LN for LRURec).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.errors import ConfigError
from longrec.mixers.base import MIXERS, MixerState
from longrec.ops.backend import Backend
from longrec.ops.lru import lru_scan


@dataclass(frozen=True)
class LRUConfig:
    state_mult: int = 2  # complex state size P = state_mult * dim (LRURec: 2)
    r_min: float = 0.8  # |λ| initialised on the ring [r_min, r_max], uniform in |λ|² (Orvieto et al.; LRURec)
    r_max: float = 0.99
    max_phase: float = 2 * math.pi  # arg λ initialised uniform in [0, max_phase)
    skip: bool = False  # add D ⊙ x_t (Orvieto et al.); LRURec's code drops D for the block's residual connection
    bias: bool = True  # biases in B and C, as LRURec's projections
    backend: str = "auto"  # scan | loop | auto: the faster measured (docs/BENCHMARKS.md, LRU scan) | script (export)


# On CPU the sequential loop beats the log-depth scan once the batch is wide enough to hide the per-step overhead
# (python -m benchmarks.lru_scan, one thread, P = 128: scan/loop 0.3x at B = 1 but 1.1x at B = 32 and 1.6x at
# B = 128, N = 200..1000); on CUDA the scan's log-depth wins over N kernel launches.
_LOOP_MIN_BATCH_CPU = 32


def _pick_backend(choice: str, batch: int, device: torch.device) -> Backend:
    if choice == "auto":
        choice = "loop" if device.type == "cpu" and batch >= _LOOP_MIN_BATCH_CPU else "scan"
    return Backend(choice)


def _no_decay(t: Tensor) -> nn.Parameter:
    p = nn.Parameter(t)
    p._no_weight_decay = True  # type: ignore[attr-defined]  # read by longrec.train.loop.make_optimizer
    return p


class LRUMixer(nn.Module):
    """Linear Recurrent Unit over left-padded windows; step() is one recurrence update, O(P) per event."""

    causal = True
    export_args: ClassVar[dict[str, str]] = {"backend": "script"}  # longrec export: a Loop, not frozen levels

    def __init__(self, dim: int, heads: int, dropout: float, cfg: LRUConfig) -> None:
        super().__init__()
        if not (0.0 < cfg.r_min <= cfg.r_max < 1.0 and cfg.state_mult > 0):
            raise ConfigError(f"config: lru needs 0 < r_min <= r_max < 1 and state_mult > 0, got {cfg}")
        if cfg.backend not in ("auto", "scan", "loop", "script"):
            raise ConfigError(f"config: model.mixer_args.backend must be auto, scan, loop or script, got "
                              f"{cfg.backend!r}")
        self.backend = cfg.backend
        P = self.state_size = cfg.state_mult * dim
        radius_sq = torch.rand(P) * (cfg.r_max**2 - cfg.r_min**2) + cfg.r_min**2  # |λ|², uniform on the ring
        phase = cfg.max_phase * torch.rand(P).clamp_min(1e-12)  # > 0: it is stored as a log
        self.nu_log = _no_decay(torch.log(-0.5 * torch.log(radius_sq)))  # (P,): |λ| = exp(−exp(ν))
        self.theta_log = _no_decay(torch.log(phase))  # (P,): arg λ = exp(θ)
        self.gamma_log = _no_decay(0.5 * torch.log1p(-radius_sq))  # (P,): γ = √(1 − |λ|²) normalises the input
        self.in_proj = nn.Linear(dim, 2 * P, bias=cfg.bias)  # B: x -> (Re, Im) of each state channel
        self.out_proj = nn.Linear(2 * P, dim, bias=cfg.bias)  # C: (Re h, Im h) -> Re(C h)
        self.skip = nn.Parameter(torch.randn(dim)) if cfg.skip else None  # D

    def _lambda(self) -> Tensor:
        """[P, 2]: λ = exp(−exp(ν)) · (cos θ, sin θ), θ = exp(θ_log)."""
        r, theta = torch.exp(-torch.exp(self.nu_log)), torch.exp(self.theta_log)
        return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=-1)

    def _run(self, x: Tensor, mask: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
        """x [B,N,D], mask [B,N], h0 [B,P,2] or None -> (y [B,N,D] zero at pads, state after the window [B,P,2])."""
        B, N, D = x.shape
        P = self.state_size
        lam = self._lambda()  # (P, 2), in the parameters' dtype: never rounded to bf16 under autocast
        # γ ⊙ (W x + c) = (γW) x + γc: scaling the small weight, not the [B,N,P,2] output, keeps γ's gradient a
        # reduction over the weight's rows instead of over every position (a slow strided sum on CPU)
        g = self.gamma_log.exp().repeat_interleave(2)  # (2P,): γ for the (Re, Im) pair of each state channel
        bias = None if self.in_proj.bias is None else self.in_proj.bias * g
        bx = F.linear(x, self.in_proj.weight * g[:, None], bias).view(B, N, P, 2).to(lam.dtype)  # γ ⊙ Bx
        m = mask.to(lam.dtype)  # (B, N)
        one = lam.new_tensor([1.0, 0.0])
        # a = 1 + m (λ - 1): λ at events, the identity at pads; an outer product, so that λ's gradient is one
        # matrix-vector product over the B·N positions
        a = (m.reshape(B * N, 1) @ (lam - one).reshape(1, 2 * P)).view(B, N, P, 2) + one  # (B, N, P, 2)
        b = bx * m[..., None, None]  # (B, N, P, 2): γ ⊙ Bx, zero at pads
        backend = _pick_backend(self.backend, B, x.device)
        h, final = lru_scan(a, b, initial_state=h0, output_final_state=True, backend=backend)  # (B,N,P,2), (B,P,2)
        y = self.out_proj(h.flatten(-2))  # (B, N, D): Re(C h)
        if self.skip is not None:
            y = y + self.skip * x
        assert final is not None
        return y * mask[..., None], final

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B,N,D], mask [B,N] -> y [B,N,D], zero at pads."""
        return self._run(x, mask, None)[0]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() plus the state after the window: the op's final state."""
        y, h = self._run(x, mask, None)
        return y, {"h": h}

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        return {"h": torch.zeros(batch, self.state_size, 2, device=device, dtype=self.nu_log.dtype)}

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        """x_t [B,D] -> (y_t [B,D], state): one update through the same op with N = 1."""
        real = torch.ones(x_t.shape[0], 1, dtype=torch.bool, device=x_t.device)
        y, h = self._run(x_t[:, None], real, state["h"])
        return y[:, 0], {"h": h}


MIXERS.register("lru", LRUMixer, LRUConfig)
