"""The sequential loop as a TorchScript function (Backend.SCRIPT): traced into an ONNX graph it stays one Loop over
positions, so the exported graph keeps a dynamic length, where the scan's Python levels would be frozen at the
traced length and complex numbers have no ONNX type. Real/imag pairs, one complex multiply-add per position."""

from __future__ import annotations

import torch
from torch import Tensor

from longrec.ops.scripting import scripted


@scripted
def _loop(a: Tensor, b: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """a, b [B,N,P,2], h [B,P,2] -> (h [B,N,P,2], final [B,P,2])."""
    ar, ai, br, bi = a[..., 0], a[..., 1], b[..., 0], b[..., 1]  # (B, N, P) each
    hr, hi = h[..., 0], h[..., 1]  # (B, P)
    out: list[Tensor] = []
    for t in range(a.shape[1]):
        hr, hi = ar[:, t] * hr - ai[:, t] * hi + br[:, t], ar[:, t] * hi + ai[:, t] * hr + bi[:, t]
        out.append(torch.stack([hr, hi], dim=-1))
    return torch.stack(out, dim=1), torch.stack([hr, hi], dim=-1)


def scripted_lru_scan(
    a: Tensor, b: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
) -> tuple[Tensor, Tensor | None]:
    """a, b [B,N,P,2] (real, imag), initial_state [B,P,2] -> (h [B,N,P,2], final_state [B,P,2] or None), N >= 1;
    in at least float32, returned in a's dtype."""
    dtype, ct = a.dtype, torch.promote_types(a.dtype, torch.float32)
    h0 = initial_state.to(ct) if initial_state is not None else b.new_zeros(b[:, 0].shape, dtype=ct)
    h, final = _loop(a.to(ct), b.to(ct), h0)
    return h.to(dtype), (final.to(dtype) if output_final_state else None)
