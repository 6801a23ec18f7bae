"""The sequential loop as a TorchScript function (Backend.SCRIPT): traced into an ONNX graph it stays one Loop over
positions, so the exported graph keeps a dynamic length; ONNX has no triangular solve for the chunked WY form, and
its Python loop over chunks would be frozen at the traced length."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.ops.scripting import scripted


@scripted
def _loop(q: Tensor, k: Tensor, v: Tensor, a: Tensor, beta: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """q, k [B,H,N,K], v [B,H,N,V], a = exp g, beta [B,H,N], S [B,H,K,V] -> (o [B,H,N,V], final S)."""
    out: list[Tensor] = []
    for t in range(q.shape[2]):
        k_t = k[:, :, t, :, None]  # (B, H, K, 1)
        S = a[:, :, t, None, None] * S  # (B, H, K, V)
        u = beta[:, :, t, None] * (v[:, :, t] - (k_t * S).sum(dim=-2))  # (B, H, V): the new value
        S = S + k_t * u[:, :, None, :]
        out.append((q[:, :, t, :, None] * S).sum(dim=-2))  # (B, H, V): S^T q
    return torch.stack(out, dim=2), S


def scripted_gated_delta(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    beta: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g (log α), beta [B,H,N], initial_state [B,H,K,V] -> (o [B,H,N,V] in q's dtype,
    final_state [B,H,K,V] in at least float32, or None); N >= 1."""
    B, H, N, K = q.shape
    dtype, ct = q.dtype, torch.promote_types(q.dtype, torch.float32)
    S0 = initial_state.to(ct) if initial_state is not None else q.new_zeros(B, H, K, v.shape[-1], dtype=ct)
    o, S = _loop(q.to(ct), k.to(ct), v.to(ct), g.to(ct).exp(), beta.to(ct), S0)
    return o.to(dtype), (S if output_final_state else None)
