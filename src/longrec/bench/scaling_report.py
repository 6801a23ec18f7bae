"""The scaling benchmark's outputs: STEM.csv (one row per cell, empty = not measured), STEM-time.png and
STEM-memory.png (log-log, one line per variant), and the markdown tables of docs/BENCHMARKS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrec.bench import harness
from longrec.errors import LongrecError

FAILED = ("oom", "timeout", "error")  # statuses after which a variant's larger N are skipped
COLUMNS = tuple(
    "variant mixer level N batch dim device dtype threads status ms peak_mib ratio_to_softmax memory note".split()
)


def write_csv(rows: list[dict[str, Any]], out_dir: Path, stem: str) -> Path:
    return harness.write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)


def plot_scaling(rows: list[dict[str, Any]], out_dir: Path, stem: str) -> list[Path]:
    """Log-log time (and ratio to causal softmax) vs N, and peak memory vs N: one line per variant."""
    plt = harness.pyplot()
    if plt is None:
        raise LongrecError("plotting needs matplotlib (pip install 'longrec[plot]')")
    r0 = rows[0]
    title = f"{r0['level']} fwd+bwd, {r0['device']}, {r0['dtype']}, B={r0['batch']}, D={r0['dim']}"
    title += f", {r0['threads']} thread(s)" if r0["device"].startswith("cpu") else ""
    lengths = sorted({r["N"] for r in rows})
    panels = {
        "time": [("ms", "ms (median)"), ("ratio_to_softmax", "time / causal softmax")],
        "memory": [("peak_mib", f"peak MiB ({r0['memory']})")],
    }
    paths = []
    for name, metrics in panels.items():
        fig, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 4.8), squeeze=False)
        for ax, (key, label) in zip(axes[0], metrics, strict=True):
            for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows)):
                mine = [r for r in rows if r["variant"] == v]
                pts = [(r["N"], r[key]) for r in mine if r[key] is not None and r[key] > 0]  # log axes: > 0 only
                fail = next((r for r in mine if r["status"] in FAILED), None)
                tag = f" ({fail['status']} at {fail['N']})" if fail else ""
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", ms=3, ls=("-", "--", ":")[i // 10 % 3], label=v + tag)
            ax.set(xlabel="sequence length N", ylabel=label)
            if not ax.lines:
                ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
                continue
            harness.loglog_lengths(ax, lengths)
        if axes[0][-1].lines:  # one legend, right of the last panel
            axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        paths.append(out_dir / f"{stem}-{name}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Variants x N tables of time and memory. CPU shows time only as the ratio to causal softmax (same run);
    CUDA shows median ms with the ratio."""
    r0 = rows[0]
    cpu = r0["device"].startswith("cpu")
    lengths = sorted({r["N"] for r in rows})
    cells = {(r["variant"], r["N"]): r for r in rows}

    def fmt_time(r: dict[str, Any]) -> str:
        if r["status"] != "ok":
            return r["status"]
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
        out += ["", f"| {what} | " + " | ".join(f"N={n}" for n in lengths) + " |", "|---" * (len(lengths) + 1) + "|"]
        for v in dict.fromkeys(r["variant"] for r in rows):
            out.append(f"| {v} | " + " | ".join(fmt(cells[v, n]) for n in lengths) + " |")
    return "\n".join(out)
