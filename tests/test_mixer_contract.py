"""DESIGN §3 contract, run over every registered mixer (and both causal/global variants where offered)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from longrec.config import load_config, preset_names
from longrec.mixers import MIXERS, TokenMixer, build_mixer
from longrec.objectives import build_model

D, H = 12, 2


def config_defaults(name: str) -> dict[str, object]:
    """A registered mixer's config fields with their defaults ({} when it takes no arguments)."""
    cfg = MIXERS.get(name).config
    return {f.name: getattr(cfg(), f.name) for f in dataclasses.fields(cfg)} if cfg else {}


def variants() -> list[tuple[str, dict]]:
    out = []
    for name in MIXERS.names():
        if "causal" in config_defaults(name):
            out += [(name, {"causal": True}), (name, {"causal": False})]
        else:
            out.append((name, {}))
    return out + [("linrec", {"causal": True, "local": 3}), ("linrec", {"causal": False, "local": 3})]


VARIANTS = variants()
IDS = [
    f"{n}-{'causal' if a.get('causal', True) else 'global'}{'-local' if a.get('local') else ''}" for n, a in VARIANTS
]


def make(name: str, args: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mixer(name, D, H, 0.0, args).double().eval()


def left_padded(lengths: list[int], n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), n, D, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(lengths), n, dtype=torch.bool)
    for i, L in enumerate(lengths):
        mask[i, n - L :] = True
    return x, mask


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=IDS)
def test_every_mixer_implements_the_whole_protocol(name: str, args: dict) -> None:
    assert isinstance(make(name, args), TokenMixer)  # forward, init_state, prefill and step: none reached by getattr


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=IDS)
def test_shapes_finite_and_gradients_reach_every_parameter(name: str, args: dict) -> None:
    m = make(name, args).train()
    x, mask = left_padded([7, 3, 1], 9)
    y = m(x, mask)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y[~mask] == 0).all(), "pad outputs must be zero"
    (y**2).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {pname}"


@pytest.mark.parametrize(("name", "args"), [v for v in VARIANTS if v[1].get("causal", True)],
                         ids=[i for i, v in zip(IDS, VARIANTS, strict=True) if v[1].get("causal", True)])
def test_causal_mixers_ignore_the_future(name: str, args: dict) -> None:
    m = make(name, args)
    assert m.causal
    x, mask = left_padded([8, 6], 8)
    y = m(x, mask)
    for t in (2, 5):
        x2 = x.clone()
        x2[:, t + 1 :] += torch.randn_like(x2[:, t + 1 :])
        torch.testing.assert_close(m(x2, mask)[:, : t + 1], y[:, : t + 1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=IDS)
def test_padding_invariance(name: str, args: dict) -> None:
    m = make(name, args)
    x, mask = left_padded([5, 2], 5)
    y = m(x, mask)
    # three more pad slots on the left, filled with garbage, and garbage in the existing pads
    garbage = torch.randn(2, 3, D, dtype=torch.float64) * 100
    x2 = torch.cat([garbage, torch.where(mask[..., None], x, 50.0)], dim=1)
    mask2 = torch.cat([torch.zeros(2, 3, dtype=torch.bool), mask], dim=1)
    y2 = m(x2, mask2)
    torch.testing.assert_close(y2[:, 3:][mask], y[mask], rtol=1e-9, atol=1e-9)
    assert (y2[~mask2] == 0).all()


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=IDS)
def test_batch_rows_are_independent(name: str, args: dict) -> None:
    m = make(name, args)
    x, mask = left_padded([6, 4, 1], 6)
    y = m(x, mask)
    for i in range(3):
        torch.testing.assert_close(m(x[i : i + 1], mask[i : i + 1])[0], y[i], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(("name", "args"), [v for v in VARIANTS if v[1].get("causal", True)],
                         ids=[i for i, v in zip(IDS, VARIANTS, strict=True) if v[1].get("causal", True)])
def test_prefill_then_step_equals_forward(name: str, args: dict) -> None:
    m = make(name, args)
    x, mask = left_padded([9, 6, 4], 9)
    full = m(x, mask)
    cut = 5  # prefill positions [0, 5) (all padding for row 2), then step the real events 5..8 one at a time
    y_pre, state = m.prefill(x[:, :cut], mask[:, :cut])
    torch.testing.assert_close(y_pre, full[:, :cut], rtol=1e-9, atol=1e-9)
    sizes = {k: v.numel() for k, v in state.items()}
    for t in range(cut, 9):
        y_t, state = m.step(state, x[:, t])
        torch.testing.assert_close(y_t, full[:, t], rtol=1e-9, atol=1e-9)
    if name != "softmax":  # linear and recurrent mixers keep a constant-size state; softmax grows its KV cache
        assert {k: v.numel() for k, v in state.items()} == sizes


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_ignores_columns_padded_in_every_row(preset: str) -> None:
    """The whole encoder (embeddings, positions, every block) gives the same outputs with the columns that are
    padding in every row cut off, as the loader's batches have them."""
    cfg = load_config(preset)
    torch.manual_seed(0)
    enc = build_model(30, dataclasses.replace(cfg.model, max_len=12), cfg.train).double().eval()
    lengths, cut = [7, 3, 5], 5
    g = torch.Generator().manual_seed(2)
    items = torch.zeros(3, 12, dtype=torch.int64)
    for i, L in enumerate(lengths):
        items[i, 12 - L :] = torch.randint(1, 31, (L,), generator=g)
    mask = items > 0
    assert not mask[:, :cut].any()
    with torch.no_grad():
        y, y_cut = enc(items, mask), enc(items[:, cut:], mask[:, cut:])
    torch.testing.assert_close(y_cut, y[:, cut:], rtol=1e-9, atol=1e-9)
    assert y[mask].abs().sum() > 0
