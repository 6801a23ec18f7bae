"""CUDA checks (marked gpu, skipped without CUDA): every mixer on the GPU equals itself on the CPU, the fla backend
equals the chunked path inside each mixer that has one (fp32 and bf16 autocast), and the LRU scan equals its loop.
Run with `pytest -m gpu`; the op-level fla test is in test_ops_linear_attn.py."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from longrec.mixers import build_mixer
from longrec.ops import Backend
from longrec.ops.lru import lru_scan
from test_mixer_contract import IDS, VARIANTS, config_defaults
from test_ops_linear_attn import rel_rms

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

D, H, B, N = 64, 2, 3, 257  # odd N: a partial chunk


def padded_inputs(device: str, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, D, generator=g)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, :40] = False  # left padding
    mask[2, : N - 5] = False  # a short history
    return x.to(device), mask.to(device)


def fwd_bwd(mixer: torch.nn.Module, x: Tensor, mask: Tensor, bf16: bool = False) -> tuple[Tensor, list[Tensor]]:
    x = x.clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        y = mixer(x, mask)
    w = torch.linspace(-1, 1, y.numel(), device=y.device).view_as(y)
    (y.float() * w).sum().backward()
    grads = [x.grad] + [p.grad for p in mixer.parameters() if p.grad is not None]
    return y.detach().float().masked_fill(~mask[..., None], 0), [g.float() for g in grads]


@pytest.mark.parametrize(("name", "args"), VARIANTS, ids=IDS)
def test_mixer_on_cuda_equals_cpu(name: str, args: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    # cuDNN's GRU computes in TF32 by default on Ampere and later (rel. error 3e-4 seen on an H200): full fp32 here
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    cpu = build_mixer(name, D, H, 0.0, args).train()
    gpu = copy.deepcopy(cpu).cuda()
    x, mask = padded_inputs("cpu")
    y_ref, g_ref = fwd_bwd(cpu, x, mask)
    y, grads = fwd_bwd(gpu, x.cuda(), mask.cuda())
    assert rel_rms(y.cpu(), y_ref) < 1e-4
    assert len(grads) == len(g_ref)
    for i, (gr, ref) in enumerate(zip(grads, g_ref, strict=True)):
        assert rel_rms(gr.cpu(), ref) < 1e-3, f"gradient {i}"


def fla_variants() -> list[tuple[str, dict]]:
    out = []
    for name, args in VARIANTS:
        if config_defaults(name).get("backend") == "chunked" and args.get("causal", True):  # lru: auto|scan|loop
            out.append((name, args))
    return out


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("name", "args"), fla_variants(), ids=[f"{n}" for n, _ in fla_variants()])
def test_mixer_fla_backend_equals_chunked(name: str, args: dict, bf16: bool) -> None:
    pytest.importorskip("fla")
    torch.manual_seed(0)
    ref = build_mixer(name, D, H, 0.0, {**args, "backend": "chunked"}).cuda().train()
    fla = build_mixer(name, D, H, 0.0, {**args, "backend": "fla"}).cuda().train()
    fla.load_state_dict(ref.state_dict())
    x, mask = padded_inputs("cuda")
    y_ref, g_ref = fwd_bwd(ref, x, mask)  # fp32 chunked: the reference
    y, grads = fwd_bwd(fla, x, mask, bf16=bf16)
    tol = 3e-2 if bf16 else 5e-3
    assert rel_rms(y, y_ref) < tol
    for i, (gr, r) in enumerate(zip(grads, g_ref, strict=True)):
        assert rel_rms(gr, r) < tol, f"gradient {i}"


@pytest.mark.parametrize("n", [1, 200, 1001])
def test_lru_scan_on_cuda_equals_loop(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    r = 0.8 + 0.19 * torch.rand(4, n, 32, generator=g)
    phase = 6.283 * torch.rand(4, n, 32, generator=g)
    a = torch.stack([r * phase.cos(), r * phase.sin()], -1).cuda()
    b = torch.randn(4, n, 32, 2, generator=g).cuda()
    w = torch.randn(a.shape, generator=g).cuda()
    outs = []
    for backend in (Backend.LOOP, Backend.SCAN):
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        h, s = lru_scan(aa, bb, output_final_state=True, backend=backend)
        (h * w).sum().backward()
        outs.append((h.detach(), s, aa.grad, bb.grad))
    for ref, got in zip(*outs, strict=True):
        assert rel_rms(got, ref) < 1e-4
