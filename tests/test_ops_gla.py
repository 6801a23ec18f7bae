"""Gated linear attention: chunked == naive (outputs, final state, every gradient); pads, strong decays, hand step."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.gla import gated_linear_attn
from longrec.ops.gla.chunked import chunked_gla
from tests_helpers import assert_match, rel_rms, with_grads

GRADS = "q k v g S0"  # the inputs whose gradients `run` returns, in order

F64 = 1e-10  # relative RMS error in float64: the two paths differ only by rounding
F32 = 5e-3  # DESIGN §3.6, fp32


def inputs(
    B: int,
    H: int,
    N: int,
    K: int,
    V: int,
    pad: int,
    seed: int,
    dtype: torch.dtype = torch.float64,
    per_head: bool = False,
    strength: float = 2.0,
) -> list[Tensor]:
    """q, k, v, g, S0 with the first `pad` positions made the identity as a mixer makes its left pads (g = 0, k = 0)
    and garbage in their q and v. g [B,H,N,K] uniform in (-strength, 0), or [B,H,N] with per_head."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, H, N, K, generator=gen, dtype=dtype) / K**0.5 for _ in range(2))
    v = torch.randn(B, H, N, V, generator=gen, dtype=dtype)
    g = -strength * torch.rand(B, H, N, *(() if per_head else (K,)), generator=gen, dtype=dtype)
    k[:, :, :pad] = 0.0
    g[:, :, :pad] = 0.0
    q[:, :, :pad] *= 100.0
    v[:, :, :pad] *= 100.0
    return [q, k, v, g, torch.randn(B, H, K, V, generator=gen, dtype=dtype)]


def run(
    backend: Backend, q: Tensor, k: Tensor, v: Tensor, g: Tensor, s0: Tensor | None, chunk: int = 16
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Output, final state and the gradients of a random loss of both w.r.t. q, k, v, g (and s0 when given)."""
    def op(*a: Tensor, initial_state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if backend is Backend.CHUNKED:
            return chunked_gla(*a, initial_state=initial_state, output_final_state=True, chunk=chunk)
        return gated_linear_attn(*a, initial_state=initial_state, output_final_state=True, backend=backend)

    return with_grads(op, (q, k, v, g), s0)


CASES = [  # (B, H, N, K, V, left pad, chunk): N off the chunk grid, K != V, N = 1, B = 1, all-pad chunks, chunk sizes
    (2, 3, 63, 12, 20, 0, 16),
    (2, 2, 130, 8, 9, 37, 32),
    (3, 1, 5, 7, 9, 2, 1),
    (3, 1, 5, 7, 9, 2, 4),
    (1, 2, 1, 4, 6, 0, 16),
    (1, 2, 200, 6, 5, 13, 64),
]


@pytest.mark.parametrize("per_head", [False, True], ids=["per-channel", "per-head"])
@pytest.mark.parametrize("with_state", [False, True], ids=["no-S0", "S0"])
@pytest.mark.parametrize(
    ("B", "H", "N", "K", "V", "pad", "chunk"), CASES, ids=["B{0}-N{2}-K{3}-V{4}-pad{5}-C{6}".format(*c) for c in CASES]
)
def test_chunked_matches_naive(
    B: int, H: int, N: int, K: int, V: int, pad: int, chunk: int, with_state: bool, per_head: bool
) -> None:
    q, k, v, g, s0 = inputs(B, H, N, K, V, pad, seed=N + K, per_head=per_head)
    if per_head:
        g = g[..., None]  # (B, H, N, 1): the dispatcher's layout for one decay per head
    init = s0 if with_state else None
    assert_match(run(Backend.CHUNKED, q, k, v, g, init, chunk), run(Backend.LOOP, q, k, v, g, init), F64, GRADS)


def test_float32_within_the_design_tolerance() -> None:
    q, k, v, g, s0 = inputs(2, 2, 100, 16, 16, 9, seed=5, dtype=torch.float32)
    got = run(Backend.CHUNKED, q, k, v, g, s0)
    assert got[0].dtype == torch.float32
    assert_match(got, run(Backend.LOOP, q, k, v, g, s0), F32, GRADS)


@pytest.mark.parametrize(("dtype", "strength"), [(torch.float32, 5.0), (torch.float64, 60.0)], ids=["fp32", "fp64"])
def test_strong_decays_never_overflow(dtype: torch.dtype, strength: float) -> None:
    # log-decay -5 a step in fp32: exp(-b) over a 16-chunk would be exp(75) ~ 4e32, near fp32's limit, and over 64
    # exp(315) = inf; -60 a step in fp64 overflows exp(-b) (exp(900)) within 16 steps even in fp64
    q, k, v, _, s0 = inputs(2, 2, 200, 8, 8, 0, seed=1, dtype=dtype)
    g = torch.full((2, 2, 200, 8), -strength, dtype=dtype)
    g[..., ::2] /= 10  # mixed strengths across channels
    for chunk in (16, 64):
        got = run(Backend.CHUNKED, q, k, v, g, s0, chunk)
        assert all(torch.isfinite(t).all() for t in (got[0], got[1], *got[2]))
        assert_match(got, run(Backend.LOOP, q, k, v, g, s0), F32 if dtype == torch.float32 else F64, GRADS)


def test_per_head_decay_equals_the_same_decay_on_every_channel() -> None:
    q, k, v, g, s0 = inputs(2, 3, 40, 5, 6, 4, seed=2, per_head=True)  # g (B, H, N)
    o, s = gated_linear_attn(q, k, v, g, s0, True)
    o_ref, s_ref = gated_linear_attn(q, k, v, g[..., None].expand(k.shape), s0, True, Backend.LOOP)
    assert s is not None and s_ref is not None
    assert rel_rms(o, o_ref) < F64 and rel_rms(s, s_ref) < F64


@pytest.mark.parametrize("backend", [Backend.CHUNKED, Backend.LOOP])
def test_identity_pads_leave_the_state_unchanged(backend: Backend) -> None:
    q, k, v, g, s0 = inputs(2, 2, 40, 8, 6, 11, seed=3)
    o_pad, s_pad = gated_linear_attn(q, k, v, g, s0, True, backend)
    o, s = gated_linear_attn(q[:, :, 11:], k[:, :, 11:], v[:, :, 11:], g[:, :, 11:], s0, True, backend)
    assert s_pad is not None and s is not None
    assert rel_rms(s_pad, s) < F64 and rel_rms(o_pad[:, :, 11:], o) < F64
    torch.testing.assert_close(o_pad[:, :, :11], q[:, :, :11] @ s0)  # pads read the state as it came in


def test_naive_one_step_follows_the_formula() -> None:
    # S_1 = diag(exp g) S_0 + k v^T, o = S_1^T q, written out for one head with K = 3, V = 2
    q, k, g = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.5, 1.0, -1.0]), torch.tensor([-0.1, -1.0, -3.0])
    v, s0 = torch.tensor([2.0, -1.0]), torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    S1 = torch.diag(g.exp()) @ s0 + torch.outer(k, v)
    o, s = gated_linear_attn(*(t.view(1, 1, 1, -1) for t in (q, k, v, g)), s0[None, None], True, Backend.LOOP)
    assert s is not None
    torch.testing.assert_close(s[0, 0], S1)
    torch.testing.assert_close(o.flatten(), S1.T @ q)


def test_empty_window_bad_chunk_and_missing_backends() -> None:
    q, k, v, g, s0 = inputs(1, 2, 3, 4, 5, 0, seed=0)
    o, s = gated_linear_attn(q[:, :, :0], k[:, :, :0], v[:, :, :0], g[:, :, :0], s0, True)
    assert o.shape == (1, 2, 0, 5) and s is not None and torch.equal(s, s0)
    with pytest.raises(ValueError, match="power of two"):
        chunked_gla(q, k, v, g, chunk=24)
    with pytest.raises(NotImplementedError, match="fla"):
        gated_linear_attn(q, k, v, g, backend=Backend.FLA)
