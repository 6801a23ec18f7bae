"""Linear Transformer attention (Katharopoulos et al., ICML 2020): phi = elu+1, normalised by phi(q) . sum phi(k)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState, op_backend
from longrec.ops.backend import Backend
from longrec.ops.linear_attn import causal_linear_attn


@dataclass(frozen=True)
class LinearConfig:
    causal: bool = True  # False: global form phi(Q)(phi(K)^T V) over the whole window (no step())
    eps: float = 1e-6  # added to the normaliser phi(q_t) . z_t, as in the paper's code
    backend: str = "chunked"  # causal op backend: chunked (torch) | fla (CUDA, extra longrec[gpu]) | loop (or naive)


LINEAR_OP_BACKENDS = (Backend.LOOP, Backend.CHUNKED, Backend.FLA)  # what causal_linear_attn implements


class LinearMixer(nn.Module):
    """y_t = phi(q_t)^T S_t / (phi(q_t)^T z_t + eps), S_t = sum_{m<=t} phi(k_m) v_m^T, z_t = sum_{m<=t} phi(k_m)
    per head (all m in the window for the global form). Pads are excluded from S and z; the step state is
    S and z in one [B,H,d,d+1] tensor (v carries a ones column whose output is the normaliser)."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: LinearConfig) -> None:
        super().__init__()  # dropout: no attention matrix to drop from; the block drops the mixer output
        self.causal = cfg.causal
        self.heads = heads
        self.eps = cfg.eps
        self.backend = op_backend(cfg.backend, LINEAR_OP_BACKENDS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [..., D] -> phi(q), phi(k) [..., H, d] and v with a ones column [..., H, d+1]."""
        *lead, D = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.heads, D // self.heads).unbind(-3)  # 3 x (..., H, d)
        return F.elu(q) + 1, F.elu(k) + 1, F.pad(v, (0, 1), value=1.0)

    def _read(self, o: Tensor) -> Tensor:
        """o [..., d+1] (numerator, normaliser) -> [..., d]."""
        return o[..., :-1] / (o[..., -1:] + self.eps)

    def _attend(self, x: Tensor, mask: Tensor, final: bool) -> tuple[Tensor, Tensor | None]:
        B, N, D = x.shape
        q, k, v = self._features(x)  # (B, N, H, ·)
        k = k * mask[:, :, None, None]  # pads add nothing to S or z
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, N, ·)
        if self.causal:
            o, S = causal_linear_attn(q, k, v, output_final_state=final, backend=self.backend)
        else:
            o, S = q @ (k.transpose(-1, -2) @ v), None  # (B, H, N, d+1)
        y = self._read(o).transpose(1, 2).reshape(B, N, D)
        return self.out(y) * mask[..., None], S

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._attend(x, mask, final=False)[0]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() and the state after the window's last event (the op's final state)."""
        if not self.causal:
            raise ValueError("global linear attention has no state to prefill")
        y, S = self._attend(x, mask, final=True)
        assert S is not None
        return y, {"S": S}

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        if not self.causal:
            return None
        D, H = self.out.in_features, self.heads
        return {"S": torch.zeros(batch, H, D // H, D // H + 1, device=device, dtype=self.out.weight.dtype)}

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        B, D = x_t.shape
        q, k, v = (t[:, :, None] for t in self._features(x_t))  # (B, H, 1, ·)
        o, S = causal_linear_attn(q, k, v, state["S"], output_final_state=True, backend=self.backend)
        assert S is not None
        return self.out(self._read(o).reshape(B, D)), {"S": S}


MIXERS.register("linear", LinearMixer, LinearConfig)
