"""masked_item: the BERT4Rec cloze; hidden positions are replaced by a mask token and predicted."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longrec.config import TrainConfig
from longrec.data.loader import Batch, batch_rows, collate, collate_times, to_batch, window_ends
from longrec.data.split import Splits
from longrec.objectives.base import Objective


def masked_item_batches(splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator,
                        mask_token: int) -> Iterator[Batch]:
    """BERT4Rec cloze: a share (train.mask_prob) of real positions is replaced by the mask token and predicted;
    batches of train.batch_size windows (train.window, train.bucket)."""
    te = splits.train_ends
    users = rng.permutation(np.flatnonzero(te >= 1))
    ends = window_ends(te[users], 1, train.window, rng)
    for rows in batch_rows(np.minimum(ends, n), train.batch_size, train.bucket, rng):
        u, e = users[rows], ends[rows]
        items = collate(splits.corpus, u, np.maximum(e - n, 0), e, n)
        times = collate_times(splits.corpus, u, np.maximum(e - n, 0), e, n)
        real = items > 0
        hide = real & (rng.random(items.shape) < train.mask_prob)
        # every row predicts at least one item: force one random real position where none was drawn
        none = ~hide.any(1)
        if none.any():
            nreal = real[none].sum(1)
            pick = n - 1 - (rng.random(none.sum()) * nreal).astype(np.int64)
            hide[np.flatnonzero(none), pick] = True
        targets = np.where(hide, items, 0)
        yield to_batch(np.where(hide, mask_token, items), targets, u, times)


class MaskedItem(Objective):
    """Inputs hide their targets behind the mask token, so a global encoder trains without seeing them; at
    evaluation the mask token follows the history, as the position to predict."""

    extra_tokens = 1  # the mask token, id num_items + 1

    def batches(self, splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
        token = self.mask_token(splits.corpus.num_items)
        return masked_item_batches(splits, n, train, rng, token)

    def rows(self, splits: Splits, train: TrainConfig) -> int:
        return int((splits.train_ends >= 1).sum())

    def mask_token(self, num_items: int) -> int:
        return num_items + 1
