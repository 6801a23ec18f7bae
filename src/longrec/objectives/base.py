"""The objective contract: what a training objective owns (its batches, special tokens and leakage rule)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from longrec.config import ExperimentConfig, TrainConfig
from longrec.data.loader import Batch
from longrec.data.split import Splits
from longrec.registry import Registry


class Objective:
    """A training objective (train.objective): the batches it trains on and how it is evaluated.

    extra_tokens: special ids num_items+1 .. num_items+extra_tokens the encoder embeds for it (its mask token)
    causal_only:  the leakage rule: its targets are later events of the input window, so an encoder that sees
                  the whole window (a global, bidirectional mixer) would see them: such a model is refused
    per_position: every real position has its own target: train.last_targets and the repeat head apply
    """

    extra_tokens: int = 0
    causal_only: bool = False
    per_position: bool = False

    def batches(self, splits: Splits, n: int, train: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch of training batches of at most n columns, drawn from `rng` only (the same seed gives the
        same batches)."""
        raise NotImplementedError

    def rows(self, splits: Splits, train: TrainConfig) -> int:
        """Training rows an epoch (its batches hold this many rows in all)."""
        raise NotImplementedError

    def mask_token(self, num_items: int) -> int:
        """The id appended after the history at evaluation and serving (the cloze query), or 0 for none."""
        return 0

    def check(self, cfg: ExperimentConfig) -> None:
        """Its own config rules, each a one-line ConfigError naming the field (load_config calls it)."""


OBJECTIVES: Registry[Objective] = Registry("objective")
