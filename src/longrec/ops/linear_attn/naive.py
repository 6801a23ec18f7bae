"""The oracle: a float32 loop over positions. Used by tests only; never the default."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_causal_linear_attn(
    q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V] -> o [B,H,N,V]; state S [B,H,K,V] updated as S += k_t v_t^T."""
    B, H, N, K = q.shape
    V = v.shape[-1]
    dtype = q.dtype
    q, k, v = q.float(), k.float(), v.float()
    S = torch.zeros(B, H, K, V, device=q.device) if initial_state is None else initial_state.float().clone()
    out = []
    for t in range(N):
        S = S + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, K, V)
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))
    o = torch.stack(out, dim=2).to(dtype)  # (B, H, N, V)
    return o, (S.to(dtype) if output_final_state else None)
