"""Efficient Attention (Shen et al., WACV 2021): y = softmax_features(Q) (softmax_positions(K)^T V), per head.

The causal form normalises each key feature over the prefix: y_t = Σ_j softmax(q_t)_j Σ_{m≤t} w_{t,m,j} v_m with
w_{t,m,j} = exp(k_mj) / Σ_{m'≤t} exp(k_m'j). A per-(t, feature) normaliser is a data-dependent decay, not a plain
linear form, so it has its own chunked kernel here: every exp is shifted by the running max of the keys (so it is
≤ 1), and every shift depends on the prefix alone, which keeps the outputs exactly causal and streamable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState

NEG_INF = float("-inf")


@dataclass(frozen=True)
class EfficientConfig:
    causal: bool = False  # False: keys normalised over the whole window (the paper); True: over the prefix, streams
    chunk: int = 8  # causal form: intra-chunk work O(N·chunk·d), across chunks O((N/chunk)²·d²); 8 is fastest at N=200


def _finite_or_zero(m: Tensor) -> Tensor:
    """Shifts are -inf before the first real event; any finite shift is exact there (all weights are 0)."""
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def global_efficient_attn(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """q, k [B,H,N,K], v [B,H,N,V], mask [B,N] -> y [B,H,N,V]; keys softmaxed over the real positions only."""
    real = mask[:, None, :, None]  # (B, 1, N, 1)
    k = k.masked_fill(~real, NEG_INF)
    shift = _finite_or_zero(k.detach().amax(dim=2, keepdim=True))  # (B, H, 1, K); the softmax is shift-invariant
    e = torch.exp(k - shift)  # (B, H, N, K), 0 at pads
    z = e.sum(dim=2)  # (B, H, K), >= 1 unless the row has no real event
    ctx = e.transpose(-1, -2) @ v.masked_fill(~real, 0.0) / z.masked_fill(z == 0, 1.0)[..., None]  # (B, H, K, V)
    return q.softmax(dim=-1) @ ctx


def _running_max(k: Tensor, C: int) -> Tensor:
    """k [B,H,N',K], N' a multiple of C -> its running max over positions (cummax), as a masked max within each chunk
    and one over the chunks before it: ONNX has no cummax, and these are the kernel's own [C, C] and [n, n] shapes."""
    B, H, N, K = k.shape
    kc = k.reshape(B, H, N // C, C, K)  # (B, H, n, C, K)
    upto = torch.ones(C, C, dtype=torch.bool, device=k.device).tril()[..., None]  # (t, m, 1): m <= t
    inner = kc[:, :, :, None].masked_fill(~upto, NEG_INF).amax(dim=4)  # (B, H, n, C, K): within the chunk
    n = inner.shape[2]
    before = torch.ones(n, n, dtype=torch.bool, device=k.device).tril(-1)[..., None]  # (c, s, 1): s < c
    prev = inner[:, :, None, :, -1].masked_fill(~before, NEG_INF).amax(dim=3)  # (B, H, n, K): the earlier chunks
    return torch.maximum(inner, prev[:, :, :, None]).reshape(B, H, N, K)


def causal_efficient_attn(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, state: MixerState, chunk: int
) -> tuple[Tensor, MixerState]:
    """q, k [B,H,N,K], v [B,H,N,V], mask [B,N], state {S [B,H,K,V], z [B,H,K], m [B,H,K]} -> (y [B,H,N,V], state).

    The state holds S = Σ exp(k_m - m) v_m^T and z = Σ exp(k_m - m) over the real events so far, m their running max
    per feature (-inf before any). Chunk summaries are combined with per-feature rescaling exp(m_old - m_new) ≤ 1;
    inside a chunk the weights exp(k_m - M_t), M_t the running max at t, are formed explicitly (C x C per feature).
    """
    B, H, N, K = k.shape
    V = v.shape[-1]
    C = min(chunk, N)
    pad = (-N) % C  # appended after the window: masked like pads, so they change no output and no state
    real = F.pad(mask, (0, pad))[:, None, :, None]  # (B, 1, N', 1)
    q = F.pad(q, (0, 0, 0, pad)).softmax(dim=-1)
    k = F.pad(k, (0, 0, 0, pad)).masked_fill(~real, NEG_INF)
    v = F.pad(v, (0, 0, 0, pad)).masked_fill(~real, 0.0)
    n = (N + pad) // C
    run = torch.maximum(_running_max(k.detach(), C), state["m"][:, :, None])  # (B, H, N', K) running max M_t
    qc, kc, vc, runc = (t.reshape(B, H, n, C, t.shape[-1]) for t in (q, k, v, run))  # (B, H, n, C, ·)
    shift = _finite_or_zero(runc)  # (B, H, n, C, K)
    # summaries: s = 0 is the incoming state, s = c + 1 is chunk c, each referenced to the running max at its end
    ref = torch.cat([state["m"][:, :, None], runc[:, :, :, -1]], dim=2)  # (B, H, n+1, K)
    v1 = torch.cat([vc, torch.ones_like(vc[..., :1])], dim=-1)  # (B, H, n, C, V+1): last column sums the normaliser
    T = torch.exp(kc - _finite_or_zero(ref[:, :, 1:, None])).transpose(-1, -2) @ v1  # (B, H, n, K, V+1)
    T = torch.cat([torch.cat([state["S"], state["z"][..., None]], dim=-1)[:, :, None], T], dim=2)  # (B,H,n+1,K,V+1)
    # state before chunk c (c = n: after the window) = Σ_{s≤c} exp(ref_s - ref_c) T_s, referenced to ref_c
    start = _finite_or_zero(ref)
    upto = torch.ones(n + 1, n + 1, dtype=torch.bool, device=k.device).tril()[..., None]  # (c, s, 1): s <= c
    gain = (ref[:, :, None] - start[:, :, :, None]).masked_fill(~upto, NEG_INF).exp()  # (B, H, c, s, K)
    S = torch.einsum("bhcsk,bhskv->bhckv", gain, T)  # (B, H, n+1, K, V+1)
    # inside chunk c: weights exp(k_m - M_t) for m <= t, and exp(ref_c - M_t) on the state before the chunk
    tril = torch.ones(C, C, dtype=torch.bool, device=k.device).tril()[..., None]  # (t, m, 1)
    w = (kc[:, :, :, None] - shift[:, :, :, :, None]).masked_fill(~tril, NEG_INF).exp()  # (B, H, n, t, m, K)
    decay = torch.exp(ref[:, :, :n, None] - shift)  # (B, H, n, C, K)
    Sc = S[:, :, :n]  # (B, H, n, K, V+1)
    Z = decay * Sc[:, :, :, None, :, V] + w.sum(dim=-2)  # (B, H, n, C, K): >= 1 once a real event has been seen
    qz = qc / Z.masked_fill(Z == 0, 1.0)
    scores = torch.einsum("bhntmk,bhntk->bhntm", w, qz)  # (B, H, n, C, C)
    y = scores @ vc + (qz * decay) @ Sc[..., :V]  # (B, H, n, C, V)
    end = S[:, :, n]  # (B, H, K, V+1)
    return y.reshape(B, H, n * C, V)[:, :, :N], {"S": end[..., :V], "z": end[..., V], "m": ref[:, :, n]}


class EfficientMixer(nn.Module):
    """Multi-head Efficient Attention; the causal form streams with a constant-size state (S, z, m)."""

    def __init__(self, dim: int, heads: int, dropout: float, cfg: EfficientConfig) -> None:
        super().__init__()
        if cfg.chunk < 1:
            raise ValueError(f"efficient: chunk must be >= 1, got {cfg.chunk}")
        self.causal = cfg.causal
        self.chunk = cfg.chunk
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (3, B, H, N, d)
        return qkv[0], qkv[1], qkv[2]

    def _causal(self, x: Tensor, mask: Tensor, state: MixerState) -> tuple[Tensor, MixerState]:
        B, N, D = x.shape
        y, state = causal_efficient_attn(*self._heads(x), mask, state, self.chunk)  # (B, H, N, d)
        return self.out(y.transpose(1, 2).reshape(B, N, D)) * mask[..., None], state

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B,N,D], mask [B,N] -> [B,N,D] (zero at pads)."""
        B, N, D = x.shape
        if self.causal:
            return self._causal(x, mask, self._empty(B, x.device))[0]
        y = global_efficient_attn(*self._heads(x), mask)  # (B, H, N, d)
        return self.out(y.transpose(1, 2).reshape(B, N, D)) * mask[..., None]

    def _empty(self, batch: int, device: torch.device) -> MixerState:
        H, d = self.heads, self.out.in_features // self.heads
        S = torch.zeros(batch, H, d, d, device=device, dtype=self.out.weight.dtype)
        return {"S": S, "z": S[..., 0].clone(), "m": torch.full_like(S[..., 0], NEG_INF)}

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        return self._empty(batch, device) if self.causal else None

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() of a left-padded window [B,N,D] plus the state after its last real event."""
        if not self.causal:
            raise ValueError("global efficient attention has no state to prefill")
        return self._causal(x, mask, self._empty(x.shape[0], x.device))

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        """x_t [B,D] -> (y_t [B,D], state): the causal form over one position, from the given state."""
        ones = torch.ones(x_t.shape[0], 1, dtype=torch.bool, device=x_t.device)
        y, state = self._causal(x_t[:, None], ones, state)
        return y[:, 0], state


MIXERS.register("efficient", EfficientMixer, EfficientConfig)
