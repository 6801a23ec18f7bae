"""Benchmark the LRU op: log-depth scan (Backend.SCAN) vs the sequential loop (Backend.LOOP), side by side.

Times forward + backward of lru_scan on CPU or CUDA for every (N, B); both paths run in the same process,
interleaved, and each cell is the minimum over --reps runs after one warm-up (CUDA synchronised), so the ratio
compares like with like.

    python -m benchmarks.lru_scan --lengths 200 1000 4000 16000 --batches 1 8 --threads 1   # from the repository root
    python -m benchmarks.lru_scan --device cuda --lengths 200 1000 4000 16000 --batches 1 8 128
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks.timing import best_of
from longrec.ops import Backend
from longrec.ops.lru import lru_scan


def inputs(B: int, N: int, P: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """a, b [B,N,P,2] float32: |a| on the LRU's init ring [0.8, 0.99], random phase; b standard normal."""
    g = torch.Generator().manual_seed(seed)
    r = torch.sqrt(torch.rand(B, N, P, generator=g) * (0.99**2 - 0.8**2) + 0.8**2)
    phase = 2 * math.pi * torch.rand(B, N, P, generator=g)
    return torch.stack([r * phase.cos(), r * phase.sin()], dim=-1), torch.randn(B, N, P, 2, generator=g)


def measure(B: int, N: int, P: int, reps: int, device: torch.device | str = "cpu") -> dict[str, float]:
    """Seconds of one forward + backward on each path (the minimum over reps, interleaved), and the largest
    difference between their outputs."""
    a, b = (t.to(device).requires_grad_() for t in inputs(B, N, P))
    w = torch.randn(a.shape, device=device)
    out: dict[Backend, Tensor] = {}

    def run(backend: Backend) -> Callable[[], None]:
        def step() -> None:
            a.grad = b.grad = None
            h, _ = lru_scan(a, b, backend=backend)
            (h * w).sum().backward()
            out[backend] = h.detach()
        return step

    best = best_of({"loop": run(Backend.LOOP), "scan": run(Backend.SCAN)}, reps, device)
    return {**best, "max_abs_diff": float((out[Backend.LOOP] - out[Backend.SCAN]).abs().max())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[200, 1000, 4000, 16000], help="sequence lengths N")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes B")
    p.add_argument("--dim", type=int, default=64, help="model dim D")
    p.add_argument("--state-mult", type=int, default=2, help="complex state channels P = state_mult * D (LRURec: 2)")
    p.add_argument("--reps", type=int, default=3, help="timed runs per cell; the minimum is reported")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    P = args.state_mult * args.dim
    print(f"lru_scan forward+backward, {where}, P = {P} complex channels, min of {args.reps}")
    print(f"{'N':>6} {'B':>3} {'loop ms':>10} {'scan ms':>10} {'loop/scan':>10} {'max|dh|':>9}")
    for N in args.lengths:
        for B in args.batches:
            r = measure(B, N, P, args.reps, device)
            loop, scan = 1e3 * r["loop"], 1e3 * r["scan"]
            print(
                f"{N:>6} {B:>3} {loop:>10.1f} {scan:>10.1f} {loop / scan:>10.2f} {r['max_abs_diff']:>9.1e}", flush=True
            )


if __name__ == "__main__":
    main()
