"""Benchmarks: mixers, ops and end-to-end timings; each module runs with `python -m longrec.bench.NAME`."""

from __future__ import annotations

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a host timer measures it; a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
