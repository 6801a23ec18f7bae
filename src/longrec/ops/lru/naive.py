"""The oracle: a sequential loop over positions in at least float32 (Backend.LOOP). Used by tests, and by the lru
mixer on CPU at wide batches, where it beats the scan."""

from __future__ import annotations

import torch
from torch import Tensor


def naive_lru_scan(
    a: Tensor, b: Tensor, initial_state: Tensor | None = None, output_final_state: bool = False
) -> tuple[Tensor, Tensor | None]:
    """a, b [B,N,P,2] (real, imag), initial_state [B,P,2] -> (h [B,N,P,2], final_state [B,P,2] or None);
    h_t = a_t h_{t-1} + b_t, one complex multiply-add per position, autograd through the loop."""
    dtype = a.dtype
    ct = torch.promote_types(dtype, torch.float32)
    ac, bc = (torch.view_as_complex(t.to(ct).contiguous()) for t in (a, b))  # (B, N, P) complex
    if initial_state is None:
        h = torch.zeros_like(bc[:, 0])  # (B, P)
    else:
        h = torch.view_as_complex(initial_state.to(ct).contiguous())
    out = []
    for a_t, b_t in zip(ac.unbind(1), bc.unbind(1), strict=True):  # unbind: one backward node, not N scatters
        h = a_t * h + b_t
        out.append(h)
    o = torch.view_as_real(torch.stack(out, dim=1)).to(dtype)  # (B, N, P, 2)
    return o, (torch.view_as_real(h).to(dtype) if output_final_state else None)
