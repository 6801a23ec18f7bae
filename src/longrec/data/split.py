"""Splits as cut points into each user's sequence: training reads seq[:train_end]; an eval row predicts seq[end]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longrec.data.corpus import Corpus
from longrec.errors import DataError


@dataclass(frozen=True)
class EvalSet:
    """Rows (users[r], ends[r]): history = seq(users[r])[:ends[r]], target = seq(users[r])[ends[r]]."""

    users: np.ndarray  # [R] int64
    ends: np.ndarray  # [R] int64

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Splits:
    corpus: Corpus
    train_ends: np.ndarray  # [U] int64; 0 = the user has no training events
    valid: EvalSet
    test: EvalSet
    dropped: dict[str, int]  # users left out of each part, with the reason in the key


def leave_one_out(corpus: Corpus) -> Splits:
    """Train on s[:-2], validate on s[-2] given s[:-2], test on s[-1] given s[:-1]; users with < 3 events dropped."""
    lens = corpus.lengths
    ok = lens >= 3
    users = np.flatnonzero(ok).astype(np.int64)
    train_ends = np.where(ok, lens - 2, 0).astype(np.int64)
    return Splits(
        corpus,
        train_ends,
        EvalSet(users, (lens[users] - 2).astype(np.int64)),
        EvalSet(users, (lens[users] - 1).astype(np.int64)),
        {"fewer than 3 events": int((~ok).sum())},
    )


def temporal(corpus: Corpus, valid_q: float = 0.8, test_q: float = 0.9) -> Splits:
    """Global time cut: events before the valid quantile train; each user's first event in the valid
    (test) period is predicted from everything before it. Users with no earlier event are dropped."""
    if corpus.times is None:
        raise DataError("temporal split needs timestamps, and this dataset has none (use data.split=loo)")
    if not 0.0 < valid_q < test_q < 1.0:
        raise DataError(f"temporal split needs 0 < temporal_valid < temporal_test < 1, got {valid_q}, {test_q}")
    t_valid, t_test = np.quantile(corpus.times, [valid_q, test_q])
    starts = corpus.offsets[:-1]
    # first index of each user's events at or after a cut time (times are sorted within a user)
    before_valid = np.add.reduceat(corpus.times < t_valid, starts) if len(starts) else np.zeros(0)
    before_test = np.add.reduceat(corpus.times < t_test, starts) if len(starts) else np.zeros(0)
    lens = corpus.lengths
    train_ends = before_valid.astype(np.int64)
    has_valid = (before_valid < before_test) & (before_valid >= 1)
    has_test = (before_test < lens) & (before_test >= 1)
    vu, tu = np.flatnonzero(has_valid), np.flatnonzero(has_test)
    return Splits(
        corpus,
        train_ends,
        EvalSet(vu.astype(np.int64), before_valid[vu].astype(np.int64)),
        EvalSet(tu.astype(np.int64), before_test[tu].astype(np.int64)),
        {"no valid-period event after history": int((~has_valid).sum()),
         "no test-period event after history": int((~has_test).sum())},
    )


def make_splits(corpus: Corpus, kind: str, valid_q: float = 0.8, test_q: float = 0.9) -> Splits:
    if kind == "loo":
        return leave_one_out(corpus)
    if kind == "temporal":
        return temporal(corpus, valid_q, test_q)
    raise DataError(f"unknown split '{kind}' (known: loo, temporal)")
