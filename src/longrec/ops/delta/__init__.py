"""The gated delta rule (Gated DeltaNet, Yang, Kautz & Hatamizadeh 2024), state S [K, V] per head:

  S_t = α_t (I - β_t k_t k_t^T) S_{t-1} + β_t k_t v_t^T,   o_t = S_t^T q_t,   α_t = exp g_t.

This is the paper's S_t = S_{t-1} α_t (I - β_t k_t k_t^T) + β_t v_t k_t^T transposed (the paper's state is [V, K]);
[K, V] is flash-linear-attention's layout and longrec's for every op. The decay applies before the delta rule reads
the state: with u_t = β_t (v_t - α_t S_{t-1}^T k_t), S_t = α_t S_{t-1} + k_t u_t^T. No scale or L2 norm here: those
belong to the mixers. A position with g = 0 and β = 0 leaves the state unchanged (no decay, no write): that is how
callers make left pads the identity, so the state passes through them.
"""

from __future__ import annotations

from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.delta.chunked import chunked_gated_delta
from longrec.ops.delta.naive import naive_gated_delta
from longrec.ops.delta.scripted import scripted_gated_delta


def gated_delta_rule(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.CHUNKED,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g [B,H,N] (log α <= 0), beta [B,H,N] (in [0, 1]), initial_state [B,H,K,V] ->
    (o [B,H,N,V] in q's dtype, final_state [B,H,K,V] in at least float32, or None).

    Backend.CHUNKED: the chunk-parallel WY form (chunked.py); Backend.LOOP: the sequential loop (the oracle);
    Backend.SCRIPT: the loop in TorchScript (scripted.py, for ONNX export). Other backends raise. Left pads: give
    them g = 0 and β = 0 (and k = 0).
    """
    if q.shape[2] == 0:  # an empty window: no output, the state passes through
        final = initial_state if initial_state is not None else k.new_zeros(*k.shape[:2], k.shape[-1], v.shape[-1])
        return v.new_zeros(v.shape).to(q.dtype), (final if output_final_state else None)
    if backend is Backend.LOOP:
        return naive_gated_delta(q, k, v, g, beta, initial_state, output_final_state)
    if backend is Backend.CHUNKED:
        return chunked_gated_delta(q, k, v, g, beta, initial_state, output_final_state)
    if backend is Backend.SCRIPT:
        return scripted_gated_delta(q, k, v, g, beta, initial_state, output_final_state)
    raise NotImplementedError(f"backend {backend.value} is not implemented for gated_delta_rule")


__all__ = ["gated_delta_rule"]
