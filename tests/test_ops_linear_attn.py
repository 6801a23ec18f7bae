"""Causal linear attention: chunked == naive (outputs, final state, all gradients); FLA == chunked on CUDA."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.linear_attn import causal_linear_attn, fla_dtype

RTOL = 5e-3  # DESIGN §3.6: relative RMS error in fp32


def rel_rms(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).pow(2).mean().sqrt() / b.float().pow(2).mean().sqrt().clamp_min(1e-12))


def inputs(B: int, H: int, N: int, K: int, V: int, pad: int, seed: int, device: str = "cpu") -> list[Tensor]:
    """q, k, v, S0 in fp32 with the first `pad` positions of k and v zeroed (left padding)."""
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, N, K, generator=g) / K**0.5 for _ in range(2))
    v = torch.randn(B, H, N, V, generator=g)
    k[:, :, :pad] = 0.0
    v[:, :, :pad] = 0.0
    s0 = torch.randn(B, H, K, V, generator=g)
    return [t.to(device) for t in (q, k, v, s0)]


def run(backend: Backend, q: Tensor, k: Tensor, v: Tensor, s0: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Output, final state and the gradients of a random loss w.r.t. q, k, v (and s0 when given)."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    s = s0.detach().clone().requires_grad_() if s0 is not None else None
    o, final = causal_linear_attn(*leaves, initial_state=s, output_final_state=True, backend=backend)
    assert final is not None
    g = torch.Generator(device=q.device).manual_seed(7)
    do = torch.randn(o.shape, generator=g, device=q.device)
    dS = torch.randn(final.shape, generator=g, device=q.device)
    ((o.float() * do).sum() + (final.float() * dS).sum()).backward()
    grads = [t.grad for t in leaves] + ([s.grad] if s is not None else [])
    assert all(gr is not None for gr in grads)
    return o.detach(), final.detach(), grads  # type: ignore[return-value]


CASES = [  # (B, H, N, K, V, left pad): odd sizes, N across several chunks, N below one chunk, all-pad prefix
    (2, 3, 63, 60, 60, 0),
    (2, 2, 130, 60, 61, 17),
    (3, 1, 5, 7, 9, 2),
    (1, 2, 1, 4, 4, 0),
]


@pytest.mark.parametrize("with_state", [False, True], ids=["no-S0", "S0"])
@pytest.mark.parametrize(
    ("B", "H", "N", "K", "V", "pad"), CASES, ids=[f"N{c[2]}-K{c[3]}-V{c[4]}-pad{c[5]}" for c in CASES]
)
def test_chunked_matches_naive(B: int, H: int, N: int, K: int, V: int, pad: int, with_state: bool) -> None:
    q, k, v, s0 = inputs(B, H, N, K, V, pad, seed=N + K)
    init = s0 if with_state else None
    o_ref, s_ref, g_ref = run(Backend.LOOP, q, k, v, init)
    o, s, grads = run(Backend.CHUNKED, q, k, v, init)
    assert o.shape == (B, H, N, V) and s.shape == (B, H, K, V)
    assert rel_rms(o, o_ref) < RTOL
    assert rel_rms(s, s_ref) < RTOL
    for name, gr, ref in zip("q k v S0".split(), grads, g_ref, strict=False):
        assert gr.shape == ref.shape and rel_rms(gr, ref) < RTOL, f"d{name}"


def test_zeroed_rows_leave_the_state_unchanged() -> None:
    q, k, v, s0 = inputs(2, 2, 40, 8, 8, pad=11, seed=3)
    o_pad, s_pad = causal_linear_attn(q, k, v, initial_state=s0, output_final_state=True)
    o, s = causal_linear_attn(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], initial_state=s0, output_final_state=True)
    assert s_pad is not None and s is not None
    assert rel_rms(s_pad, s) < 1e-5 and rel_rms(o_pad[:, :, 11:], o) < 1e-5
    # before the first real row the output is the initial state read by q
    assert rel_rms(o_pad[:, :, :11], q[:, :, :11] @ s0) < 1e-5


def test_naive_oracle_on_a_hand_example() -> None:
    # one head, K = V = 1: o_t = q_t * (s0 + sum_{m<=t} k_m v_m)
    q, k, v = (torch.tensor(x).view(1, 1, 3, 1) for x in ([1.0, 2.0, 3.0], [1.0, 0.0, 2.0], [2.0, 5.0, 1.0]))
    o, s = causal_linear_attn(q, k, v, torch.full((1, 1, 1, 1), 0.5), True, Backend.LOOP)
    assert o.flatten().tolist() == [2.5, 5.0, 13.5] and s is not None and s.item() == 4.5


def test_fla_raises_clearly_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, _ = inputs(1, 1, 4, 4, 4, 0, seed=0)
    # fla installed (stubbed here) but CPU tensors: the device is named, nothing runs on another backend
    called = []
    stub = types.ModuleType("fla.ops.simple_gla")
    stub.chunk_simple_gla = lambda **kw: called.append(kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fla", types.ModuleType("fla"))
    monkeypatch.setitem(sys.modules, "fla.ops", types.ModuleType("fla.ops"))
    monkeypatch.setitem(sys.modules, "fla.ops.simple_gla", stub)
    with pytest.raises(RuntimeError, match="CUDA tensors only, got cpu"):
        causal_linear_attn(q, k, v, backend=Backend.FLA)
    assert not called


def test_fla_raises_clearly_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, _ = inputs(1, 1, 4, 4, 4, 0, seed=0)
    monkeypatch.setitem(sys.modules, "fla", None)  # import fails as if the package were missing
    with pytest.raises(RuntimeError, match=r"needs flash-linear-attention \(pip install 'longrec\[gpu\]'\)"):
        causal_linear_attn(q, k, v, backend=Backend.FLA)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, RTOL), (torch.bfloat16, 3e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-S0", "S0"])
def test_fla_matches_chunked(dtype: torch.dtype, tol: float, with_state: bool) -> None:
    pytest.importorskip("fla")
    q, k, v, s0 = inputs(2, 4, 300, 64, 64, pad=37, seed=1, device="cuda")
    init = s0 if with_state else None
    o_ref, s_ref, g_ref = run(Backend.CHUNKED, q, k, v, init)  # fp32 reference
    o, s, grads = run(Backend.FLA, q.to(dtype), k.to(dtype), v.to(dtype), init)
    assert o.dtype == dtype
    assert rel_rms(o, o_ref) < tol
    assert rel_rms(s, s_ref) < tol
    for name, gr, ref in zip("q k v S0".split(), grads, g_ref, strict=False):
        assert rel_rms(gr, ref) < tol, f"d{name}"


def test_fla_gets_one_dtype_from_mixed_inputs() -> None:
    # q, k bf16 from autocast linears, v fp32 with its ones column: fla must not see mixed operands
    q = k = torch.zeros(1, 1, 2, 2, dtype=torch.bfloat16)
    v = torch.zeros(1, 1, 2, 3)
    assert fla_dtype(q, k, v) == torch.float32
    assert fla_dtype(q, k, v.bfloat16()) == torch.bfloat16
