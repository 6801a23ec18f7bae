"""LinRec (Liu et al., SIGIR 2023): L2-normalised ELU linear attention; paper form, official-code form, causal form."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.errors import ConfigError
from longrec.mixers.base import MIXERS, MixerState, op_backend, positions
from longrec.mixers.linear import LINEAR_OP_BACKENDS
from longrec.ops.linear_attn import causal_linear_attn

NORMS = ("paper", "token")


@dataclass(frozen=True)
class LinRecConfig:
    causal: bool = False  # True: causal linrec (ours), the paper form over each prefix; trains on every position
    norm: str = "paper"  # paper: Eq. 9, K normalised per column over the sequence | token: the official code, per row
    l2: bool = True  # False: Figure 4 "w/o L2", the norms dropped (the 1/sqrt(d), 1/sqrt(n) scales stay)
    elu: bool = True  # False: Figure 4 "w/o ELU", identity feature map
    eps: float = 1e-6  # added under each square root of a sum of squares (pads, all-zero features)
    backend: str = "chunked"  # causal op backend: chunked (torch) | fla (CUDA, extra longrec[gpu]) | loop (or naive)
    local: int = 0  # > 0: add a causal depthwise conv of this width over V (the last `local` positions) to the
    #                 attention output; an ablation (docs/RESULTS.md), not in the paper. 0: the paper's mixer


class LinRecMixer(nn.Module):
    """Per head, phi = elu (or identity), d = head dim, Q^_i = phi(Q_i) / (sqrt(d) |phi(Q_i)|).

    paper:  y = Q^ (K^.T V) with K^_{:,j} = phi(K_{:,j}) / (sqrt(n) |phi(K_{:,j})|) over the n real positions;
            causal: y_t = sum_j Q^_{t,j} / (sqrt(t) c_{t,j}) sum_{m<=t} phi(K)_{m,j} V_m, c^2_{t,j} = sum_{m<=t}
            phi(K)^2_{m,j}: plain causal linear attention with a rescaled query, equal to the paper form at t = n.
    token:  K^_m = phi(K_m) / |phi(K_m)| per row, y = Q^ (K^.T V) (official code, no 1/sqrt(n)), or its prefix sums.
    Both reduce to a query q' reading S = sum_m k_m v_m^T; step state: S [B,H,d,d], c2 = sum k^2 [B,H,d], n [B].
    local = w > 0 adds sum_{i<w} a_i * V_{t-i} per channel before the output projection (pads are zeros in the
    window); the step state then also keeps the last w-1 values, v [B,D,w-1].
    """

    def __init__(self, dim: int, heads: int, dropout: float, cfg: LinRecConfig) -> None:
        super().__init__()  # dropout: no attention matrix to drop from; the block drops the mixer output
        if cfg.norm not in NORMS:
            raise ConfigError(f"config: 'model.mixer_args.norm' must be one of {', '.join(NORMS)}, got {cfg.norm!r}")
        if cfg.local < 0:
            raise ConfigError(f"config: 'model.mixer_args.local' must be >= 0 (0 = off), got {cfg.local}")
        self.causal = cfg.causal
        self.heads = heads
        self.cfg = cfg
        self.backend = op_backend(cfg.backend, LINEAR_OP_BACKENDS)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.local = nn.Conv1d(dim, dim, cfg.local, groups=dim, bias=False) if cfg.local else None

    def _norm(self, x: Tensor) -> Tensor:
        """L2 norm over the last axis, [..., 1] (1 without l2)."""
        return (x.square().sum(-1, keepdim=True) + self.cfg.eps).sqrt() if self.cfg.l2 else x.new_ones(())

    def _features(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [..., D] -> Q^, k (phi(K), row-normalised for norm=token), v, each [..., H, d]."""
        *lead, D = x.shape
        q, k, v = self.qkv(x).view(*lead, 3, self.heads, D // self.heads).unbind(-3)  # 3 x (..., H, d)
        if self.cfg.elu:
            q, k = F.elu(q), F.elu(k)
        q = q / (q.shape[-1] ** 0.5 * self._norm(q))
        if self.cfg.norm == "token":
            k = k / self._norm(k)
        return q, k, v

    def _query(self, q: Tensor, c2: Tensor, n: Tensor) -> Tensor:
        """Q^ [..., d] -> q' for keys with sum of squares c2 [..., d] and count n [..., 1] (paper form only)."""
        if self.cfg.norm == "token":
            return q
        c = (c2 + self.cfg.eps).sqrt() if self.cfg.l2 else c2.new_ones(())
        return q / (n.to(q.dtype).clamp(min=1).sqrt() * c)

    def _attend(self, x: Tensor, mask: Tensor, final: bool) -> tuple[Tensor, MixerState | None]:
        B, N, D = x.shape
        q, k, v = (t.transpose(1, 2) for t in self._features(x))  # (B, H, N, d)
        k = k * mask[:, None, :, None]  # pads are in no sum and no norm
        if self.causal:
            n = (positions(mask) + 1)[:, None, :, None]  # (B, 1, N, 1): real events up to t
            q = self._query(q, k.square().cumsum(2), n)
            o, S = causal_linear_attn(q, k, v, output_final_state=final, backend=self.backend)
        else:
            n = mask.sum(-1)[:, None, None, None]  # (B, 1, 1, 1)
            q = self._query(q, k.square().sum(2, keepdim=True), n)
            o, S = q @ (k.transpose(-1, -2) @ v), None  # (B, H, N, d)
        o = o.transpose(1, 2).reshape(B, N, D)
        state = {"S": S, "c2": k.square().sum(2), "n": mask.sum(-1)} if S is not None else None
        if self.local is not None:
            vs = (v.transpose(1, 2).reshape(B, N, D) * mask[..., None]).transpose(1, 2)  # (B, D, N), pads zero
            window = F.pad(vs, (self.local.kernel_size[0] - 1, 0))  # (B, D, w-1+N)
            o = o + self.local(window).transpose(1, 2)
            if state is not None:
                state["v"] = window[..., N:]  # (B, D, w-1): the last w-1 positions
        return self.out(o) * mask[..., None], state

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self._attend(x, mask, final=False)[0]

    def attention_weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """[B,H,N,N]: B' = Q^ K^^T, the matrix LinRec multiplies V by (lower-triangular for the causal form)."""
        q, k, _ = (t.transpose(1, 2) for t in self._features(x))  # (B, H, N, d)
        k = k * mask[:, None, :, None]
        if self.causal:
            q = self._query(q, k.square().cumsum(2), (positions(mask) + 1)[:, None, :, None])
        else:
            q = self._query(q, k.square().sum(2, keepdim=True), mask.sum(-1)[:, None, None, None])
        w = q @ k.transpose(-1, -2)  # (B, H, N, N)
        if self.causal:
            w = w.tril()
        return w * mask[:, None, :, None]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() and the state after the window's last event (the op's final state, key norms, count)."""
        if not self.causal:
            raise ValueError("global LinRec has no state to prefill")
        y, state = self._attend(x, mask, final=True)
        assert state is not None
        return y, state

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        if not self.causal:
            return None
        D, H = self.out.in_features, self.heads
        zeros = torch.zeros(batch, H, D // H, D // H, device=device, dtype=self.out.weight.dtype)
        state = {"S": zeros, "c2": zeros[..., 0].clone(), "n": torch.zeros(batch, dtype=torch.long, device=device)}
        if self.local is not None:
            state["v"] = zeros.new_zeros(batch, D, self.local.kernel_size[0] - 1)
        return state

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        B, D = x_t.shape
        q, k, v = self._features(x_t)  # (B, H, d)
        c2, n = state["c2"] + k.square(), state["n"] + 1
        q = self._query(q, c2, n[:, None, None])
        o, S = causal_linear_attn(q[:, :, None], k[:, :, None], v[:, :, None], state["S"], True, self.backend)
        assert S is not None
        o, new = o.reshape(B, D), {"S": S, "c2": c2, "n": n}
        if self.local is not None:
            window = torch.cat([state["v"], v.reshape(B, D, 1)], dim=-1)  # (B, D, w)
            o = o + self.local(window)[..., 0]
            new["v"] = window[..., 1:]
        return self.out(o), new


MIXERS.register("linrec", LinRecMixer, LinRecConfig)
