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
import time

import torch
from torch import Tensor

from longrec.bench.harness import sync
from longrec.ops import Backend
from longrec.ops.lru import lru_scan


def inputs(B: int, N: int, P: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """a, b [B,N,P,2] float32: |a| on the LRU's init ring [0.8, 0.99], random phase; b standard normal."""
    g = torch.Generator().manual_seed(seed)
    r = torch.sqrt(torch.rand(B, N, P, generator=g) * (0.99**2 - 0.8**2) + 0.8**2)
    phase = 2 * math.pi * torch.rand(B, N, P, generator=g)
    return torch.stack([r * phase.cos(), r * phase.sin()], dim=-1), torch.randn(B, N, P, 2, generator=g)


def fwd_bwd(backend: Backend, a: Tensor, b: Tensor, w: Tensor) -> tuple[float, Tensor]:
    """Seconds for one forward + backward, and the output (for a cross-check)."""
    a, b = a.clone().requires_grad_(), b.clone().requires_grad_()
    sync(a.device)
    t0 = time.perf_counter()
    h, _ = lru_scan(a, b, backend=backend)
    (h * w).sum().backward()
    sync(a.device)
    return time.perf_counter() - t0, h.detach()


def measure(B: int, N: int, P: int, reps: int, device: torch.device | str = "cpu") -> dict[str, float]:
    a, b = (t.to(device) for t in inputs(B, N, P))
    w = torch.randn(a.shape, device=device)
    best = {"loop": math.inf, "scan": math.inf}
    for i in range(reps + 1):  # the first round warms up allocators and is not counted
        t_loop, h_loop = fwd_bwd(Backend.LOOP, a, b, w)
        t_scan, h_scan = fwd_bwd(Backend.SCAN, a, b, w)
        if i:
            best["loop"], best["scan"] = min(best["loop"], t_loop), min(best["scan"], t_scan)
    best["max_abs_diff"] = float((h_loop - h_scan).abs().max())
    return best


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
