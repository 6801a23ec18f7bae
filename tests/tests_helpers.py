"""Small data builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor


def synthetic_log(path: Path, users: int = 120, length: int = 16, items: int = 40, seed: int = 0) -> Path:
    """Each user walks the catalogue in steps of +1 from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for u in range(1, users + 1):
            start = int(rng.integers(0, items))
            for t in range(length):
                f.write(f"{u} {(start + t) % items + 1}\n")
    return path


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
