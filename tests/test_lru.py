"""LRU: the scan op against its sequential oracle, the layer's formula and initialisation, the LRURec preset."""

from __future__ import annotations

import math

import pytest
import torch

from longrec.config import load_config
from longrec.mixers import build_mixer
from longrec.mixers.lru import LRUMixer
from longrec.objectives import build_model
from longrec.ops import Backend
from longrec.ops.lru import lru_scan
from longrec.train.loop import make_optimizer


def lru(dim: int, args: dict) -> LRUMixer:
    m = build_mixer("lru", dim, 1, 0.0, args)
    assert isinstance(m, LRUMixer)
    return m


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt().clamp_min(1e-12))


def recurrence_inputs(N: int, lengths: list[int], P: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a, b [B,N,P,2] fp32 with |a| in [0.5, 0.999] and random phases, left padding as the mixer makes it
    (a = 1, b = 0 at pads); and the mask [B,N]."""
    g = torch.Generator().manual_seed(N)
    B = len(lengths)
    mask = torch.arange(N)[None] >= (N - torch.tensor(lengths))[:, None]  # (B, N) left-padded
    r, phase = 0.5 + 0.499 * torch.rand(B, N, P, generator=g), 2 * math.pi * torch.rand(B, N, P, generator=g)
    a = torch.stack([r * phase.cos(), r * phase.sin()], -1)
    b = torch.randn(B, N, P, 2, generator=g)
    m = mask[..., None, None]
    return torch.where(m, a, torch.tensor([1.0, 0.0])), torch.where(m, b, 0.0), mask


def run_with_grads(backend: Backend, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> list[torch.Tensor]:
    """Outputs, final state and the gradients of every input under a loss touching both outputs."""
    leaves = [t.clone().requires_grad_() for t in (a, b) + ((h0,) if h0 is not None else ())]
    h, final = lru_scan(leaves[0], leaves[1], leaves[2] if h0 is not None else None, True, backend=backend)
    assert final is not None
    g = torch.Generator().manual_seed(7)
    loss = (h * torch.randn(h.shape, generator=g)).sum() + (final * torch.randn(final.shape, generator=g)).sum()
    loss.backward()
    return [h.detach(), final.detach()] + [t.grad for t in leaves if t.grad is not None]


@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "initial-state"])
@pytest.mark.parametrize("N", [1, 63, 130])
def test_scan_matches_the_sequential_oracle(N: int, with_state: bool) -> None:
    a, b, _ = recurrence_inputs(N, [N, max(1, N // 2), 1])
    h0 = torch.randn(3, 7, 2, generator=torch.Generator().manual_seed(3)) if with_state else None
    fast = run_with_grads(Backend.SCAN, a, b, h0)
    slow = run_with_grads(Backend.LOOP, a, b, h0)
    assert len(fast) == len(slow) == (5 if with_state else 4)
    for name, x, ref in zip(["h", "final", "da", "db", "dh0"], fast, slow, strict=False):
        assert x.shape == ref.shape and rel_rms(x, ref) < 5e-3, f"{name}: rel RMS {rel_rms(x, ref):.2e}"


def test_pads_are_identity_on_the_state() -> None:
    a, b, _ = recurrence_inputs(20, [20, 9])
    h0 = torch.randn(2, 7, 2)
    h, final = lru_scan(a, b, h0, output_final_state=True)
    torch.testing.assert_close(h[1, :11], h0[1].expand(11, 7, 2))  # row 1: 11 pads, the state waits
    # the same events without the pads in front reach the same state
    _, short = lru_scan(a[1:, 11:], b[1:, 11:], h0[1:], output_final_state=True)
    assert final is not None and short is not None
    torch.testing.assert_close(final[1:], short)


def test_empty_window_passes_the_state_and_missing_backends_raise() -> None:
    a, b, _ = recurrence_inputs(5, [5])
    h0 = torch.randn(1, 7, 2)
    h, final = lru_scan(a[:, :0], b[:, :0], h0, output_final_state=True)
    assert h.shape == (1, 0, 7, 2) and final is not None and torch.equal(final, h0)
    with pytest.raises(NotImplementedError, match="fla"):
        lru_scan(a, b, backend=Backend.FLA)
    with pytest.raises(NotImplementedError, match="chunked"):  # the recurrence runs as a scan or a loop
        lru_scan(a, b, backend=Backend.CHUNKED)
    assert Backend("naive") is Backend.LOOP  # the loop's old name, as saved configs may hold it


def test_layer_follows_the_lru_formula() -> None:
    torch.manual_seed(0)
    m = lru(6, {"skip": True, "state_mult": 2}).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, :4] = False
    mask[0, 5] = False  # an interior pad (the loader never makes one): the state must wait, not decay by λ
    y = m(x, mask)
    assert m.skip is not None
    lam = torch.exp(torch.complex(-m.nu_log.exp(), m.theta_log.exp()))  # (P,)
    w_in = m.in_proj.weight.view(12, 2, 6)  # (P, re/im, D)
    b_in = m.in_proj.bias.view(12, 2)
    w_out = m.out_proj.weight.view(6, 12, 2)  # (D, P, re/im)
    for i in range(2):
        h = torch.zeros(12, dtype=torch.complex128)
        for t in range(9):
            if not mask[i, t]:
                assert (y[i, t] == 0).all()
                continue
            bx = torch.complex(w_in[:, 0] @ x[i, t] + b_in[:, 0], w_in[:, 1] @ x[i, t] + b_in[:, 1])
            h = lam * h + m.gamma_log.exp() * bx
            want = w_out[..., 0] @ h.real + w_out[..., 1] @ h.imag + m.out_proj.bias + m.skip * x[i, t]
            torch.testing.assert_close(y[i, t], want)


@pytest.mark.parametrize(("r_min", "r_max", "max_phase"), [(0.8, 0.99, 2 * math.pi), (0.4, 0.5, math.pi / 10)])
def test_ring_initialisation(r_min: float, r_max: float, max_phase: float) -> None:
    torch.manual_seed(0)
    m = lru(64, {"r_min": r_min, "r_max": r_max, "max_phase": max_phase})
    with torch.no_grad():
        radius, phase = torch.exp(-m.nu_log.exp()), m.theta_log.exp()
        gamma = m.gamma_log.exp()
    assert radius.numel() == 128  # P = 2 * dim complex channels, as LRURec
    assert radius.min() >= r_min - 1e-6 and radius.max() <= r_max + 1e-6
    span = r_max - r_min  # the ring is covered, not collapsed to a point
    assert radius.min() < r_min + 0.1 * span and radius.max() > r_max - 0.1 * span
    assert phase.min() >= 0 and phase.max() < max_phase and phase.max() > 0.9 * max_phase
    torch.testing.assert_close(gamma, torch.sqrt(1 - radius**2))


def test_preset_builds_a_post_ln_encoder_without_weight_decay_on_nu_theta_gamma() -> None:
    cfg = load_config("lrurec")
    assert cfg.model.mixer == "lru" and not cfg.model.norm_first and cfg.model.pos == "none"
    assert cfg.train.weight_decay == 0.01 and cfg.train.objective == "next_item"
    torch.manual_seed(0)
    enc = build_model(50, cfg.model, cfg.train)
    opt = make_optimizer(enc, cfg.train)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}
    recurrence = [(n, p) for n, p in enc.named_parameters() if n.rsplit(".", 1)[-1].endswith("_log")]
    assert len(recurrence) == 3 * cfg.model.layers
    for n, p in recurrence:
        assert getattr(p, "_no_weight_decay", False) and id(p) not in decay, n
    mixer = enc.blocks[0].mixer
    assert isinstance(mixer, LRUMixer)
    assert id(mixer.in_proj.weight) in decay and id(mixer.out_proj.weight) in decay


def test_preset_encoder_streams_one_event_at_a_time() -> None:
    cfg = load_config("lrurec")
    torch.manual_seed(0)
    enc = build_model(50, cfg.model, cfg.train).double().eval()
    items = torch.tensor([[0, 0, 3, 7, 1, 9, 4], [5, 2, 8, 8, 1, 3, 6]])
    mask = items > 0
    h = enc(items, mask)
    for i in range(2):
        state = enc.init_state(1, torch.device("cpu"))
        sizes = {k: v.numel() for k, v in state.items()}
        for t in range(7):
            if mask[i, t]:
                out, state = enc.step(state, items[i : i + 1, t])
                torch.testing.assert_close(out[0], h[i, t])
        assert {k: v.numel() for k, v in state.items()} == sizes  # O(state) per event, whatever the history


def test_skip_variant_keeps_the_contract() -> None:
    torch.manual_seed(0)
    m = lru(6, {"skip": True}).double()
    x = torch.randn(2, 8, 6, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, :3] = False
    full = m(x, mask)
    (full**2).sum().backward()
    assert m.skip is not None and m.skip.grad is not None and m.skip.grad.abs().sum() > 0
    y, state = m.prefill(x[:, :5], mask[:, :5])
    torch.testing.assert_close(y, full[:, :5])
    for t in range(5, 8):
        y_t, state = m.step(state, x[:, t])
        torch.testing.assert_close(y_t, full[:, t])


def test_backends_of_the_mixer_agree_and_auto_picks_by_batch() -> None:
    """scan and loop give the same outputs and gradients through the layer (B = 40: auto takes the loop on CPU)."""
    from longrec.errors import ConfigError
    from longrec.mixers.lru import _pick_backend

    cpu = torch.device("cpu")
    assert _pick_backend("auto", 40, cpu) is Backend.LOOP and _pick_backend("auto", 4, cpu) is Backend.SCAN
    assert _pick_backend("auto", 40, torch.device("cuda")) is Backend.SCAN
    torch.manual_seed(0)
    x = torch.randn(40, 13, 8)
    mask = torch.arange(13)[None] >= torch.randint(0, 13, (40, 1))  # left padding, some rows empty
    outs = []
    for backend in ("scan", "loop", "auto"):
        torch.manual_seed(1)
        m = lru(8, {"backend": backend})
        xx = x.clone().requires_grad_()
        y = m(xx, mask)
        (y * torch.linspace(-1, 1, 8)).sum().backward()
        outs.append([y.detach(), xx.grad, m.nu_log.grad, m.in_proj.weight.grad])
    for other in outs[1:]:
        for got, ref in zip(other, outs[0], strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="backend must be auto, scan, loop or script"):
        lru(8, {"backend": "fast"})
