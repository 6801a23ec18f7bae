"""Chunk-parallel causal linear attention in plain torch (autograd gives the backward).

Within a chunk of C positions: o = tril(q k^T) v; across chunks: o += q S_prev, S_prev the exclusive
prefix sum of the chunks' k^T v. O(N C K + N K V) time, O(N/C K V) memory, no Python loop over N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def chunked_causal_linear_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    chunk: int = 64,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], initial_state [B,H,K,V] -> (o [B,H,N,V], final_state [B,H,K,V] or None)."""
    B, H, N, K = q.shape
    V = v.shape[-1]
    C = min(chunk, max(N, 1))
    pad = (-N) % C
    if pad:  # zero q, k, v after the end: they add nothing to the state and their outputs are dropped
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    n = (N + pad) // C
    qc, kc, vc = (t.reshape(B, H, n, C, t.shape[-1]) for t in (q, k, v))  # (B, H, n, C, ·)
    kv = kc.transpose(-1, -2) @ vc  # (B, H, n, K, V): each chunk's sum of k v^T
    prev = kv.cumsum(dim=2) - kv  # state before each chunk (exclusive prefix sum)
    if initial_state is not None:
        prev = prev + initial_state[:, :, None]
    tril = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    scores = (qc @ kc.transpose(-1, -2)).masked_fill(~tril, 0.0)  # (B, H, n, C, C)
    o = scores @ vc + qc @ prev  # (B, H, n, C, V)
    o = o.reshape(B, H, n * C, V)[:, :, :N]
    if not output_final_state:
        return o, None
    final = kv.sum(dim=2)
    if initial_state is not None:
        final = final + initial_state
    return o, final
