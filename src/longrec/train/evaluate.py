"""Evaluation: full ranking over the catalogue (history masked by default) or labelled sampled ranking."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from longrec.config import EvalConfig
from longrec.data.corpus import Corpus
from longrec.data.loader import Batch, eval_batches, train_item_counts
from longrec.data.split import EvalSet, Splits
from longrec.metrics import by_length, metrics_from_ranks, ranks_from_scores
from longrec.model.encoder import SeqEncoder
from longrec.train.distributed import SINGLE, Dist, gather_rows


def protocol(cfg: EvalConfig) -> str:
    if cfg.sampled != "none":
        return f"sampled ranking: target vs {cfg.negatives} {cfg.sampled}-sampled negatives (not full ranking)"
    return "full ranking, history " + ("masked" if cfg.mask_history else "not masked")


def _history_index(corpus: Corpus, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) for every item in each row's history seq[:end]."""
    row = np.repeat(np.arange(len(users)), ends)
    within = np.arange(ends.sum()) - np.repeat(np.cumsum(ends) - ends, ends)
    return row, corpus.items[corpus.offsets[users][row] + within].astype(np.int64)


def sample_candidates(splits: Splits, rows: EvalSet, cfg: EvalConfig, seed: int) -> np.ndarray:
    """[R, 1+n] candidates: the target first, then n negatives outside the user's history and target."""
    rng = np.random.default_rng(seed)
    c = splits.corpus
    n_items = c.num_items
    p = train_item_counts(splits)[1:] if cfg.sampled == "popularity" else np.ones(n_items)
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


def chunked_ranks(h: Tensor, table: Tensor, targets: Tensor, banned: tuple[Tensor, Tensor], chunk: int) -> Tensor:
    """rank = 1 + #{j != target : score_j >= score_target} over items 1..I, scoring `chunk` items at a time.

    h [B,D], table [I+1,D], targets [B] in 1..I; banned = (rows, items) pairs scored -inf (the history), a
    banned target included. The target's score comes from the same chunk matmul as the others' (a first pass
    over the chunks that hold targets), so ties and NaNs count as `ranks_from_scores` counts them."""
    B, n = len(targets), table.shape[0]
    target_score = torch.empty(B, device=h.device)
    higher = torch.zeros(B, dtype=torch.long, device=h.device)
    brow, bitem = banned
    rows = torch.arange(B, device=h.device)
    for pass_ in ("targets", "count"):
        for c0 in range(0, n, chunk):
            c1 = min(c0 + chunk, n)
            here = (targets >= c0) & (targets < c1)
            if pass_ == "targets" and not here.any():
                continue
            scores = (h @ table[c0:c1].T).float()  # [B, C]
            if c0 == 0:
                scores[:, 0] = float("-inf")  # PAD
            inside = (bitem >= c0) & (bitem < c1)
            scores[brow[inside], bitem[inside] - c0] = float("-inf")
            if pass_ == "targets":
                target_score[here] = scores[rows[here], targets[here] - c0]
                continue
            scores[rows[here], targets[here] - c0] = float("nan")  # the target itself does not count
            higher += (scores >= target_score[:, None]).sum(-1)
    return torch.where(target_score.isnan(), n, 1 + higher)


def _batch_ranks(model: SeqEncoder, b: Batch, hist: tuple[Tensor, Tensor], cands: Tensor | None,
                 chunk: int) -> Tensor:
    """[B] ranks of the targets at the last column of b: among candidates, or over the whole catalogue."""
    h = model(b.items, b.mask)[:, -1]  # [B, D]
    table = model.item_table()
    if table.shape[0] > chunk:  # a catalogue too big to score whole
        if cands is None:
            return chunked_ranks(h, table, b.targets[:, -1], hist, chunk)
        picked = torch.bmm(table[cands], h[:, :, None])[:, :, 0].float()  # [B, 1+n] candidates only
        return ranks_from_scores(picked, torch.zeros(len(cands), dtype=torch.long, device=h.device))
    scores: Tensor = (h @ table.T).float()  # [B, I+1]
    scores[:, 0] = float("-inf")
    if cands is not None:
        return ranks_from_scores(scores.gather(1, cands), torch.zeros(len(cands), dtype=torch.long, device=h.device))
    scores[hist] = float("-inf")
    return ranks_from_scores(scores, b.targets[:, -1])


@torch.no_grad()
def evaluate(model: SeqEncoder, splits: Splits, rows: EvalSet, cfg: EvalConfig, mask_token: int,
             device: torch.device, seed: int = 0, dist: Dist = SINGLE) -> dict:
    """Metrics over the rows (overall and by history length) and the per-row ranks. Under DDP each rank
    ranks its share of the rows and the ranks are gathered, so every rank returns the whole result."""
    model.eval()
    corpus = splits.corpus
    mine = dist.rows(len(rows))
    local = EvalSet(rows.users[mine], rows.ends[mine])
    ranks = np.empty(len(local), dtype=np.int64)
    cands = sample_candidates(splits, rows, cfg, seed)[mine] if cfg.sampled != "none" else None
    for batch, idx in eval_batches(splits, local, model.max_len, cfg.batch_size, mask_token):
        b = batch.to(device)
        empty = torch.zeros(0, dtype=torch.long, device=device)
        hist = (empty, empty)
        if cfg.mask_history and cands is None:
            hr, hi = _history_index(corpus, local.users[idx], local.ends[idx])
            hist = (torch.from_numpy(hr).to(device), torch.from_numpy(hi).to(device))
        c = torch.from_numpy(cands[idx]).to(device) if cands is not None else None
        ranks[idx] = _batch_ranks(model, b, hist, c, cfg.item_chunk).cpu().numpy()
    ranks = gather_rows(mine, ranks, len(rows), dist, device)
    return {
        "protocol": protocol(cfg),
        "users": len(rows),
        "metrics": metrics_from_ranks(ranks, cfg.ks),
        "by_length": by_length(ranks, rows.ends, cfg.ks),
        "ranks": ranks,
    }
