"""Resident memory of this process for the benchmarks' isolated cells.

The peak is read from /proc/self/status (VmHWM), the high-water mark of this process image only. getrusage's
ru_maxrss is not used on Linux: exec carries the parent's high-water mark over into it (a cell spawned by a
benchmark that has just built a big log would start at the parent's peak and under-report its own growth).
"""

from __future__ import annotations

import resource
from pathlib import Path


def _status(key: str) -> float | None:
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    return None


def peak_rss_mib() -> float:
    """Peak resident set of this process image in MiB (ru_maxrss where /proc is missing)."""
    peak = _status("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    """Current resident set in MiB (the peak where /proc is missing)."""
    now = _status("VmRSS")
    return now if now is not None else peak_rss_mib()
