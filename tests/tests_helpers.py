"""Small data builders shared by tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from longrec.data.synthetic import write_pairs


def synthetic_log(path: Path, users: int = 120, length: int = 16, items: int = 40, seed: int = 0) -> Path:
    """Each user walks the catalogue in steps of +1 from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    starts = [int(rng.integers(0, items)) for _ in range(users)]
    return write_pairs(path, ((u, [(s + t) % items + 1 for t in range(length)]) for u, s in enumerate(starts, 1)))


def rel_rms(a: Tensor, b: Tensor) -> float:
    """RMS of a - b relative to the RMS of b."""
    return float((a.double() - b.double()).pow(2).mean().sqrt() / b.double().pow(2).mean().sqrt().clamp_min(1e-30))


def assert_match(got: tuple[Tensor, Tensor, list[Tensor]], ref: tuple[Tensor, Tensor, list[Tensor]], tol: float,
                 names: str) -> None:
    """An op's (output, final state, input gradients) against its oracle's, each within `tol` relative RMS;
    `names` labels the gradients in order (e.g. "q k v g S0")."""
    (o, s, grads), (o_ref, s_ref, g_ref) = got, ref
    assert o.shape == o_ref.shape and s.shape == s_ref.shape
    assert rel_rms(o, o_ref) < tol, f"o: {rel_rms(o, o_ref):.2e}"
    assert rel_rms(s, s_ref) < tol, f"final state: {rel_rms(s, s_ref):.2e}"
    for name, gr, gr_ref in zip(names.split(), grads, g_ref, strict=False):
        assert gr.shape == gr_ref.shape and rel_rms(gr, gr_ref) < tol, f"d{name}: {rel_rms(gr, gr_ref):.2e}"


def files_under(root: Path) -> list[Path]:
    """Every file below root (none when it does not exist): what a failed command must not leave behind."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def with_grads(op: Callable[..., tuple[Tensor, Tensor | None]], inputs: tuple[Tensor, ...],
               s0: Tensor | None) -> tuple[Tensor, Tensor, list[Tensor]]:
    """op(*inputs, initial_state=s0) -> (output, final state), and the gradients of a fixed random loss of both
    w.r.t. every input (and s0 when given): what an op is compared against its oracle on."""
    leaves = [t.detach().clone().requires_grad_() for t in (*inputs, *((s0,) if s0 is not None else ()))]
    o, final = op(*leaves[: len(inputs)], initial_state=leaves[-1] if s0 is not None else None)
    assert final is not None
    gen = torch.Generator().manual_seed(7)
    do, dS = torch.randn(o.shape, generator=gen, dtype=o.dtype), torch.randn(final.shape, generator=gen, dtype=o.dtype)
    ((o * do).sum() + (final * dS).sum()).backward()
    grads = [t.grad for t in leaves]
    assert all(gr is not None for gr in grads)
    return o.detach(), final.detach(), grads  # type: ignore[return-value]
