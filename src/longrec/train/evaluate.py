"""Evaluation: full ranking over the catalogue (history masked by default) or labelled sampled ranking."""

from __future__ import annotations

import numpy as np
import torch

from longrec.config import EvalConfig, ExperimentConfig
from longrec.data.corpus import Corpus
from longrec.data.loader import eval_batches, train_item_counts
from longrec.data.split import EvalSet, Splits
from longrec.errors import ConfigError, DataError
from longrec.metrics import by_length, metrics_from_ranks, ranks_from_scores
from longrec.scoring import Scorer, banned_pairs
from longrec.scoring import ranks as score_ranks
from longrec.train.distributed import SINGLE, Dist, gather_rows


def protocol(cfg: EvalConfig) -> str:
    if cfg.sampled != "none":
        return f"sampled ranking: target vs {cfg.negatives} {cfg.sampled}-sampled negatives (not full ranking)"
    return "full ranking, history " + ("masked" if cfg.mask_history else "not masked")


def history_index(corpus: Corpus, users: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item) for every item in each row's history seq[:end]."""
    row = np.repeat(np.arange(len(users)), ends)
    within = np.arange(ends.sum()) - np.repeat(np.cumsum(ends) - ends, ends)
    return row, corpus.items[corpus.offsets[users][row] + within].astype(np.int64)


def check_users(cfg: ExperimentConfig, splits: Splits) -> None:
    """Some user is left to train and evaluate on; else one error that counts the users dropped, and why."""
    if not len(splits.valid) or not len(splits.test) or not splits.train_ends.any():
        why = "; ".join(f"{n} users dropped: {reason}" for reason, n in splits.dropped.items() if n)
        raise DataError(f"{cfg.data.name}: no user left to train and evaluate on with data.split={cfg.data.split} "
                        f"({splits.corpus.num_users} users{'; ' + why if why else ''})")


def check_data(cfg: ExperimentConfig, splits: Splits) -> None:
    """The checks a config can only pass once its data is loaded (before the run directory is written): some user
    to train and evaluate on, and enough items for the sampled negatives."""
    check_users(cfg, splits)
    if cfg.eval.sampled == "none":
        return
    if cfg.eval.negatives >= splits.corpus.num_items:
        raise ConfigError(f"config: 'eval.negatives' ({cfg.eval.negatives}) must be below the number of items of "
                          f"{cfg.data.name} ({splits.corpus.num_items})")
    for rows in (splits.valid, splits.test):  # every user has enough items left to draw from (as evaluate draws)
        sample_candidates(splits, rows, cfg.eval, cfg.seed)


def sample_candidates(splits: Splits, rows: EvalSet, cfg: EvalConfig, seed: int) -> np.ndarray:
    """[R, 1+n] candidates: the target first, then n negatives outside the user's history and target."""
    rng = np.random.default_rng(seed)
    c = splits.corpus
    n_items = c.num_items
    p = train_item_counts(splits)[1:] if cfg.sampled == "popularity" else np.ones(n_items)
    p = p / p.sum()
    drawable = int((p > 0).sum())  # popularity sampling never draws an item unseen in training
    out = np.empty((len(rows), 1 + cfg.negatives), dtype=np.int64)
    for r, (u, e) in enumerate(zip(rows.users, rows.ends, strict=True)):
        seq = c.seq(u)
        banned = set(seq[:e].tolist())
        banned.add(int(seq[e]))
        if drawable - sum(1 for i in banned if p[i - 1] > 0) < cfg.negatives:  # else the draws below never end
            raise ConfigError(f"config: 'eval.negatives': user {c.user_ids[u]} has fewer than {cfg.negatives} items "
                              "left to sample negatives from")
        negs: list[int] = []
        while len(negs) < cfg.negatives:
            draw = rng.choice(n_items, size=2 * cfg.negatives, p=p) + 1
            negs.extend(i for i in draw.tolist() if i not in banned and i not in negs)
        out[r, 0] = seq[e]
        out[r, 1:] = negs[: cfg.negatives]
    return out


@torch.no_grad()
def evaluate(scorer: Scorer, splits: Splits, rows: EvalSet, cfg: EvalConfig, seed: int = 0,
             dist: Dist = SINGLE) -> dict:
    """Metrics over the rows (overall and by history length) and the per-row ranks. cfg.window > 0 overrides the
    scorer's max_len (the newest `window` events are its input). Under DDP each rank ranks its share of the
    rows and the ranks are gathered, so every rank returns the whole result."""
    corpus, device = splits.corpus, scorer.device
    mine = dist.rows(len(rows))
    local = EvalSet(rows.users[mine], rows.ends[mine])
    ranks = np.empty(len(local), dtype=np.int64)
    cands = sample_candidates(splits, rows, cfg, seed)[mine] if cfg.sampled != "none" else None
    n = cfg.window or scorer.max_len
    for batch, idx in eval_batches(splits, local, n, cfg.batch_size, scorer.mask_token):
        b = batch.to(device)
        query = scorer.encode(b.items, b.mask, b.times)
        if cands is not None:
            picked = scorer.pick(query, torch.from_numpy(cands[idx]).to(device))  # [B, 1+n], the target first
            r = ranks_from_scores(picked, torch.zeros(len(idx), dtype=torch.long, device=device))
        else:
            banned = banned_pairs([], device)
            if cfg.mask_history:
                hr, hi = history_index(corpus, local.users[idx], local.ends[idx])
                banned = (torch.from_numpy(hr).to(device), torch.from_numpy(hi).to(device))
            r = score_ranks(scorer, query, b.targets[:, -1], banned, cfg.item_chunk)
        ranks[idx] = r.cpu().numpy()
    ranks = gather_rows(mine, ranks, len(rows), dist, device)
    return {
        "protocol": protocol(cfg),
        "users": len(rows),
        "metrics": metrics_from_ranks(ranks, cfg.ks),
        "by_length": by_length(ranks, rows.ends, cfg.ks),
        "ranks": ranks,
    }
