"""Provenance for results files: versions, git commit, device, peak memory."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import longrec


def git_commit() -> str:
    """$LONGREC_GIT_COMMIT when set (a launcher that copied the tree states what it copied: a copy's .git can be
    stale); else HEAD of the repository holding the package ('+dirty' when it has uncommitted changes), else
    'unknown'."""
    if os.environ.get("LONGREC_GIT_COMMIT"):
        return os.environ["LONGREC_GIT_COMMIT"]
    here = Path(longrec.__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def versions() -> dict[str, str]:
    return {"longrec": longrec.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process, and peak CUDA memory allocated when on a GPU."""
    out = {"cpu_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from longrec.errors import ConfigError

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"config: train.device={name} but CUDA is not available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config: train.device must be auto, cpu or cuda[:N], got {name!r}") from None


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """train.threads: torch's intra-op threads while the block runs (0 = leave the count as it is); the count
    before is restored after, so a library caller's setting survives a fit."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def provenance(device: torch.device, seed: int) -> dict[str, Any]:
    return {"versions": versions(), "git_commit": git_commit(), "seed": seed, "device": device_name(device)}
