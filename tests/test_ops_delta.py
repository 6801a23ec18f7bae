"""Gated delta rule: chunked (WY form) == naive (outputs, final state, all gradients); pads, strong decays, by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.delta import gated_delta_rule
from longrec.ops.delta.chunked import chunked_gated_delta
from tests_helpers import assert_match, rel_rms, with_grads

GRADS = "q k v g beta S0"  # the inputs whose gradients `run` returns, in order

F64 = 1e-10  # relative RMS error in float64: the two paths differ only by rounding
F32 = 5e-3  # DESIGN §3.6, fp32


def inputs(
    B: int, H: int, N: int, K: int, V: int, pad: int, seed: int, dtype: torch.dtype = torch.float64
) -> list[Tensor]:
    """q, k (unit rows, as the mixer's), v, g in (-2, 0), β in (0, 1), S0; the first `pad` positions made the
    identity as a mixer makes its left pads (g = 0, β = 0, k = 0), with garbage in their q and v."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, N, K, generator=gen, dtype=dtype) / K**0.5
    k = F.normalize(torch.randn(B, H, N, K, generator=gen, dtype=dtype), dim=-1)
    v = torch.randn(B, H, N, V, generator=gen, dtype=dtype)
    g = -2.0 * torch.rand(B, H, N, generator=gen, dtype=dtype)
    beta = torch.rand(B, H, N, generator=gen, dtype=dtype)
    k[:, :, :pad], g[:, :, :pad], beta[:, :, :pad] = 0.0, 0.0, 0.0
    q[:, :, :pad] *= 100.0
    v[:, :, :pad] *= 100.0
    return [q, k, v, g, beta, torch.randn(B, H, K, V, generator=gen, dtype=dtype)]


def run(
    backend: Backend, q: Tensor, k: Tensor, v: Tensor, g: Tensor, beta: Tensor, s0: Tensor | None, chunk: int = 16
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Output, final state and the gradients of a random loss of both w.r.t. q, k, v, g, β (and s0 when given)."""
    def op(*a: Tensor, initial_state: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if backend is Backend.CHUNKED:
            return chunked_gated_delta(*a, initial_state=initial_state, output_final_state=True, chunk=chunk)
        return gated_delta_rule(*a, initial_state=initial_state, output_final_state=True, backend=backend)

    return with_grads(op, (q, k, v, g, beta), s0)


CASES = [  # (B, H, N, K, V, left pad, chunk): N off the chunk grid, K != V, N = 1, B = 1, all-pad chunks, chunk sizes
    (2, 3, 63, 12, 20, 0, 16),
    (2, 2, 130, 8, 9, 37, 32),
    (3, 1, 5, 7, 9, 2, 1),
    (3, 1, 5, 7, 9, 2, 3),
    (1, 2, 1, 4, 6, 0, 16),
    (1, 2, 200, 6, 5, 13, 64),
]


@pytest.mark.parametrize("with_state", [False, True], ids=["no-S0", "S0"])
@pytest.mark.parametrize(
    ("B", "H", "N", "K", "V", "pad", "chunk"), CASES, ids=["B{0}-N{2}-K{3}-V{4}-pad{5}-C{6}".format(*c) for c in CASES]
)
def test_chunked_matches_naive(B: int, H: int, N: int, K: int, V: int, pad: int, chunk: int, with_state: bool) -> None:
    q, k, v, g, beta, s0 = inputs(B, H, N, K, V, pad, seed=N + K)
    init = s0 if with_state else None
    got = run(Backend.CHUNKED, q, k, v, g, beta, init, chunk)
    assert_match(got, run(Backend.LOOP, q, k, v, g, beta, init), F64, GRADS)


def test_float32_within_the_design_tolerance() -> None:
    q, k, v, g, beta, s0 = inputs(2, 2, 100, 16, 16, 9, seed=5, dtype=torch.float32)
    got = run(Backend.CHUNKED, q, k, v, g, beta, s0)
    assert got[0].dtype == torch.float32
    assert_match(got, run(Backend.LOOP, q, k, v, g, beta, s0), F32, GRADS)


def test_strong_decays_never_overflow() -> None:
    # log α = -5 a step over 200 steps in fp32 (exp(+5 t) would overflow past t = 17), β = 1 on some steps
    q, k, v, _, beta, s0 = inputs(2, 2, 200, 8, 8, 0, seed=1, dtype=torch.float32)
    g = torch.full((2, 2, 200), -5.0)
    g[..., ::3] = -0.05
    beta[..., ::4] = 1.0
    for chunk in (16, 64):
        got = run(Backend.CHUNKED, q, k, v, g, beta, s0, chunk)
        assert all(torch.isfinite(t).all() for t in (got[0], got[1], *got[2]))
        assert_match(got, run(Backend.LOOP, q, k, v, g, beta, s0), F32, GRADS)


@pytest.mark.parametrize("backend", [Backend.CHUNKED, Backend.LOOP])
def test_identity_pads_leave_the_state_unchanged(backend: Backend) -> None:
    q, k, v, g, beta, s0 = inputs(2, 2, 40, 8, 6, 11, seed=3)
    k[:, :, :11] = torch.randn(2, 2, 11, 8, dtype=k.dtype)  # β = 0 alone already makes a pad write nothing
    o_pad, s_pad = gated_delta_rule(q, k, v, g, beta, s0, True, backend)
    cut = (t[:, :, 11:] for t in (q, k, v, g, beta))
    o, s = gated_delta_rule(*cut, initial_state=s0, output_final_state=True, backend=backend)
    assert s_pad is not None and s is not None
    assert rel_rms(s_pad, s) < F64 and rel_rms(o_pad[:, :, 11:], o) < F64
    torch.testing.assert_close(o_pad[:, :, :11], q[:, :, :11] @ s0)  # pads read the state as it came in


def test_naive_one_step_follows_the_formula() -> None:
    # S_1 = α (I - β k k^T) S_0 + β k v^T, o = S_1^T q, written out for one head with K = 3, V = 2
    q, k = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.6, 0.0, -0.8])
    v, s0 = torch.tensor([2.0, -1.0]), torch.tensor([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    alpha, beta = 0.7, 0.4
    S1 = alpha * (torch.eye(3) - beta * torch.outer(k, k)) @ s0 + beta * torch.outer(k, v)
    g, b = torch.tensor([[[torch.tensor(alpha).log()]]]), torch.full((1, 1, 1), beta)
    o, s = gated_delta_rule(*(t.view(1, 1, 1, -1) for t in (q, k, v)), g, b, s0[None, None], True, Backend.LOOP)
    assert s is not None
    torch.testing.assert_close(s[0, 0], S1)
    torch.testing.assert_close(o.flatten(), S1.T @ q)


def test_full_write_overwrites_what_the_key_reads() -> None:
    # α = 1, β = 1, unit k: S_t^T k_t = v_t whatever the state held (the delta rule's overwrite), in both backends
    q, k, v, _, _, s0 = inputs(1, 2, 20, 8, 5, 0, seed=4)
    ones, zeros = torch.ones(1, 2, 20, dtype=q.dtype), torch.zeros(1, 2, 20, dtype=q.dtype)
    for backend in (Backend.CHUNKED, Backend.LOOP):
        o, _ = gated_delta_rule(k, k, v, zeros, ones, s0, False, backend)  # read each key right after writing it
        torch.testing.assert_close(o, v)


def test_empty_window_and_missing_backends() -> None:
    q, k, v, g, beta, s0 = inputs(1, 2, 3, 4, 5, 0, seed=0)
    o, s = gated_delta_rule(*(t[:, :, :0] for t in (q, k, v, g, beta)), initial_state=s0, output_final_state=True)
    assert o.shape == (1, 2, 0, 5) and s is not None and torch.equal(s, s0)
    with pytest.raises(NotImplementedError, match="fla"):
        gated_delta_rule(q, k, v, g, beta, backend=Backend.FLA)
