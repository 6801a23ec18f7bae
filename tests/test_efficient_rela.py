"""Efficient Attention and RELA against direct references (what the registry-wide contract test does not cover)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from longrec.config import load_config
from longrec.errors import ConfigError
from longrec.mixers import build_mixer
from longrec.mixers.efficient import EfficientMixer, causal_efficient_attn, global_efficient_attn
from longrec.mixers.rela import RelaMixer, rotary
from longrec.objectives import build_model

B, H, N, K = 3, 2, 11, 5
LENGTHS = [11, 7, 1]


def left_mask(lengths: list[int], n: int) -> torch.Tensor:
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, L in enumerate(lengths):
        mask[i, n - L :] = True
    return mask


def qkv(seed: int, dtype: torch.dtype = torch.float64, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, N, K, generator=g, dtype=dtype) for _ in range(3))
    return q, k * scale, v


def empty_state(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    S = torch.zeros(B, H, K, K, dtype=dtype)
    return {"S": S, "z": S[..., 0].clone(), "m": torch.full_like(S[..., 0], float("-inf"))}


def causal_efficient_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """O(N²): at each t, softmax of q_t over features times a softmax of each key feature over the real prefix."""
    out = torch.zeros_like(v)
    for b in range(B):
        for t in range(N):
            if not mask[b, t]:
                continue
            idx = mask[b, : t + 1].nonzero()[:, 0]  # real positions up to t
            wk = k[b][:, idx].softmax(dim=1)  # (H, |prefix|, K): over positions
            out[b, :, t] = torch.einsum("hk,hmk,hmv->hv", q[b, :, t].softmax(-1), wk, v[b][:, idx])
    return out


@pytest.mark.parametrize("chunk", [1, 3, 4, 16])
def test_causal_efficient_equals_the_quadratic_reference(chunk: int) -> None:
    q, k, v = qkv(0)
    mask = left_mask(LENGTHS, N)
    y, state = causal_efficient_attn(q, k, v, mask, empty_state(), chunk)
    torch.testing.assert_close(y, causal_efficient_reference(q, k, v, mask), rtol=1e-10, atol=1e-10)  # 0 at pads
    # the state is Σ exp(k - m) v^T, Σ exp(k - m) over the real events with m their max: rebuild it directly
    kk = k.masked_fill(~mask[:, None, :, None], float("-inf"))
    m = kk.amax(dim=2)
    e = torch.exp(kk - m[:, :, None])  # (B, H, N, K)
    torch.testing.assert_close(state["m"], m)
    torch.testing.assert_close(state["z"], e.sum(2), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state["S"], e.transpose(-1, -2) @ v, rtol=1e-10, atol=1e-10)


def test_causal_efficient_streams_across_chunk_boundaries() -> None:
    q, k, v = qkv(1)
    mask = left_mask(LENGTHS, N)
    full, _ = causal_efficient_attn(q, k, v, mask, empty_state(), 3)
    state = empty_state()
    for lo, hi in [(0, 5), (5, 6), (6, 11)]:  # windows cut across the chunks of 3, each starting from a state
        y, state = causal_efficient_attn(q[:, :, lo:hi], k[:, :, lo:hi], v[:, :, lo:hi], mask[:, lo:hi], state, 3)
        torch.testing.assert_close(y, full[:, :, lo:hi], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_causal_efficient_survives_large_keys(dtype: torch.dtype) -> None:
    q, k, v = qkv(2, dtype, scale=50.0)  # exp(50 · randn) overflows without the running-max shift
    k[:, :, -1] = 300.0  # a late key far above every earlier one: earlier outputs must not move
    mask = left_mask(LENGTHS, N)
    y, state = causal_efficient_attn(q, k, v, mask, empty_state(dtype), 4)
    assert torch.isfinite(y).all() and all(torch.isfinite(s[s > float("-inf")]).all() for s in state.values())
    ref = causal_efficient_reference(q.double(), k.double(), v.double(), mask)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)


def test_causal_efficient_gradients_are_finite_for_large_keys() -> None:
    q, k, v = qkv(3, torch.float32, scale=50.0)
    for t in (q, k, v):
        t.requires_grad_(True)
    y, _ = causal_efficient_attn(q, k, v, left_mask(LENGTHS, N), empty_state(torch.float32), 4)
    y.square().sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))


def test_global_efficient_equals_the_masked_softmax_formula() -> None:
    q, k, v = qkv(4)
    mask = left_mask(LENGTHS, N)
    k_pad = torch.where(mask[:, None, :, None], k, 1e3)  # huge garbage keys in the pads must not count
    y = global_efficient_attn(q, k_pad, v, mask)
    rho_k = k.masked_fill(~mask[:, None, :, None], float("-inf")).softmax(dim=2)  # (B, H, N, K) over positions
    ref = q.softmax(dim=-1) @ (rho_k.transpose(-1, -2) @ v)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


def test_efficient_mixer_step_matches_forward_through_several_chunks() -> None:
    torch.manual_seed(0)
    m = build_mixer("efficient", 8, 2, 0.0, {"causal": True, "chunk": 2}).double().eval()
    assert isinstance(m, EfficientMixer)
    x = torch.randn(2, 9, 8, dtype=torch.float64)
    mask = left_mask([9, 4], 9)
    full = m(x, mask)
    y, state = m.prefill(x[:, :5], mask[:, :5])
    torch.testing.assert_close(y, full[:, :5], rtol=1e-10, atol=1e-10)
    for t in range(5, 9):
        y_t, state = m.step(state, x[:, t])
        torch.testing.assert_close(y_t, full[:, t], rtol=1e-10, atol=1e-10)


def rela(causal: bool) -> RelaMixer:
    torch.manual_seed(0)
    m = build_mixer("rela", 8, 2, 0.0, {"causal": causal}).double().eval()
    assert isinstance(m, RelaMixer)
    return m


def rela_reference(m: RelaMixer, a: torch.Tensor, causal: bool) -> torch.Tensor:
    """One unpadded sequence a [L,D], written out position by position from the published formulas."""
    L, D = a.shape
    d = D // m.heads
    u = m.inp(a)
    q, k = (F.elu(m.qk(u)) + 1).chunk(2, dim=-1)
    theta = m.base ** (-torch.arange(D // 2, dtype=a.dtype) / (D // 2))
    rot = torch.polar(torch.ones(L, D // 2, dtype=a.dtype), torch.arange(L, dtype=a.dtype)[:, None] * theta)
    qr, kr = (torch.view_as_real(torch.view_as_complex(t.reshape(L, D // 2, 2)) * rot).reshape(L, D) for t in (q, k))
    att = torch.zeros(L, D, dtype=a.dtype)
    for t in range(L):
        last = t + 1 if causal else L
        for h in range(m.heads):
            s = slice(h * d, (h + 1) * d)
            num = sum((qr[t, s] @ kr[j, s]) * u[j, s] for j in range(last)) / last
            den = sum(q[t, s] @ k[j, s] for j in range(last)) / last
            att[t, s] = num / (den + m.eps)
    w = m.conv.weight[:, 0]  # (D, kernel): tap kernel-1 sees the current event
    taps = [[(w[:, i], t - m.kernel + 1 + i) for i in range(m.kernel) if t - m.kernel + 1 + i >= 0] for t in range(L)]
    local = torch.stack([sum(wi * u[j] for wi, j in tap) + m.conv.bias for tap in taps])  # earlier slots: zeros
    return m.out((att + F.silu(local)) * F.silu(m.gate(a)))


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_rela_equals_a_direct_reference_with_positions_from_the_mask(causal: bool) -> None:
    m = rela(causal)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 7, 8, generator=g, dtype=torch.float64)
    mask = left_mask([7, 4], 7)
    x = torch.where(mask[..., None], x, 30.0)  # garbage in the pads
    y = m(x, mask)
    for i, L in enumerate([7, 4]):
        torch.testing.assert_close(y[i, 7 - L :], rela_reference(m, x[i, 7 - L :], causal), rtol=1e-10, atol=1e-10)
    assert (y[1, :3] == 0).all()


def test_rotary_uses_the_given_positions_and_preserves_relative_angles() -> None:
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(2, 8, generator=g, dtype=torch.float64)
    dot = [rotary(a, torch.tensor(p), 1e4) @ rotary(b, torch.tensor(p - 3), 1e4) for p in (3, 10, 57)]
    torch.testing.assert_close(torch.stack(dot), dot[0].expand(3))  # depends only on the offset
    assert not torch.allclose(rotary(a, torch.tensor(1), 1e4), a)
    torch.testing.assert_close(rotary(a, torch.tensor(0), 1e4), a)


def test_rela_state_is_constant_size_and_counts_real_events() -> None:
    m = rela(True)
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    _, state = m.prefill(x, left_mask([6, 2], 6))
    assert state["count"].tolist() == [6, 2]
    assert state["u"].shape == (2, 8, 3) and (state["u"][1, :, 0] == 0).all()  # one slot from before the history
    _, state2 = m.step(state, x[:, 0])
    assert {k: v.shape for k, v in state2.items()} == {k: v.shape for k, v in state.items()}


@pytest.mark.parametrize(
    ("preset", "mixer", "causal", "objective"),
    [
        ("ea-sasrec", "efficient", True, "next_item"),
        ("recgrela", "rela", False, "last_item"),
        ("recgrela-causal", "rela", True, "next_item"),
    ],
)
def test_presets_build(preset: str, mixer: str, causal: bool, objective: str) -> None:
    cfg = load_config(preset)
    assert (cfg.model.mixer, cfg.model.mixer_args["causal"], cfg.train.objective) == (mixer, causal, objective)
    assert build_model(50, cfg.model, cfg.train).causal is causal
    if not causal:  # the leakage rule: a global mixer trained on every position is refused
        with pytest.raises(ConfigError, match="global"):
            build_model(50, cfg.model, load_config(preset, ["train.objective=next_item"]).train)
