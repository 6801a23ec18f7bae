"""Attention heatmaps of a trained run for one user's history (the LinRec paper's case study)."""

from __future__ import annotations

from pathlib import Path

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
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LongrecError("plotting needs matplotlib (pip install 'longrec[plot]')") from None
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
    fig.tight_layout()
    out = out or run_dir / f"attention-user-{user}.png"
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
