"""What every benchmark shares (longrec bench and the studies under benchmarks/): isolated cells, their memory,
timing on a device, the hardware's name, percentiles, options as dataclass fields, table/CSV/plot output. Standard
library at the top: a peer's venv (benchmarks.peer_recbole) imports this module too.

An isolated cell is a measurement run in a fresh interpreter, `python -m MODULE --cell JSON`, which prints its
result as the last line of stdout (one JSON object): a fresh process image is the only way to attribute CPU memory
to a cell, to enforce a hard time limit, and to survive the kernel's OOM killer.

Peak memory is read from /proc/self/status (VmHWM), the high-water mark of this process image only. getrusage's
ru_maxrss is not used on Linux: exec carries the parent's high-water mark over into it (a cell spawned by a
benchmark that has just built a big log would start at the parent's peak and under-report its own growth).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import resource
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


class CellFailed(Exception):
    """An isolated cell gave no result: status is "timeout", "oom" (killed by SIGKILL) or "error"; note says why."""

    def __init__(self, status: str, note: str) -> None:
        super().__init__(f"{status}: {note}")
        self.status, self.note = status, note


def run_cell(module: str, spec: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run `python -m MODULE --cell JSON(spec)` in a fresh interpreter (same working directory and environment) and
    return the JSON object on the last line of its stdout; CellFailed when it timed out, was killed or failed."""
    cmd = [sys.executable, "-m", module, "--cell", json.dumps(dict(spec))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CellFailed("timeout", f"killed after {timeout_s:.0f} s") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return dict(json.loads(lines[-1]))
    if proc.returncode == -signal.SIGKILL:
        raise CellFailed("oom", "killed by SIGKILL (presumably the kernel's OOM killer)")
    err = proc.stderr.strip().splitlines()
    raise CellFailed("error", (err[-1] if err else f"exit status {proc.returncode}")[:200])


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


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a host timer measures it; a no-op on CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    """`cuda (<GPU name>)` or `cpu (<CPU model>)`: rows name the hardware they were measured on."""
    if device.type == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(device)})"
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    model = next((s.split(":", 1)[1].strip() for s in lines if s.startswith("model name")), "")
    return f"cpu ({model or platform.processor() or platform.machine()})"


def percentile(xs: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (q in [0, 1]) of xs; NaN when empty."""
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))] if s else float("nan")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """rows as CSV with these columns (a missing or None cell is empty); creates the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns))
        w.writeheader()
        w.writerows({c: "" if r.get(c) is None else r[c] for c in columns} for r in rows)
    return path


def markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    header: Sequence[str] | None = None,
    formats: Mapping[str, str] | None = None,
) -> str:
    """A markdown table, one row per dict, these columns (a missing cell is empty) under `header` (default: the
    column names); formats[column] is the format spec of that column's values (".2f"; default str)."""
    fmt = formats or {}
    lines = ["| " + " | ".join(header or columns) + " |", "|" + "---|" * len(columns)]
    cells = ([format(r[c], fmt.get(c, "")) if c in r else "" for c in columns] for r in rows)
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])


def option(default: Any, help: str, flag: str = "", **argparse_kw: Any) -> Any:
    """A dataclass field that is also a command-line option (add_options): `flag` (default --field-name) with
    this help and argparse's type=, choices=, ..."""
    return field(default=default, metadata={"flag": flag, "help": help, **argparse_kw})


def add_options(p: argparse.ArgumentParser, cls: type) -> None:
    """A flag for each field of the dataclass cls made with option(), defaulting to the field's default."""
    for f in fields(cls):
        if "help" in f.metadata:
            flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
            kw = {k: v for k, v in f.metadata.items() if k != "flag"}
            if not {"choices", "action"} & set(kw):  # a flag (store_true) takes no metavar
                kw["metavar"] = flag[2:].replace("-", "_").upper()
            p.add_argument(flag, dest=f.name, default=f.default, **kw)


def options(cls: type[T], args: argparse.Namespace, **given: Any) -> T:
    """cls built from the flags add_options gave it and the fields `given` (others keep their defaults)."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if "help" in f.metadata}, **given)

