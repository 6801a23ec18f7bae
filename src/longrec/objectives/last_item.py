"""last_item: prefix training, only the last position of each cut predicts (global encoders; LinRec, RecGRELA)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longrec.config import TrainConfig
from longrec.data.loader import Batch, batch_rows, collate, collate_times, to_batch
from longrec.data.split import Splits
from longrec.objectives.base import Objective


def last_item_batches(splits: Splits, n: int, batch_size: int, rng: np.random.Generator,
                      cuts: int = 0, bucket: int = 0) -> Iterator[Batch]:
    """Prefix training: each row is a cut c of a training sequence; only its last position predicts seq[c].
    cuts=0 uses every prefix (the LinRec/RecGRELA protocol), cuts=k draws k random cuts per user."""
    te = splits.train_ends
    valid = np.flatnonzero(te >= 2)
    if cuts > 0:
        users = np.repeat(valid, cuts)
        ends = rng.integers(1, te[users])
    else:
        counts = te[valid] - 1
        users = np.repeat(valid, counts)
        ends = 1 + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    order = rng.permutation(len(users))
    users, ends = users[order], ends[order]
    off = splits.corpus.offsets
    for rows in batch_rows(np.minimum(ends, n), batch_size, bucket, rng):
        u, c = users[rows], ends[rows]
        items = collate(splits.corpus, u, np.maximum(c - n, 0), c, n)
        targets = np.zeros_like(items)
        targets[:, -1] = splits.corpus.items[off[u] + c]
        yield to_batch(items, targets, u, collate_times(splits.corpus, u, np.maximum(c - n, 0), c, n))


class LastItem(Objective):
    """The target follows the whole input window, so a global encoder trains without seeing it."""

    def batches(self, splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
        return last_item_batches(splits, n, train.batch_size, rng, train.cuts, train.bucket)

    def rows(self, splits: Splits, train: TrainConfig) -> int:
        te = splits.train_ends
        return int((te >= 2).sum()) * train.cuts if train.cuts else int(np.maximum(te - 1, 0).sum())
