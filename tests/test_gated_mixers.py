"""Retention, GLA and Gated DeltaNet beyond the contract: each layer against its formula written out, the decay
schedules, options the contract does not build (no conv, loop backend), config errors, and the presets streaming."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.config import load_config
from longrec.errors import ConfigError
from longrec.mixers import build_mixer
from longrec.mixers.gated_delta import GatedDeltaMixer
from longrec.mixers.gla import GLAMixer
from longrec.mixers.retention import RetentionMixer
from longrec.objectives import build_model
from longrec.train.loop import make_optimizer

D = 12
PRESETS = ["retention", "gla", "gated-delta"]


def make(name: str, heads: int, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mixer(name, D, heads, 0.0, args).double().eval()


def window(lengths: list[int], n: int) -> tuple[Tensor, Tensor]:
    """x [B,n,D] float64 and a left-padded mask with the given real lengths."""
    x = torch.randn(len(lengths), n, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mask = torch.arange(n)[None] >= (n - torch.tensor(lengths))[:, None]
    return x, mask


def readout(o: Tensor, gate: Tensor, weight: Tensor | None, out: torch.nn.Linear, eps: float) -> Tensor:
    """o [H,V] of one position, gate [H*V] -> y [D]: RMS norm per head, swish gate, output projection."""
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + eps) * (weight if weight is not None else 1.0)
    return out(F.silu(gate) * o.flatten())


def gammas(heads: int, args: dict) -> Tensor:
    """[H]: the decays of a retention layer built with these options."""
    m = make("retention", heads, args)
    assert isinstance(m, RetentionMixer)
    return m.log_decay().exp()


def test_retention_schedules() -> None:
    torch.testing.assert_close(gammas(4, {}), 1 - 2.0 ** -torch.tensor([5.0, 6.0, 7.0, 8.0], dtype=torch.float64))
    spread = gammas(6, {"schedule": "spread", "exp_min": 4.0, "exp_max": 9.0})
    torch.testing.assert_close(-torch.log2(1 - spread), torch.linspace(4.0, 9.0, 6, dtype=torch.float64))
    with pytest.raises(ConfigError, match="schedule must be one of retnet, spread"):
        make("retention", 2, {"schedule": "cosine"})
    fixed, learned = make("retention", 2, {}), make("retention", 2, {"learnable": True})
    assert "decay_log" not in fixed.state_dict() and "decay_log" not in dict(fixed.named_parameters())
    assert isinstance(learned.decay_log, torch.nn.Parameter)


def test_retention_follows_its_formula() -> None:
    m = make("retention", 2, {})
    assert isinstance(m, RetentionMixer)
    x, mask = window([7, 4], 7)
    y = m(x, mask)
    gamma = m.log_decay().exp()  # (H,)
    for i in range(2):
        real = x[i, mask[i]]  # (L, D): the events only
        q, k, v, r = m.proj(real).chunk(4, dim=-1)
        q, k, v = (t.view(-1, 2, 6) for t in (q / math.sqrt(6), k, v))  # (L, H, d)
        for t in range(len(real)):
            ages = t - torch.arange(t + 1, dtype=torch.float64)  # events since each earlier one
            w = gamma[None, :] ** ages[:, None] * torch.einsum("hd,mhd->mh", q[t], k[: t + 1])  # (t+1, H)
            o = torch.einsum("mh,mhd->hd", w, v[: t + 1])  # (H, d): sum_m γ_h^(t-m) (q_t . k_m) v_m
            torch.testing.assert_close(y[i, mask[i]][t], readout(o, r[t], None, m.out, m.eps))
    assert (y[~mask] == 0).all()


def test_gla_decay_is_per_key_channel_data_dependent_and_follows_its_formula() -> None:
    m = make("gla", 2, {})
    assert isinstance(m, GLAMixer)
    x, mask = window([6, 3], 6)
    y = m(x, mask)
    H, K, V = 2, m.head_k, m.head_v
    alpha = torch.sigmoid(m.decay(x)) ** (1 / 16)  # (B, N, H*K): α = σ(·)^(1/τ), τ = 16
    assert alpha.std(-1).min() > 0 and alpha.std(1).min() > 0  # differs across key channels and across events
    for i in range(2):
        real = x[i, mask[i]]
        q, k, v, r = m.proj(real).split([H * K, H * K, H * V, H * V], dim=-1)
        a = (torch.sigmoid(m.decay(real)) ** (1 / 16)).view(-1, H, K)
        S = torch.zeros(H, K, V, dtype=torch.float64)
        for t in range(len(real)):
            S = a[t, :, :, None] * S + k[t].view(H, K, 1) * v[t].view(H, 1, V)  # diag(α_t) S + k v^T per head
            o = torch.einsum("hk,hkv->hv", q[t].view(H, K) / math.sqrt(K), S)
            torch.testing.assert_close(y[i, mask[i]][t], readout(o, r[t], m.norm_weight, m.out, m.eps))


@pytest.mark.parametrize("conv", [0, 4])
def test_gated_delta_follows_the_paper_update(conv: int) -> None:
    m = make("gated_delta", 2, {"conv": conv})
    assert isinstance(m, GatedDeltaMixer)
    x, mask = window([6, 2], 6)
    y = m(x, mask)
    H, d = 2, 6
    for i in range(2):
        real = x[i, mask[i]]
        qkv, r, ab = m.proj(real).split([3 * D, D, 2 * H], dim=-1)
        if m.conv is not None:  # causal: the conv sees zeros before the first event
            qkv = F.conv1d(F.pad(qkv.T, (conv - 1, 0)), m.conv.T[:, None], groups=3 * D).T  # taps (3D, 1, kernel)
        q, k, v = F.silu(qkv).view(-1, 3, H, d).unbind(1)  # (L, H, d)
        a, b = ab.view(-1, 2, H).unbind(1)  # (L, H)
        alpha = torch.exp(-m.A_log.exp() * F.softplus(a + m.dt_bias))
        beta = torch.sigmoid(b)
        S = torch.zeros(H, d, d, dtype=torch.float64)
        for t in range(len(real)):
            kh = F.normalize(k[t], dim=-1)  # (H, d)
            proj = torch.eye(d, dtype=torch.float64) - beta[t, :, None, None] * kh[:, :, None] * kh[:, None, :]
            S = alpha[t, :, None, None] * proj @ S + beta[t, :, None, None] * kh[:, :, None] * v[t][:, None, :]
            o = torch.einsum("hk,hkv->hv", F.normalize(q[t], dim=-1) / math.sqrt(d), S)
            torch.testing.assert_close(y[i, mask[i]][t], readout(o, r[t], m.norm_weight, m.out, m.eps))


def test_gated_delta_without_conv_streams_and_ignores_pads() -> None:
    # the contract builds only the default (conv = 4); without the conv the state is S alone
    m = make("gated_delta", 3, {"conv": 0})
    assert isinstance(m, GatedDeltaMixer)
    x, mask = window([8, 5, 3], 8)  # every row real from position 5 on: the stepped events
    y = m(x, mask)
    x2 = torch.where(mask[..., None], x, 1e3)  # garbage in the pads
    torch.testing.assert_close(m(x2, mask), y, rtol=1e-10, atol=1e-10)
    y_pre, state = m.prefill(x[:, :5], mask[:, :5])
    assert set(state) == {"S"}
    torch.testing.assert_close(y_pre, y[:, :5], rtol=1e-10, atol=1e-10)
    for t in range(5, 8):
        y_t, state = m.step(state, x[:, t])
        torch.testing.assert_close(y_t, y[:, t], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "args"), [("retention", {}), ("gla", {}), ("gated_delta", {})])
def test_loop_backend_gives_the_same_layer_and_bad_options_are_config_errors(name: str, args: dict) -> None:
    x, mask = window([5, 3], 5)
    for loop in ("loop", "naive", "script"):  # naive: the loop's old name, still accepted from saved configs
        torch.testing.assert_close(make(name, 2, {**args, "backend": loop})(x, mask), make(name, 2, args)(x, mask))
    with pytest.raises(ConfigError, match="must be one of chunked, loop, script, got 'fla'"):
        make(name, 2, {"backend": "fla"})
    with pytest.raises(ConfigError, match="split evenly into 5 heads"):
        make(name, 5, {})


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_encoder_streams_one_event_at_a_time(preset: str) -> None:
    cfg = load_config(preset, ["model.dropout=0.0"])
    assert cfg.model.heads == 4 and cfg.model.dim == 64 and cfg.model.pos == "none" and cfg.model.norm_first
    torch.manual_seed(0)
    enc = build_model(50, cfg.model, cfg.train).double().eval()
    items = torch.tensor([[0, 0, 0, 3, 7, 1, 9, 4], [5, 2, 8, 8, 1, 3, 6, 2]])
    mask = items > 0
    with torch.no_grad():
        h = enc(items, mask)
        h_pre, state = enc.prefill(items[:, :5], mask[:, :5])
        torch.testing.assert_close(h_pre, h[:, :5], rtol=1e-9, atol=1e-9)
        for t in range(5, 8):
            h_t, state = enc.step(state, items[:, t])
            torch.testing.assert_close(h_t, h[:, t], rtol=1e-9, atol=1e-9)


def test_learned_retention_decays_train_without_weight_decay() -> None:
    cfg = load_config("retention", ["model.mixer_args.learnable=true", "train.weight_decay=0.01"])
    enc = build_model(50, cfg.model, cfg.train)
    decays = [p for n, p in enc.named_parameters() if n.endswith("decay_log")]
    assert len(decays) == cfg.model.layers
    opt = make_optimizer(enc, cfg.train)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(id(p) in no_decay for p in decays)
    items = torch.tensor([[0, 3, 7, 1]])
    enc(items, items > 0).pow(2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decays)
