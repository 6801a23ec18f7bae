"""Chunk-parallel gated linear attention in plain torch (CPU and CUDA; autograd gives the backward).

Per chunk of C positions, b_i = sum of g over the chunk up to i (<= 0, non-increasing). The output of position i is
  o_i = (q_i ⊙ exp b_i)^T S_prev + sum_{j<=i} [sum_c q_ic k_jc exp(b_ic - b_jc)] v_j,
and the state after the chunk S = diag(exp b_C) S_prev + sum_j (k_j ⊙ exp(b_C - b_j)) v_j^T: every exponent there
is <= 0. The intra-chunk sum is the hard part: splitting exp(b_i - b_j) into exp(b_i) exp(-b_j) would let exp(-b_j)
overflow (exp(+320) for a log-decay of -5 over 64 steps). Instead it is built by halving (a power-of-two C): at level
s every block of 2s positions lets its later half read its earlier half relative to the earlier half's last position
r, q_i exp(b_i - b_r) and k_j exp(b_r - b_j), both exponents <= 0 since b_i <= b_r <= b_j. log2(C) levels of
batched matmuls cover every j < i exactly once; j = i is the diagonal q_i . k_i. With one decay per head (g with a
key axis of 1, RetNet) the [C, C] mask exp(b_i - b_j) is formed directly instead. Chunks are chained by a loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _intra_chunk(q: Tensor, k: Tensor, v: Tensor, b: Tensor) -> Tensor:
    """q, k [..., C, K], v [..., C, V], b [..., C, K] or [..., C, 1] (the within-chunk cumulative log-decay, per key
    channel or per head), C a power of two -> o [..., C, V], o_i = sum_{j<=i} (sum_c q_ic k_jc exp(b_ic - b_jc)) v_j."""
    *lead, C, K = q.shape
    V = v.shape[-1]
    if b.shape[-1] == 1:  # one decay per head: the [C, C] decay mask exp(b_i - b_j), i >= j, is cheap and exact
        tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        decay = (b - b.transpose(-1, -2)).masked_fill(~tril, float("-inf")).exp()  # (..., C, C), zero above
        return ((q @ k.transpose(-1, -2)) * decay) @ v
    o = (q * k).sum(-1, keepdim=True) * v  # (..., C, V): j = i, exp(0) = 1
    s = 1
    while s < C:
        blocks = C // (2 * s)
        _, q1 = q.reshape(*lead, blocks, 2, s, K).unbind(-3)  # (..., C/2s, s, K): the later halves
        k0, _ = k.reshape(*lead, blocks, 2, s, K).unbind(-3)  # the earlier halves
        b0, b1 = b.reshape(*lead, blocks, 2, s, K).unbind(-3)
        v0, _ = v.reshape(*lead, blocks, 2, s, V).unbind(-3)  # (..., C/2s, s, V)
        r = b0[..., -1:, :]  # (..., C/2s, 1, K): b at the last position of each earlier half
        qt, kt = q1 * (b1 - r).exp(), k0 * (r - b0).exp()  # (..., C/2s, s, K), both exponents <= 0
        late = (qt @ kt.transpose(-1, -2)) @ v0  # (..., C/2s, s, V): the later halves read the earlier ones
        o = o + torch.stack([torch.zeros_like(late), late], dim=-3).reshape(*lead, C, V)
        s *= 2
    return o


def chunked_gla(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk: int = 16,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g [B,H,N,K] or [B,H,N,1] (log-decay <= 0 per key channel or per head),
    initial_state [B,H,K,V] -> (o [B,H,N,V] in q's dtype, final_state [B,H,K,V] in at least float32, or None).
    `chunk`: a power of two (16 measured fastest on CPU: B = 128, N = 200, H = 4, K = V = 16 or K = 8)."""
    if chunk < 1 or chunk & (chunk - 1):
        raise ValueError(f"chunked_gla: chunk must be a power of two, got {chunk}")
    B, H, N, K = q.shape
    V = v.shape[-1]
    dtype, ct = q.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v, g = (t.to(ct) for t in (q, k, v, g))
    C = min(chunk, 1 << (N - 1).bit_length())  # the smallest power of two >= N when N is short
    pad = (-N) % C
    if pad:  # g = 0, k = 0 after the end: identity on the state; their outputs are dropped
        q, k, v, g = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, g))
    n = (N + pad) // C
    qc, kc, vc, gc = (t.reshape(B, H, n, C, t.shape[-1]) for t in (q, k, v, g))  # (B, H, n, C, ·)
    b = gc.cumsum(dim=-2)  # (B, H, n, C, K or 1): log-decay from the chunk's start through each position
    o = _intra_chunk(qc, kc, vc, b)  # (B, H, n, C, V)
    last = b[..., -1:, :]  # (B, H, n, 1, K or 1)
    q_in = qc * b.exp()  # reads the state from before the chunk
    k_out = kc * (last - b).exp()  # writes into the state at the chunk's end
    carry = last.exp().transpose(-1, -2)  # (B, H, n, K or 1, 1): decay of the state across each chunk
    S = initial_state.to(ct) if initial_state is not None else None
    reads = []
    # unbind, not indexing: one backward node per tensor instead of a full-size zero gradient per chunk
    for q_c, k_c, v_c, carry_c in zip(q_in.unbind(2), k_out.unbind(2), vc.unbind(2), carry.unbind(2), strict=True):
        reads.append(q_c @ S if S is not None else torch.zeros_like(v_c))  # (B, H, C, V)
        write = k_c.transpose(-1, -2) @ v_c  # (B, H, K, V)
        S = write if S is None else carry_c * S + write
    o = (o + torch.stack(reads, dim=2)).reshape(B, H, n * C, V)[:, :, :N].to(dtype)
    return o, (S if output_final_state else None)
