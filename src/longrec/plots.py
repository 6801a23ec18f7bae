"""The package's plots: attention heatmaps of a trained run for one user's history (the LinRec paper's case study),
and the benchmarks' log-log curves of a measure against the length N, one line per variant. Files only (Agg)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from longrec.errors import ConfigError, LongrecError
from longrec.mixers.base import positions
from longrec.model.encoder import SeqEncoder
from longrec.train.run import load_run


@torch.no_grad()
def attention_maps(model: SeqEncoder, items: Tensor, mask: Tensor) -> list[Tensor]:
    """Per layer [B,H,N,N] weights from mixers that expose `attention_weights` (softmax, linrec)."""
    maps = []
    x = model._embed(items, positions(mask))
    for i, block in enumerate(model.layers):
        weights = getattr(block.mixer, "attention_weights", None)
        if weights is None:
            raise ConfigError(f"layer {i}: mixer {type(block.mixer).__name__} has no attention matrix to plot")
        maps.append(weights(block.norm1(x) if block.norm_first else x, mask))
        x = block(x, mask)
    return maps


def plot_attention(run_dir: Path, user: str, last: int = 30, out: Path | None = None) -> Path:
    """Heatmaps (one panel per layer, head 0) of the user's newest `last` test-history events; returns the PNG."""
    plt = pyplot()
    if plt is None:
        raise LongrecError("plotting needs matplotlib (pip install 'longrec[plot]')")
    cfg, model, splits = load_run(run_dir, torch.device("cpu"))
    corpus = splits.corpus
    hits = np.flatnonzero(corpus.user_ids == str(user))
    if not len(hits):
        raise LongrecError(f"user {user!r} is not in dataset {cfg.data.name}")
    seq = corpus.seq(int(hits[0]))[:-1][-min(last, model.max_len) :]  # the test input's newest events
    items = torch.from_numpy(seq.astype(np.int64))[None]
    maps = attention_maps(model, items, items > 0)
    fig, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 4), squeeze=False)
    for i, (ax, w) in enumerate(zip(axes[0], maps, strict=True)):
        im = ax.imshow(w[0, 0].numpy(), cmap="viridis")
        ax.set_title(f"{cfg.model.mixer} layer {i + 1}, head 1")
        ax.set_xlabel("key position")
        ax.set_ylabel("query position")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{cfg.name}: user {user}, newest {len(seq)} events")
    return save(fig, out or run_dir / f"attention-user-{user}.png")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (files only), or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save(fig: Any, path: Path) -> Path:
    """Lay the figure out, write it at 120 dpi and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def loglog_by_variant(
    path: Path,
    rows: Sequence[Mapping[str, Any]],
    x: tuple[str, str],
    panels: Sequence[tuple[str, str, str]],
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Path | None:
    """One log-log panel per (key, y label, panel title): row[key] against row[x[0]] (axis label x[1]), a line per
    row["variant"] (legend: labels[variant], default its name), base-2 x ticks at exactly the rows' x values. Values
    missing or <= 0 are left out; a panel left empty says "not measured". None without matplotlib (a note on stderr)."""
    plt = pyplot()
    if plt is None:
        print(f"{path.name}: matplotlib not installed, no plot (pip install 'longrec[plot]')", file=sys.stderr)
        return None
    from matplotlib.ticker import NullLocator

    xs = sorted({r[x[0]] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    for ax, (key, ylabel, panel) in zip(axes[0], panels, strict=True):
        for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows)):
            pts = [(r[x[0]], r[key]) for r in rows if r["variant"] == v and r.get(key) is not None and r[key] > 0]
            if pts:  # ten colours, then the next line style
                label = (labels or {}).get(v, v)
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, ls=("-", "--", ":")[i // 10 % 3], label=label)
        ax.set(xlabel=x[1], ylabel=ylabel, title=panel)
        if not ax.lines:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
            continue
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(n) for n in xs], minor=False)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    if axes[0][-1].lines:  # one legend, right of the last panel
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
