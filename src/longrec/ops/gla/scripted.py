"""The sequential loop as a TorchScript function (Backend.SCRIPT): traced into an ONNX graph it stays one Loop over
positions, so the exported graph keeps a dynamic length, where the chunked path's Python loop over chunks (and its
chunk-size arithmetic) would be frozen at the traced length."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.ops.scripting import scripted


@scripted
def _loop(q: Tensor, k: Tensor, v: Tensor, a: Tensor, S: Tensor) -> tuple[Tensor, Tensor]:
    """q, k [B,H,N,K], v [B,H,N,V], a = exp g [B,H,N,K or 1], S [B,H,K,V] -> (o [B,H,N,V], final S)."""
    out: list[Tensor] = []
    for t in range(q.shape[2]):
        S = a[:, :, t, :, None] * S + k[:, :, t, :, None] * v[:, :, t, None, :]  # (B, H, K, V)
        out.append((q[:, :, t, :, None] * S).sum(dim=-2))  # (B, H, V): S^T q
    return torch.stack(out, dim=2), S


def scripted_gla(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], g [B,H,N,K] or [B,H,N,1] (log-decay), initial_state [B,H,K,V] ->
    (o [B,H,N,V] in q's dtype, final_state [B,H,K,V] in at least float32, or None); N >= 1."""
    B, H, N, K = q.shape
    dtype, ct = q.dtype, torch.promote_types(q.dtype, torch.float32)
    S0 = initial_state.to(ct) if initial_state is not None else q.new_zeros(B, H, K, v.shape[-1], dtype=ct)
    o, S = _loop(q.to(ct), k.to(ct), v.to(ct), g.to(ct).exp(), S0)
    return o.to(dtype), (S if output_final_state else None)
