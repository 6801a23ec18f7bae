"""Causal linear attention o_t = q_t^T S_t, S_t = S_0 + sum_{m<=t} k_m v_m^T (no normaliser, no feature map).

Normalisers and feature maps belong to the mixers: append a ones column to v to get q_t . sum k_m as the
last output channel; zero k (or v) at pads so that pads leave the state unchanged.
"""

from __future__ import annotations

from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.linear_attn.chunked import chunked_causal_linear_attn
from longrec.ops.linear_attn.naive import naive_causal_linear_attn


def causal_linear_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.CHUNKED,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], initial_state [B,H,K,V] -> (o [B,H,N,V], final_state [B,H,K,V] or None)."""
    if backend is Backend.NAIVE:
        return naive_causal_linear_attn(q, k, v, initial_state, output_final_state)
    if backend is Backend.CHUNKED:
        return chunked_causal_linear_attn(q, k, v, initial_state, output_final_state)
    raise NotImplementedError(f"backend {backend.value} is not implemented yet")
