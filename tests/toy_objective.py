"""A toy objective in one file, registered through the public API: last_cloze hides the newest event of each
window behind a query token of its own and predicts it (BERT4Rec's evaluation query, used for training)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longrec.config import ExperimentConfig, TrainConfig
from longrec.data.loader import Batch, batch_rows, collate, to_batch
from longrec.data.split import Splits
from longrec.errors import ConfigError
from longrec.objectives import OBJECTIVES, Objective


class LastCloze(Objective):
    extra_tokens = 2  # two special ids, to show any count: the query token is the second
    causal_only = False  # the target is hidden behind the token: a global encoder may train on it

    def batches(self, splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
        te = splits.train_ends
        users = rng.permutation(np.flatnonzero(te >= 2))
        token = self.mask_token(splits.corpus.num_items)
        for rows in batch_rows(np.minimum(te[users], n), train.batch_size, 0, rng):
            u = users[rows]
            items = collate(splits.corpus, u, np.maximum(te[u] - n, 0), te[u], n)
            targets = np.zeros_like(items)
            targets[:, -1], items[:, -1] = items[:, -1], token
            yield to_batch(items, targets, u)

    def rows(self, splits: Splits, train: TrainConfig) -> int:
        return int((splits.train_ends >= 2).sum())

    def mask_token(self, num_items: int) -> int:
        return num_items + 2

    def check(self, cfg: ExperimentConfig) -> None:
        if cfg.train.window != "last":
            raise ConfigError(f"config: train.objective=last_cloze reads the newest window only: 'train.window' "
                              f"must be last, got {cfg.train.window!r}")


OBJECTIVES.register("last_cloze", LastCloze())
