"""What `longrec export` traces instead of the fast paths: each op's Backend.SCRIPT loop against the naive oracle
(outputs, final state, every gradient, with left pads), the efficient mixer's cummax-free running max, and the
exact log2 buckets of the time channel and the repeat head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.config import load_config
from longrec.mixers.efficient import _running_max
from longrec.model.time import bucket, floor_log2
from longrec.objectives import build_model
from longrec.ops.backend import Backend
from longrec.ops.delta import gated_delta_rule
from longrec.ops.gla import gated_linear_attn
from longrec.ops.lru import lru_scan
from tests_helpers import assert_match, with_grads

F64 = 1e-10  # relative RMS in float64: the script loop and the oracle differ only by rounding
F32 = 1e-5  # in float32


def _padded(B: int, H: int, N: int, pad: int, dtype: torch.dtype, gen: torch.Generator) -> list[Tensor]:
    """q, k (unit rows), v [B,H,N,·] and per-channel log-decays g < 0, the first `pad` positions identities as a
    mixer makes its pads (k = 0, g = 0) with garbage in q and v."""
    q = torch.randn(B, H, N, 5, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(B, H, N, 5, generator=gen, dtype=dtype), dim=-1)
    v = 10 * torch.randn(B, H, N, 6, generator=gen, dtype=dtype)
    g = -torch.rand(B, H, N, 5, generator=gen, dtype=dtype)
    k[:, :, :pad], g[:, :, :pad] = 0.0, 0.0
    return [q, k, v, g]


CASES = [(torch.float64, F64, 1, 0), (torch.float64, F64, 37, 11), (torch.float32, F32, 50, 7)]
IDS = ["fp64-N1", "fp64-N37-pad11", "fp32-N50-pad7"]


@pytest.mark.parametrize("per_head", [False, True], ids=["per-channel", "per-head"])
@pytest.mark.parametrize(("dtype", "tol", "N", "pad"), CASES, ids=IDS)
def test_gla_script_loop_matches_the_oracle(dtype: torch.dtype, tol: float, N: int, pad: int, per_head: bool) -> None:
    gen = torch.Generator().manual_seed(N)
    q, k, v, g = _padded(2, 3, N, pad, dtype, gen)
    g = g[..., :1] if per_head else g  # (B, H, N, 1): retention's one decay per head
    s0 = torch.randn(2, 3, 5, 6, generator=gen, dtype=dtype)
    for init in (None, s0):
        def op(*a: Tensor, initial_state: Tensor | None, backend: Backend) -> tuple[Tensor, Tensor | None]:
            return gated_linear_attn(*a, initial_state=initial_state, output_final_state=True, backend=backend)

        got = with_grads(lambda *a, initial_state: op(*a, initial_state=initial_state, backend=Backend.SCRIPT),
                         (q, k, v, g), init)
        want = with_grads(lambda *a, initial_state: op(*a, initial_state=initial_state, backend=Backend.LOOP),
                          (q, k, v, g), init)
        assert_match(got, want, tol, "q k v g S0")


@pytest.mark.parametrize(("dtype", "tol", "N", "pad"), CASES, ids=IDS)
def test_gated_delta_script_loop_matches_the_oracle(dtype: torch.dtype, tol: float, N: int, pad: int) -> None:
    gen = torch.Generator().manual_seed(N)
    q, k, v, g = _padded(2, 3, N, pad, dtype, gen)
    g, beta = g[..., 0], torch.rand(2, 3, N, generator=gen, dtype=dtype)
    beta[:, :, :pad] = 0.0
    s0 = torch.randn(2, 3, 5, 6, generator=gen, dtype=dtype)
    for init in (None, s0):
        got, want = (with_grads(lambda *a, initial_state, be=be: gated_delta_rule(
            *a, initial_state=initial_state, output_final_state=True, backend=be), (q, k, v, g, beta), init)
            for be in (Backend.SCRIPT, Backend.LOOP))
        assert_match(got, want, tol, "q k v g beta S0")


@pytest.mark.parametrize(("dtype", "tol", "N", "pad"), CASES, ids=IDS)
def test_lru_script_loop_matches_the_oracle(dtype: torch.dtype, tol: float, N: int, pad: int) -> None:
    gen = torch.Generator().manual_seed(N)
    r, phase = 0.5 + 0.5 * torch.rand(2, N, 7, generator=gen), 2 * math.pi * torch.rand(2, N, 7, generator=gen)
    a = torch.stack([r * phase.cos(), r * phase.sin()], -1).to(dtype)  # (B, N, P, 2)
    b = torch.randn(2, N, 7, 2, generator=gen, dtype=dtype)
    a[:, :pad], b[:, :pad] = torch.tensor([1.0, 0.0], dtype=dtype), 0.0  # pads: the identity
    h0 = torch.randn(2, 7, 2, generator=gen, dtype=dtype)
    for init in (None, h0):
        got, want = (with_grads(lambda *x, initial_state, be=be: lru_scan(
            *x, initial_state=initial_state, output_final_state=True, backend=be), (a, b), init)
            for be in (Backend.SCRIPT, Backend.LOOP))
        assert_match(got, want, tol, "a b h0")


@pytest.mark.parametrize("preset", ["lrurec", "gla", "retention", "gated-delta"])
def test_a_mixer_on_the_script_backend_equals_its_default_forward_and_step(preset: str) -> None:
    base = ["model.dim=16", "model.max_len=10", "model.dropout=0.0"]
    torch.manual_seed(0)
    fast = build_model(20, load_config(preset, base).model, load_config(preset, base).train).eval()
    cfg = load_config(preset, [*base, "model.mixer_args.backend=script"])
    slow = build_model(20, cfg.model, cfg.train).eval()
    slow.load_state_dict(fast.state_dict())
    items = torch.tensor([[0, 0, 0, 3, 4, 5, 1, 2, 9, 7], [4, 4, 1, 2, 3, 8, 8, 8, 1, 6]])
    with torch.no_grad():
        torch.testing.assert_close(slow(items, items > 0), fast(items, items > 0), atol=1e-5, rtol=1e-5)
        _, s_fast = fast.prefill(items[:, :-1], items[:, :-1] > 0)
        _, s_slow = slow.prefill(items[:, :-1], items[:, :-1] > 0)
        h_fast, _ = fast.step(s_fast, items[:, -1])
        h_slow, _ = slow.step(s_slow, items[:, -1])
        torch.testing.assert_close(h_slow, h_fast, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("C", "N"), [(1, 5), (4, 12), (8, 8), (3, 9)])
def test_the_efficient_running_max_is_cummax_exactly(C: int, N: int) -> None:
    k = torch.randn(2, 3, N, 5, generator=torch.Generator().manual_seed(N))
    k[:, :, :2] = float("-inf")  # pads, as the kernel masks them
    k[0, 0, N // 2 :] = float("-inf")
    assert torch.equal(_running_max(k, C), k.cummax(dim=2).values)


def test_floor_log2_is_exact_at_and_around_the_powers_of_two() -> None:
    p = 2.0 ** torch.arange(0, 40, dtype=torch.float64)
    x = torch.cat([p, p + 1, (p - 1).clamp(min=1), torch.tensor([float("nan")], dtype=torch.float64)])
    want = torch.tensor([math.floor(math.log2(v)) if v == v else float("nan") for v in x.tolist()],
                        dtype=torch.float64)
    torch.testing.assert_close(floor_log2(x), want, equal_nan=True)
    small = x < 2**24  # integers float32 holds exactly: the repeat head's ages and counts
    torch.testing.assert_close(floor_log2(x[small].float()), want[small].float())
    # the ONNX graph's log2 is ln(x) / ln(2), which puts 2^k just below k; the correction undoes it
    ratio = (torch.log(p) / torch.tensor(math.log(2), dtype=torch.float32).double()).floor()
    assert not torch.equal(ratio, want[:40])  # what the uncorrected ratio would give
    assert bucket(torch.tensor([0.0, 1.0, 3.0, 7.0], dtype=torch.float64)).tolist() == [1, 2, 3, 4]
