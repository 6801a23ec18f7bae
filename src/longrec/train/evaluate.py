"""Evaluation: full ranking over the catalogue (history masked by default) or labelled sampled ranking."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from longrec.config import EvalConfig
from longrec.data.corpus import Corpus
from longrec.data.loader import eval_batches
from longrec.data.split import EvalSet, Splits
from longrec.metrics import by_length, metrics_from_ranks, ranks_from_scores
from longrec.model.encoder import SeqEncoder


def protocol(cfg: EvalConfig) -> str:
    if cfg.sampled != "none":
        return f"sampled ranking: target vs {cfg.negatives} {cfg.sampled}-sampled negatives (not full ranking)"
    return "full ranking, history " + ("masked" if cfg.mask_history else "not masked")


def _history_index(corpus: Corpus, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) for every item in each row's history seq[:end]."""
    row = np.repeat(np.arange(len(users)), ends)
    within = np.arange(ends.sum()) - np.repeat(np.cumsum(ends) - ends, ends)
    return row, corpus.items[corpus.offsets[users][row] + within].astype(np.int64)


def item_popularity(splits: Splits) -> np.ndarray:
    """[I+1] counts of each item in the training sequences (index 0 = PAD, count 0)."""
    c = splits.corpus
    idx = np.concatenate([np.arange(c.offsets[u], c.offsets[u] + e) for u, e in enumerate(splits.train_ends)])
    return np.bincount(c.items[idx], minlength=c.num_items + 1).astype(np.float64)


def sample_candidates(splits: Splits, rows: EvalSet, cfg: EvalConfig, seed: int) -> np.ndarray:
    """[R, 1+n] candidates: the target first, then n negatives outside the user's history and target."""
    rng = np.random.default_rng(seed)
    c = splits.corpus
    n_items = c.num_items
    p = item_popularity(splits)[1:] if cfg.sampled == "popularity" else np.ones(n_items)
    p = p / p.sum()
    out = np.empty((len(rows), 1 + cfg.negatives), dtype=np.int64)
    for r, (u, e) in enumerate(zip(rows.users, rows.ends, strict=True)):
        seq = c.seq(u)
        banned = set(seq[:e].tolist())
        banned.add(int(seq[e]))
        if n_items - len(banned) < cfg.negatives:
            raise ValueError(f"user {c.user_ids[u]}: fewer than {cfg.negatives} items left to sample negatives from")
        negs: list[int] = []
        while len(negs) < cfg.negatives:
            draw = rng.choice(n_items, size=2 * cfg.negatives, p=p) + 1
            negs.extend(i for i in draw.tolist() if i not in banned and i not in negs)
        out[r, 0] = seq[e]
        out[r, 1:] = negs[: cfg.negatives]
    return out


@torch.no_grad()
def evaluate(model: SeqEncoder, splits: Splits, rows: EvalSet, cfg: EvalConfig, mask_token: int,
             device: torch.device, seed: int = 0) -> dict:
    """Metrics over the rows (overall and by history length) and the per-row ranks."""
    model.eval()
    corpus = splits.corpus
    ranks = np.empty(len(rows), dtype=np.int64)
    cands = sample_candidates(splits, rows, cfg, seed) if cfg.sampled != "none" else None
    for batch, idx in eval_batches(splits, rows, model.max_len, cfg.batch_size, mask_token):
        b = batch.to(device)
        h = model(b.items, b.mask)[:, -1]  # [B, D]
        scores: Tensor = (h @ model.item_table().T).float()  # [B, I+1]
        scores[:, 0] = float("-inf")
        if cands is not None:
            c = torch.from_numpy(cands[idx]).to(device)
            r = ranks_from_scores(scores.gather(1, c), torch.zeros(len(idx), dtype=torch.long, device=device))
        else:
            if cfg.mask_history:
                hr, hi = _history_index(corpus, rows.users[idx], rows.ends[idx])
                scores[torch.from_numpy(hr).to(device), torch.from_numpy(hi).to(device)] = float("-inf")
            r = ranks_from_scores(scores, b.targets[:, -1])
        ranks[idx] = r.cpu().numpy()
    return {
        "protocol": protocol(cfg),
        "users": len(rows),
        "metrics": metrics_from_ranks(ranks, cfg.ks),
        "by_length": by_length(ranks, rows.ends, cfg.ks),
        "ranks": ranks,
    }
