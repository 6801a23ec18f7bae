"""next_item: every real position predicts the next event of its window (causal encoders; the default)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longrec.config import TrainConfig
from longrec.data.loader import Batch, batch_rows, collate, collate_times, to_batch, window_ends
from longrec.data.split import Splits
from longrec.objectives.base import Objective


def next_item_batches(splits: Splits, n: int, batch_size: int, rng: np.random.Generator,
                      window: str = "last", bucket: int = 0) -> Iterator[Batch]:
    """Every real position predicts the next event of the training sequence (causal mixers)."""
    te = splits.train_ends
    users = rng.permutation(np.flatnonzero(te >= 2))
    ends = window_ends(te[users], 2, window, rng)
    for rows in batch_rows(np.minimum(ends, n + 1), batch_size, bucket, rng):
        u, e = users[rows], ends[rows]
        s0 = np.maximum(e - n - 1, 0)
        arr = collate(splits.corpus, u, s0, e, n + 1)
        times = collate_times(splits.corpus, u, s0, e, n + 1)
        yield to_batch(arr[:, :-1], arr[:, 1:], u, None if times is None else times[:, :-1])


class NextItem(Objective):
    causal_only = True  # the target at position t is the input at t+1
    per_position = True

    def batches(self, splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
        return next_item_batches(splits, n, train.batch_size, rng, train.window, train.bucket)

    def rows(self, splits: Splits, train: TrainConfig) -> int:
        return int((splits.train_ends >= 2).sum())
