"""The scaling benchmark's outputs: STEM.csv (one row per cell, empty = not measured), STEM-time.png and
STEM-memory.png (log-log, one line per variant), and the markdown tables of docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrec.bench import harness
from longrec.errors import LongrecError
from longrec.plots import loglog_by_variant

FAILED = ("oom", "timeout", "error")  # statuses after which a variant's larger N are skipped
COLUMNS = tuple(
    "variant mixer level N batch dim device dtype threads status ms peak_mib ratio_to_softmax memory note".split()
)


def write_csv(rows: list[dict[str, Any]], out_dir: Path, stem: str) -> Path:
    return harness.write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)


def plot_scaling(rows: list[dict[str, Any]], out_dir: Path, stem: str) -> list[Path]:
    """Log-log time (and ratio to causal softmax) vs N, and peak memory vs N: one line per variant."""
    r0 = rows[0]
    title = f"{r0['level']} fwd+bwd, {r0['device']}, {r0['dtype']}, B={r0['batch']}, D={r0['dim']}"
    title += f", {r0['threads']} thread(s)" if r0["device"].startswith("cpu") else ""
    fails = {r["variant"]: r for r in reversed(rows) if r["status"] in FAILED}  # the first failure of each
    labels = {v: f"{v} ({r['status']} at {r['N']})" for v, r in fails.items()}
    panels = {
        "time": [("ms", "ms (median)", ""), ("ratio_to_softmax", "time / causal softmax", "")],
        "memory": [("peak_mib", f"peak MiB ({r0['memory']})", "")],
    }
    paths = []
    for name, metrics in panels.items():
        path = loglog_by_variant(out_dir / f"{stem}-{name}.png", rows, ("N", "sequence length N"), metrics, title,
                                 labels)
        if path is None:
            raise LongrecError("plotting needs matplotlib (pip install 'longrec[plot]')")
        paths.append(path)
    return paths


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Variants x N tables of time and memory. CPU shows time only as the ratio to causal softmax (same run);
    CUDA shows median ms with the ratio."""
    r0 = rows[0]
    cpu = r0["device"].startswith("cpu")
    lengths = [f"N={n}" for n in sorted({r["N"] for r in rows})]

    def fmt_time(r: dict[str, Any]) -> str:
        if r["status"] != "ok":
            return str(r["status"])
        ratio = "" if r["ratio_to_softmax"] is None else f"{r['ratio_to_softmax']:.2f}x"
        return ratio if cpu else f"{r['ms']:.2f} ({ratio})" if ratio else f"{r['ms']:.2f}"

    def fmt_mem(r: dict[str, Any]) -> str:
        return r["status"] if r["status"] != "ok" else "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"

    out = [
        f"{r0['level']} forward+backward, {r0['device']}, {r0['dtype']}, B={r0['batch']}, D={r0['dim']}, "
        f"threads={r0['threads']}"
    ]
    for what, fmt in (
        ("time / causal softmax" if cpu else "ms (x causal softmax)", fmt_time),
        (f"peak MiB ({r0['memory']})", fmt_mem),
    ):
        table = {v: {what: v} for v in dict.fromkeys(r["variant"] for r in rows)}
        for r in rows:
            table[r["variant"]][f"N={r['N']}"] = fmt(r)
        out += ["", harness.markdown(list(table.values()), [what, *lengths])]
    return "\n".join(out)
