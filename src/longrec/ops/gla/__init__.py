"""Gated linear attention S_t = diag(α_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t, with g = log α (per key channel or
per head): GLA's data-dependent gates and RetNet's fixed per-head decays are the same op.

No scale, feature map or normaliser: those belong to the mixers. A position with g = 0 and k = 0 leaves the state
unchanged (no decay, no write): that is how callers make left pads the identity, so the state passes through them.
"""

from __future__ import annotations

from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.gla.chunked import chunked_gla
from longrec.ops.gla.naive import naive_gla
from longrec.ops.gla.scripted import scripted_gla


def gated_linear_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.CHUNKED,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g [B,H,N,K] (per key channel) or [B,H,N] (one decay per head), log-decays <= 0;
    initial_state [B,H,K,V] -> (o [B,H,N,V] in q's dtype, final_state [B,H,K,V] in at least float32, or None).

    Backend.CHUNKED: chunk-parallel torch (chunked.py), exact for any g <= 0 without overflow; Backend.LOOP: the
    sequential loop (the oracle); Backend.SCRIPT: the loop in TorchScript (scripted.py, for ONNX export). Other
    backends raise. Left pads: give them g = 0 and k = 0.
    """
    if g.dim() == 3:  # one decay per head, broadcast over the key channels (the chunked path uses a [C, C] mask)
        g = g[..., None]  # (B, H, N, 1)
    if q.shape[2] == 0:  # an empty window: no output, the state passes through
        final = initial_state if initial_state is not None else k.new_zeros(*k.shape[:2], k.shape[-1], v.shape[-1])
        return v.new_zeros(v.shape).to(q.dtype), (final if output_final_state else None)
    if backend is Backend.LOOP:
        return naive_gla(q, k, v, g, initial_state, output_final_state)
    if backend is Backend.CHUNKED:
        return chunked_gla(q, k, v, g, initial_state, output_final_state)
    if backend is Backend.SCRIPT:
        return scripted_gla(q, k, v, g, initial_state, output_final_state)
    raise NotImplementedError(f"backend {backend.value} is not implemented for gated_linear_attn")


__all__ = ["gated_linear_attn"]
