"""The oracle: a sequential loop over positions in at least float32. Used by tests only; never the default."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_gated_delta(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g, beta [B,H,N], initial_state [B,H,K,V] -> (o [B,H,N,V], final_state or None);
    S_t = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T with α_t = exp g_t, o_t = S_t^T q_t, one update a position."""
    B, H, N, K = q.shape
    V = v.shape[-1]
    dtype, ct = q.dtype, torch.promote_types(q.dtype, torch.float32)
    q, k, v, g, beta = (t.to(ct) for t in (q, k, v, g, beta))
    S = torch.zeros(B, H, K, V, dtype=ct, device=q.device) if initial_state is None else initial_state.to(ct)
    out = []
    for t in range(N):
        k_t = k[:, :, t]  # (B, H, K)
        S = g[:, :, t, None, None].exp() * S  # (B, H, K, V)
        u = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhk,bhkv->bhv", k_t, S))  # (B, H, V): the new value
        S = S + k_t[..., None] * u[..., None, :]
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(out, dim=2).to(dtype)  # (B, H, N, V)
    return o, (S if output_final_state else None)
