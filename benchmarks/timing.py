"""Side-by-side timing for the studies: each setting's minimum over repeated runs, the settings interleaved."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import torch

from longrec.bench.harness import sync


def best_of(fns: Mapping[str, Callable[[], object]], reps: int,
            device: torch.device | str = "cpu") -> dict[str, float]:
    """Seconds: the minimum over `reps` timed runs of each function, after one untimed warm-up round. The functions
    run interleaved, round by round, so that drift on a shared machine meets each alike; on CUDA each run is timed
    between two synchronisations."""
    best = dict.fromkeys(fns, math.inf)
    device = torch.device(device)
    for i in range(reps + 1):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i:
                best[name] = min(best[name], time.perf_counter() - t0)
    return best
