"""LinRec's forms against explicit references (and each other); linear and hydra mixers against their formulas;
the presets of this family build."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import test_mixer_contract as contract
from longrec.config import load_config
from longrec.errors import ConfigError
from longrec.mixers import build_mixer
from longrec.objectives import build_model

D, H = 12, 3
LENGTHS, N = [9, 5, 1], 9
FP64 = {"rtol": 1e-10, "atol": 1e-12}


def make(name: str, **args: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mixer(name, D, H, 0.0, dict(args)).double().eval()


def batch(seed: int = 1) -> tuple[Tensor, Tensor]:
    x, mask = contract.left_padded(LENGTHS, N, seed)
    return torch.where(mask[..., None], x, 30.0 * torch.randn_like(x)), mask  # garbage in the pads


def heads(m: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x [L,D] -> q, k, v [H,L,d] from the mixer's own projection."""
    q, k, v = (t.view(len(x), H, D // H).transpose(0, 1) for t in m.qkv(x).chunk(3, -1))
    return q, k, v


def merge(m: torch.nn.Module, y: Tensor) -> Tensor:
    """y [H,L,d] -> out(y) [L,D]."""
    return m.out(y.transpose(0, 1).reshape(y.shape[1], D))


def paper_reference(m: torch.nn.Module, x: Tensor) -> Tensor:
    """Eq. 9 on the real rows x [n,D] alone: rows of elu(Q), columns of elu(K), each L2-normalised and scaled."""
    q, k, v = heads(m, x)
    q, k = F.elu(q), F.elu(k)
    n, d = x.shape[0], q.shape[-1]
    q_hat = q / (d**0.5 * q.norm(dim=-1, keepdim=True))
    k_hat = k / (n**0.5 * k.norm(dim=-2, keepdim=True))
    return merge(m, q_hat @ (k_hat.transpose(-1, -2) @ v))


def token_reference(m: torch.nn.Module, x: Tensor) -> Tensor:
    """The official LinRec code on the real rows alone: both Q and K rows L2-normalised over features, / sqrt(d)."""
    q, k, v = heads(m, x)
    q, k = F.elu(q), F.elu(k)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    return merge(m, q @ (k.transpose(-1, -2) @ v) / q.shape[-1] ** 0.5)


@pytest.mark.parametrize(("norm", "reference"), [("paper", paper_reference), ("token", token_reference)])
def test_global_linrec_equals_its_reference_on_the_real_rows(
    norm: str, reference: Callable[[torch.nn.Module, Tensor], Tensor]
) -> None:
    m = make("linrec", causal=False, norm=norm, eps=1e-300)
    x, mask = batch()
    y = m(x, mask)
    for i, L in enumerate(LENGTHS):
        torch.testing.assert_close(y[i, N - L :], reference(m, x[i, N - L :]), **FP64)
        assert (y[i, : N - L] == 0).all()


def test_local_branch_adds_a_causal_depthwise_conv_over_the_values() -> None:
    """local = w: the paper form plus out-projected sum_{i<w} a_i * v_{t-i} over each row's real events alone."""
    w = 3
    m, plain = make("linrec", causal=False, local=w, eps=1e-300), make("linrec", causal=False, eps=1e-300)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("local.")})
    x, mask = batch()
    y = m(x, mask)
    a = m.local.weight[:, 0]  # (D, w): tap w-1-i multiplies v_{t-i}
    for i, L in enumerate(LENGTHS):
        v = m.qkv(x[i, N - L :]).chunk(3, -1)[2]  # (L, D)
        conv = torch.stack([sum(a[:, w - 1 - j] * v[t - j] for j in range(min(w, t + 1))) for t in range(L)])
        torch.testing.assert_close(y[i, N - L :], paper_reference(plain, x[i, N - L :]) + conv @ m.out.weight.T, **FP64)
        assert (y[i, : N - L] == 0).all()


@pytest.mark.parametrize("norm", ["paper", "token"])
@pytest.mark.parametrize(
    ("l2", "elu", "local"), [(True, True, 0), (False, True, 0), (True, False, 0), (True, True, 3)],
    ids=["full", "no-l2", "no-elu", "local"],
)
def test_causal_linrec_at_each_position_is_the_global_form_on_the_prefix(
    norm: str, l2: bool, elu: bool, local: int
) -> None:
    cfg = {"norm": norm, "l2": l2, "elu": elu, "local": local}
    causal, glob = make("linrec", causal=True, **cfg), make("linrec", causal=False, **cfg)
    x, mask = batch()
    y = causal(x, mask)
    # the headline property: at the last real position causal linrec is exactly the paper (global) form
    torch.testing.assert_close(y[:, -1], glob(x, mask)[:, -1], **FP64)
    for t in range(N - 1):  # and at every t it is the global form of the window cut after t
        torch.testing.assert_close(y[:, t], glob(x[:, : t + 1], mask[:, : t + 1])[:, t], **FP64)
    assert (y[:, :-1] - glob(x, mask)[:, :-1]).abs().max() > 1e-3  # earlier positions do not see the future


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
def test_token_norm_respects_masks(causal: bool) -> None:
    m = make("linrec", causal=causal, norm="token")
    x, mask = batch()
    y = m(x, mask)
    y2 = m(torch.where(mask[..., None], x, -50.0 * torch.rand_like(x)), mask)
    torch.testing.assert_close(y2, y, **FP64)
    assert (y[~mask] == 0).all()
    if not causal:  # and a pad treated as real would change the result
        assert (m(x, torch.ones_like(mask))[mask] - y[mask]).abs().max() > 1e-3


def identity_linrec(causal: bool) -> torch.nn.Module:
    """D = 2, one head, Q = K = V = x, out = identity."""
    m = build_mixer("linrec", 2, 1, 0.0, {"causal": causal, "eps": 1e-300}).double()
    with torch.no_grad():
        m.qkv.weight.copy_(torch.eye(2).repeat(3, 1))
        m.qkv.bias.zero_()
        m.out.weight.copy_(torch.eye(2))
        m.out.bias.zero_()
    return m


def test_paper_normalisation_by_hand() -> None:
    # real rows a = (3, 4), b = (4, 3) (elu = identity on them) after one garbage pad; d = n = 2.
    # Q^_i = x_i / (sqrt2 * 5); both columns of K have norm 5, so K^ = K / (sqrt2 * 5);
    # K^T V = X^T X / 50 = [[25, 24], [24, 25]] / 50 -> y_a = (171, 172) / 50, y_b = (172, 171) / 50.
    x = torch.tensor([[[-7.0, 11.0], [3.0, 4.0], [4.0, 3.0]]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True]])
    want = torch.tensor([[[0.0, 0.0], [3.42, 3.44], [3.44, 3.42]]], dtype=torch.float64)
    torch.testing.assert_close(identity_linrec(False)(x, mask), want, **FP64)
    # causal at a: n = 1, c = (3, 4): y_a = (1, 1) / (5 sqrt2) . a a^T = (21, 28) / (5 sqrt2); at b: the global row
    y = identity_linrec(True)(x, mask)
    torch.testing.assert_close(y[0, 1], torch.tensor([21.0, 28.0], dtype=torch.float64) / (5 * 2**0.5), **FP64)
    torch.testing.assert_close(y[0, 2], want[0, 2], **FP64)


VARIANTS = [{"norm": "token"}, {"l2": False}, {"elu": False}]


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
@pytest.mark.parametrize("args", VARIANTS, ids=["token", "no-l2", "no-elu"])
def test_linrec_variants_keep_the_mixer_contract(args: dict, causal: bool) -> None:
    """The registry-wide contract runs the defaults; the other forms must honour it too."""
    args = {**args, "causal": causal}
    contract.test_shapes_finite_and_gradients_reach_every_parameter("linrec", args)
    contract.test_padding_invariance("linrec", args)
    contract.test_batch_rows_are_independent("linrec", args)
    if causal:
        contract.test_causal_mixers_ignore_the_future("linrec", args)
        contract.test_prefill_then_step_equals_forward("linrec", args)


@pytest.mark.parametrize(("field", "value"), [("norm", "column"), ("backend", "cuda"), ("local", -1)])
def test_bad_linrec_options_name_the_key(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"model.mixer_args.{field}"):
        build_mixer("linrec", D, H, 0.0, {field: value})


# The two other mixers of this family, against their formulas on each row's real events alone.


def linear_reference(m: torch.nn.Module, x: Tensor, causal: bool) -> Tensor:
    q, k, v = heads(m, x)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    w = q @ k.transpose(-1, -2)  # (H, L, L): phi(q_t) . phi(k_m)
    if causal:
        w = w.tril()
    return merge(m, (w @ v) / (w.sum(-1, keepdim=True) + 1e-6))


def hydra_reference(m: torch.nn.Module, x: Tensor, causal: bool) -> Tensor:
    q, k, v = m.qkv(x).chunk(3, -1)  # (L, D): D heads of size 1
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    kv = (k * v).cumsum(0) if causal else (k * v).sum(0, keepdim=True)
    return m.out(q * kv)


@pytest.mark.parametrize("causal", [False, True], ids=["global", "causal"])
@pytest.mark.parametrize(("name", "reference"), [("linear", linear_reference), ("hydra", hydra_reference)])
def test_linear_and_hydra_equal_their_formulas(
    name: str, reference: Callable[[torch.nn.Module, Tensor, bool], Tensor], causal: bool
) -> None:
    m = make(name, causal=causal)
    x, mask = batch()
    y = m(x, mask)
    for i, L in enumerate(LENGTHS):
        torch.testing.assert_close(y[i, N - L :], reference(m, x[i, N - L :], causal), **FP64)


PRESETS = {  # preset -> (mixer, causal)
    "linrec-sasrec": ("linrec", False),
    "causal-linrec": ("linrec", True),
    "causal-linrec-local": ("linrec", True),
    "lt-sasrec": ("linear", True),
    "hydrarec": ("hydra", False),
    "hydrarec-causal": ("hydra", True),
}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_build_within_the_leakage_rule(preset: str) -> None:
    cfg = load_config(preset)
    enc = build_model(50, cfg.model, cfg.train)
    mixer, causal = PRESETS[preset]
    assert cfg.name == preset and cfg.model.mixer == mixer and enc.causal is causal
    assert (cfg.train.objective == "next_item") is causal
