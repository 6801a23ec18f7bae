"""The oracle: a sequential loop over positions in at least float32. Used by tests only; never the default."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_gla(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
) -> tuple[Tensor, Tensor | None]:
    """q, k, g [B,H,N,K], v [B,H,N,V], initial_state [B,H,K,V] -> (o [B,H,N,V], final_state [B,H,K,V] or None);
    S_t = diag(exp g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, one update per position."""
    B, H, N, K = q.shape
    V = v.shape[-1]
    dtype, ct = q.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v, g = (t.to(ct) for t in (q, k, v, g))
    S = torch.zeros(B, H, K, V, dtype=ct, device=q.device) if initial_state is None else initial_state.to(ct)
    out = []
    for t in range(N):
        S = g[:, :, t, :, None].exp() * S + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, K, V)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(out, dim=2).to(dtype)  # (B, H, N, V)
    return o, (S if output_final_state else None)
