"""Causal linear attention o_t = q_t^T S_t, S_t = S_0 + sum_{m<=t} k_m v_m^T (no normaliser, no feature map).

Normalisers and feature maps belong to the mixers: append a ones column to v to get q_t . sum k_m as the
last output channel; zero k (or v) at pads so that pads leave the state unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.linear_attn.chunked import chunked_causal_linear_attn
from longrec.ops.linear_attn.naive import naive_causal_linear_attn

_FLA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def causal_linear_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.CHUNKED,
) -> tuple[Tensor, Tensor | None]:
    """q, k [B,H,N,K], v [B,H,N,V], initial_state [B,H,K,V] -> (o [B,H,N,V], final_state [B,H,K,V] or None)."""
    if backend is Backend.LOOP:
        return naive_causal_linear_attn(q, k, v, initial_state, output_final_state)
    if backend is Backend.CHUNKED:
        return chunked_causal_linear_attn(q, k, v, initial_state, output_final_state)
    if backend is Backend.FLA:
        return _fla_causal_linear_attn(q, k, v, initial_state, output_final_state)
    raise NotImplementedError(f"backend {backend!r} is not implemented")


def fla_chunk_kernel() -> Any:
    """flash-linear-attention's `chunk_simple_gla` (q, k, v [B,N,H,·]); a clear error when fla is not installed."""
    try:
        from fla.ops.simple_gla import chunk_simple_gla  # lazy: an optional extra, CUDA only
    except ImportError as e:
        raise RuntimeError(
            "Backend.FLA needs flash-linear-attention (pip install 'longrec[gpu]'); use Backend.CHUNKED without it"
        ) from e
    return chunk_simple_gla


def fla_dtype(q: Tensor, k: Tensor, v: Tensor) -> torch.dtype:
    """The one dtype fla's kernels get: the autocast dtype inside a CUDA autocast, else the promoted input dtype.
    Under a bf16 autocast q and k leave their linears as bf16 while a mixer's ones column (the normaliser) keeps v
    in fp32; mixed operands make fla's Triton kernels fail to compile or fault (seen on an H200, fla 0.6.0)."""
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)


def _fla_causal_linear_attn(
    q: Tensor, k: Tensor, v: Tensor, initial_state: Tensor | None, output_final_state: bool
) -> tuple[Tensor, Tensor | None]:
    """flash-linear-attention's chunk kernel (simple GLA without gates = plain linear attention, scale 1).
    Same shapes as causal_linear_attn; fla keeps the final state in float32."""
    chunk_simple_gla = fla_chunk_kernel()
    tensors = (q, k, v) if initial_state is None else (q, k, v, initial_state)
    if not all(t.is_cuda for t in tensors):
        devices = sorted({str(t.device) for t in tensors})
        raise RuntimeError(f"Backend.FLA runs on CUDA tensors only, got {', '.join(devices)}; use Backend.CHUNKED")
    if q.dtype not in _FLA_DTYPES:
        raise RuntimeError(f"Backend.FLA supports float32, float16 and bfloat16, got {q.dtype}; use Backend.CHUNKED")
    # fla wants [B,N,H,·] of one dtype; ours is [B,H,N,·], possibly mixed (see fla_dtype)
    dtype = fla_dtype(q, k, v)
    qt, kt, vt = (t.to(dtype).transpose(1, 2).contiguous() for t in (q, k, v))  # (B, N, H, ·)
    s0 = None if initial_state is None else initial_state.float()
    o, final = chunk_simple_gla(q=qt, k=kt, v=vt, scale=1.0, initial_state=s0, output_final_state=output_final_state)
    return o.transpose(1, 2), (final if output_final_state else None)  # (B, H, N, V)
