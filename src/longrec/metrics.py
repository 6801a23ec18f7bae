"""Ranking metrics from ranks (1 = best); ties count against the target."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def ranks_from_scores(scores: Tensor, targets: Tensor) -> Tensor:
    """rank = 1 + #{j != target : score_j >= score_target}. scores [B,C], targets [B] column indices -> [B]."""
    t = scores.gather(1, targets[:, None])  # [B, 1]
    ranks = (scores >= t).sum(-1)  # counts the target itself once, so this is already 1 + #others
    return torch.where(t[:, 0].isnan(), scores.shape[1], ranks)  # a NaN score ranks last, never first


def metrics_from_ranks(ranks: np.ndarray, ks: tuple[int, ...] | list[int]) -> dict[str, float]:
    """Mean Recall@k (= HR@k), NDCG@k, MRR@k for each k, and MRR over the full ranking."""
    r = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"recall@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 1.0), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / r, 0.0).mean())
    out["mrr"] = float((1.0 / r).mean())
    return out


BUCKETS = (10, 20, 50, 100, 200, 500, 1000, 5000)


def by_length(ranks: np.ndarray, lengths: np.ndarray, ks: tuple[int, ...]) -> dict[str, dict[str, float]]:
    """Metrics per history-length bucket '(lo, hi]'; empty buckets are left out; each has its user count."""
    out: dict[str, dict[str, float]] = {}
    lo = 0
    for hi in (*BUCKETS, np.inf):
        sel = (lengths > lo) & (lengths <= hi)
        if sel.any():
            name = f"{lo + 1}-{int(hi)}" if np.isfinite(hi) else f">{lo}"
            out[name] = {"users": int(sel.sum()), **metrics_from_ranks(ranks[sel], ks)}
        lo = int(hi) if np.isfinite(hi) else lo
    return out


def format_table(metrics: dict[str, float], ks: tuple[int, ...]) -> str:
    """A small text table: one row per metric family, one column per k."""
    head = "metric  " + "".join(f"{'@' + str(k):>9}" for k in ks)
    rows = [head]
    for name in ("recall", "ndcg", "mrr"):
        rows.append(f"{name:<8}" + "".join(f"{metrics[f'{name}@{k}']:>9.4f}" for k in ks))
    return "\n".join(rows)


def to_numpy(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.int64).numpy()


def ndcg_per_row(ranks: np.ndarray, k: int) -> np.ndarray:
    """[R] NDCG@k of each row (one target: 1/log2(rank+1) when rank <= k, else 0)."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, reps: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of a - b over paired rows (the same users) with a percentile bootstrap CI: rows are resampled with
    replacement `reps` times. Returns {"diff", "lo", "hi", "n"}."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(d) == 0:
        return {"diff": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = np.empty(reps)
    for i in range(0, reps, 100):  # 100 resamples at a time: memory 100 x rows
        j = min(i + 100, reps)
        means[i:j] = d[rng.integers(0, len(d), size=(j - i, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": len(d)}
