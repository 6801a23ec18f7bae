"""Splits and batches: hand-built cases, and a leakage test by position on ML-1M and synthetic corpora."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

from conftest import needs_data
from longrec.config import TrainConfig
from longrec.data.corpus import Corpus
from longrec.data.datasets import load_corpus
from longrec.data.loader import Batch, collate, eval_batches
from longrec.data.split import Splits, leave_one_out, make_splits, temporal
from longrec.errors import DataError
from longrec.objectives.last_item import last_item_batches
from longrec.objectives.masked_item import masked_item_batches
from longrec.objectives.next_item import next_item_batches


def make_corpus(seqs: list[list[int]], times: list[list[float]] | None = None) -> Corpus:
    """A corpus holding exactly these item-id sequences (users 0..U-1, items 1..max)."""
    return Corpus.from_seqs(seqs, times=times)


def synthetic(users: int = 300, seed: int = 0) -> Corpus:
    """Random lengths 1..60 over only 40 items (so ids repeat within a user), times with many ties."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, 41, rng.integers(1, 61)).tolist() for _ in range(users)]
    times = [np.sort(rng.integers(0, 500, len(s))).astype(float).tolist() for s in seqs]
    return make_corpus(seqs, times)


def rows(batches: Iterator[Batch]) -> list[tuple[list[int], list[int], int]]:
    """(items, targets, user) of every row of every batch."""
    out = []
    for b in batches:
        for i in range(len(b.users)):
            out.append((b.items[i].tolist(), b.targets[i].tolist(), int(b.users[i])))
    return out


# ---------------------------------------------------------------- splits


def test_leave_one_out_by_hand() -> None:
    corpus = make_corpus([[1, 2, 3, 4, 5], [6, 7, 8], [1, 2], [3]])
    s = leave_one_out(corpus)
    assert s.train_ends.tolist() == [3, 1, 0, 0]
    assert s.valid.users.tolist() == [0, 1] and s.valid.ends.tolist() == [3, 1]
    assert s.test.users.tolist() == [0, 1] and s.test.ends.tolist() == [4, 2]
    assert s.dropped == {"fewer than 3 events": 2}
    # valid target s[-2], test target s[-1]
    assert [int(corpus.seq(u)[e]) for u, e in zip(s.valid.users, s.valid.ends, strict=True)] == [4, 7]
    assert [int(corpus.seq(u)[e]) for u, e in zip(s.test.users, s.test.ends, strict=True)] == [5, 8]


def test_temporal_by_hand() -> None:
    # 11 timestamps 0..10: the 0.8 and 0.9 quantiles are exactly 8 and 9; an event at 8 is in the valid period
    times = [[0, 1, 8, 10], [2, 3], [4, 5, 6, 7, 9]]
    corpus = make_corpus([[1, 2, 3, 4], [5, 6], [7, 8, 9, 10, 11]], times)
    s = temporal(corpus, 0.8, 0.9)
    assert s.train_ends.tolist() == [2, 2, 4]
    assert s.valid.users.tolist() == [0] and s.valid.ends.tolist() == [2]  # target: item 3 at t=8
    assert s.test.users.tolist() == [0, 2] and s.test.ends.tolist() == [3, 4]  # items 4 (t=10) and 11 (t=9)
    assert s.dropped == {"no valid-period event after history": 2, "no test-period event after history": 1}
    assert make_splits(corpus, "temporal", 0.8, 0.9).test.ends.tolist() == [3, 4]


def test_temporal_errors() -> None:
    with pytest.raises(DataError, match="needs timestamps"):
        temporal(make_corpus([[1, 2, 3]]))
    timed = make_corpus([[1, 2, 3]], [[1, 2, 3]])
    with pytest.raises(DataError, match="0 < temporal_valid < temporal_test < 1"):
        temporal(timed, 0.9, 0.8)
    with pytest.raises(DataError, match="unknown split 'random'"):
        make_splits(timed, "random")


# ---------------------------------------------------------------- batches by hand


def test_collate_left_pads_and_keeps_the_newest() -> None:
    corpus = make_corpus([[5, 6, 7, 8], [9]])
    users, starts, ends = np.array([0, 1]), np.array([1, 0]), np.array([4, 1])
    assert collate(corpus, users, starts, ends, 4).tolist() == [[0, 6, 7, 8], [0, 0, 0, 9]]
    assert collate(corpus, users, starts, ends, 2).tolist() == [[7, 8], [0, 9]]


def test_next_item_batch_by_hand() -> None:
    s = leave_one_out(make_corpus([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]))  # user 1 has 1 training event: no row
    (b,) = list(next_item_batches(s, 3, 8, np.random.default_rng(0)))
    assert b.items.tolist() == [[2, 3, 4]] and b.targets.tolist() == [[3, 4, 5]] and b.users.tolist() == [0]
    assert b.mask.tolist() == [[True, True, True]]
    (b,) = list(next_item_batches(s, 8, 8, np.random.default_rng(0)))  # columns padded in every row are cut
    assert b.items.tolist() == [[1, 2, 3, 4]] and b.targets.tolist() == [[2, 3, 4, 5]]
    s = leave_one_out(make_corpus([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12]]))
    (b,) = list(next_item_batches(s, 8, 8, np.random.default_rng(0)))
    got = sorted(zip(b.items.tolist(), b.targets.tolist(), b.mask.tolist(), strict=True))
    assert got == [([0, 0, 8, 9], [0, 0, 9, 10], [False, False, True, True]),
                   ([1, 2, 3, 4], [2, 3, 4, 5], [True] * 4)]
    assert b.items.dtype == b.targets.dtype == b.users.dtype == torch.int64 and b.mask.dtype == torch.bool


def test_last_item_batches_by_hand() -> None:
    s = leave_one_out(make_corpus([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]))
    got = sorted(rows(last_item_batches(s, 3, 2, np.random.default_rng(0))), key=lambda r: r[1][-1])
    assert got == [
        ([0, 0, 1], [0, 0, 2], 0),
        ([0, 1, 2], [0, 0, 3], 0),
        ([1, 2, 3], [0, 0, 4], 0),
        ([2, 3, 4], [0, 0, 5], 0),
    ]
    cut = rows(last_item_batches(s, 3, 8, np.random.default_rng(0), cuts=3))
    assert len(cut) == 3 and all(r in got for r in cut)


def test_eval_batches_by_hand() -> None:
    s = leave_one_out(make_corpus([[1, 2, 3, 4, 5, 6, 7], [8, 9, 10]]))
    (b, idx), *_ = list(eval_batches(s, s.valid, 4, 8))
    assert idx.tolist() == [0, 1]
    assert b.items.tolist() == [[2, 3, 4, 5], [0, 0, 0, 8]]
    assert b.targets.tolist() == [[0, 0, 0, 6], [0, 0, 0, 9]]
    assert b.mask.tolist() == [[True] * 4, [False, False, False, True]]
    (b, _), *_ = list(eval_batches(s, s.test, 4, 8))
    assert b.items.tolist() == [[3, 4, 5, 6], [0, 0, 8, 9]] and b.targets[:, -1].tolist() == [7, 10]
    (b, _), *_ = list(eval_batches(s, s.test, 4, 8, mask_token=11))  # BERT4Rec: newest n-1 events, then [MASK]
    assert b.items.tolist() == [[4, 5, 6, 11], [0, 8, 9, 11]]
    assert b.targets.tolist() == [[0, 0, 0, 7], [0, 0, 0, 10]]
    assert b.mask.tolist() == [[True] * 4, [False, True, True, True]]
    batches = list(eval_batches(s, s.test, 4, 1))
    assert [i.tolist() for _, i in batches] == [[0], [1]]


def test_masked_item_batches_hide_real_positions_only() -> None:
    corpus = synthetic()
    s = leave_one_out(corpus)
    n, mtok = 30, corpus.num_items + 1
    total = hidden = 0
    for b in masked_item_batches(s, n, TrainConfig(batch_size=64, mask_prob=0.3), np.random.default_rng(3), mtok):
        u = b.users.numpy()
        te = s.train_ends[u]
        plain = torch.from_numpy(collate(corpus, u, np.maximum(te - n, 0), te, n))  # the unmasked window
        hide = b.items == mtok
        assert torch.equal(b.mask, plain > 0)  # mask = real event (masked ones included)
        assert torch.equal(b.targets, torch.where(hide, plain, 0))  # predict exactly the hidden items
        assert torch.equal(b.items[~hide], plain[~hide])  # everything else is untouched
        assert not (hide & (plain == 0)).any()  # padding is never masked
        assert (hide.sum(1) >= 1).all()  # every row predicts something
        total += int((plain > 0).sum())
        hidden += int(hide.sum())
    assert 0.25 < hidden / total < 0.35


def test_targets_are_inputs_shifted_by_one() -> None:
    corpus = synthetic()
    s = leave_one_out(corpus)
    for window in ("last", "random"):
        for b in next_item_batches(s, 20, 64, np.random.default_rng(1), window):
            # left padded: once a row is real it stays real up to the last column
            assert torch.equal(b.mask, b.mask.int().cummax(1).values.bool())
            assert b.mask[:, -1].all()
            # position j predicts the event at j+1; the last column predicts the next event after the window
            real = b.mask[:, :-1]
            assert torch.equal(b.targets[:, :-1][real], b.items[:, 1:][real])
            assert ((b.targets > 0) == b.mask).all()
            u = b.users.numpy()
            if window == "last":
                last = corpus.items[corpus.offsets[u] + s.train_ends[u] - 1]
                assert b.targets[:, -1].tolist() == last.tolist()


BUCKET_MAKERS = {
    "next_item": lambda s, b: next_item_batches(s, 60, 16, np.random.default_rng(5), "last", b),
    "last_item": lambda s, b: last_item_batches(s, 60, 16, np.random.default_rng(5), 0, b),
    "masked_item": lambda s, b: masked_item_batches(s, 60, TrainConfig(batch_size=16, bucket=b),
                                                    np.random.default_rng(5), 41),
}


@pytest.mark.parametrize("objective", list(BUCKET_MAKERS))
def test_length_buckets_keep_the_rows_and_cut_the_padding(objective: str) -> None:
    s = leave_one_out(synthetic())  # lengths 1..60: random batches of 16 nearly always hold a long row
    plain, bucketed = (list(BUCKET_MAKERS[objective](s, b)) for b in (0, 8))
    for batches in (plain, bucketed):
        assert all(b.mask[:, 0].any() for b in batches)  # no column is padding in every row
        assert sorted(len(b.users) for b in batches)[1:] == [16] * (len(batches) - 1)  # one short batch at most

    def real_rows(batches: list[Batch]) -> list[tuple]:
        """Each row without its padding (masked_item draws its masks in batch order: only users and lengths)."""
        if objective == "masked_item":
            return sorted((int(u), int(m.sum())) for b in batches for u, m in zip(b.users, b.mask, strict=True))
        return sorted((int(b.users[i]), tuple(b.items[i][b.mask[i]].tolist()), tuple(b.targets[i][b.mask[i]].tolist()))
                      for b in batches for i in range(len(b.users)))

    assert real_rows(bucketed) == real_rows(plain)
    cells = [sum(b.items.numel() for b in batches) for batches in (plain, bucketed)]
    assert cells[1] < 0.75 * cells[0], cells  # like lengths share a batch, so more padding is cut
    # bucket = 0: the same batches again for the same seed
    assert [b.users.tolist() for b in plain] == [b.users.tolist() for b in BUCKET_MAKERS[objective](s, 0)]


# ---------------------------------------------------------------- leakage, by position


def positional(splits: Splits) -> Splits:
    """The same splits over a corpus whose item at global position p is p + 1: batch values become positions.
    Loaders never look at item values (only at lengths and cut points), so batches line up one to one."""
    corpus = splits.corpus
    pos = np.arange(1, corpus.num_interactions + 1, dtype=np.int64)
    return dataclasses.replace(splits, corpus=dataclasses.replace(corpus, items=pos))


BatchMaker = Callable[[Splits, int], Iterator[Batch]]


def makers(n: int, cuts: int) -> dict[str, BatchMaker]:
    return {
        "next_item/last": lambda s, tok: next_item_batches(s, n, 256, np.random.default_rng(7), "last"),
        "next_item/random": lambda s, tok: next_item_batches(s, n, 256, np.random.default_rng(7), "random"),
        "last_item": lambda s, tok: last_item_batches(s, n, 1024, np.random.default_rng(7), cuts),
        "masked_item/last": lambda s, tok: masked_item_batches(s, n, TrainConfig(batch_size=256),
                                                               np.random.default_rng(7), tok),
        "masked_item/random": lambda s, tok: masked_item_batches(
            s, n, TrainConfig(batch_size=256, window="random"), np.random.default_rng(7), tok
        ),
    }


def leaks(splits: Splits, make: BatchMaker) -> int:
    """Number of batch entries (inputs or targets) outside the row user's training prefix, found by position;
    asserts on the way that the positional batches are the real batches."""
    corpus = splits.corpus
    off, te = corpus.offsets, splits.train_ends
    mtok, ptok = corpus.num_items + 1, corpus.num_interactions + 1
    forbidden = np.full((corpus.num_users, 2), -1, dtype=np.int64)  # global positions of valid/test targets
    forbidden[splits.valid.users, 0] = off[splits.valid.users] + splits.valid.ends
    forbidden[splits.test.users, 1] = off[splits.test.users] + splits.test.ends
    bad = 0
    n_batches = 0
    for real, pb in zip(make(splits, mtok), make(positional(splits), ptok), strict=True):
        n_batches += 1
        assert torch.equal(real.users, pb.users) and torch.equal(real.mask, pb.mask)
        u = pb.users.numpy()
        for got, pos in ((real.items, pb.items), (real.targets, pb.targets)):
            p = pos.numpy()
            is_event = (p > 0) & (p != ptok)
            assert ((p == ptok) == (got.numpy() == mtok)).all()
            assert (got.numpy()[is_event] == corpus.items[p[is_event] - 1]).all()  # values agree with positions
            g = p - 1  # global position of each entry
            inside = (g >= off[u][:, None]) & (g < (off[u] + te[u])[:, None])
            hits_target = (g[..., None] == forbidden[u][:, None, :]).any(-1)
            bad += int((is_event & ~inside).sum()) + int((is_event & hits_target).sum())
    assert n_batches > 0
    return bad


@pytest.mark.parametrize("kind", ["loo", "temporal"])
def test_no_leakage_synthetic(kind: str) -> None:
    splits = make_splits(synthetic(), kind)
    assert len(splits.valid) > 0 and len(splits.test) > 0
    for name, make in makers(n=25, cuts=0).items():
        assert leaks(splits, make) == 0, name


def test_leakage_check_can_fail() -> None:
    # the same check must catch a split that trains on everything (valid and test targets included)
    splits = leave_one_out(synthetic())
    leaky = dataclasses.replace(splits, train_ends=splits.corpus.lengths.astype(np.int64))
    for name, make in makers(n=25, cuts=0).items():
        assert leaks(leaky, make) > 0, name


REAL_DATA_MAKERS = ("next_item/last", "last_item", "masked_item/last")


@needs_data
def test_no_leakage_ml1m() -> None:
    splits = leave_one_out(load_corpus("ml-1m"))
    assert len(splits.test) == 6040
    for name in REAL_DATA_MAKERS:  # one per objective; the window variants are covered on synthetic data
        assert leaks(splits, makers(n=200, cuts=2)[name]) == 0, name


@needs_data
def test_no_leakage_ml100k_temporal() -> None:
    splits = temporal(load_corpus("ml-100k"))
    assert len(splits.valid) > 0 and len(splits.test) > 0
    for name in REAL_DATA_MAKERS:
        assert leaks(splits, makers(n=200, cuts=2)[name]) == 0, name


def test_eval_rows_see_only_the_past_and_target_the_right_position() -> None:
    for kind in ("loo", "temporal"):
        splits = make_splits(synthetic(), kind)
        pos = positional(splits)
        off = splits.corpus.offsets
        for rows_ in (pos.valid, pos.test):
            for tok in (0, pos.corpus.num_interactions + 1):
                for b, idx in eval_batches(pos, rows_, 10, 64, mask_token=tok):
                    u, e = rows_.users[idx], rows_.ends[idx]
                    assert b.targets[:, -1].tolist() == (off[u] + e + 1).tolist()  # the target's own position
                    assert (b.targets[:, :-1] == 0).all()
                    hist = b.items[:, :-1] if tok else b.items
                    g = hist.numpy() - 1
                    real = hist.numpy() > 0
                    # the newest history event sits right before the target; all are the user's earlier events
                    assert (hist[:, -1].numpy() - 1 == off[u] + e - 1).all()
                    assert ((g >= off[u][:, None]) & (g < (off[u] + e)[:, None]) | ~real).all()
                    if tok:
                        assert (b.items[:, -1] == tok).all()


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", list(makers(20, 2)))
def test_same_seed_same_batches(name: str) -> None:
    splits = leave_one_out(synthetic())
    make = makers(20, 2)[name]
    first, second = rows(make(splits, 99)), rows(make(splits, 99))
    assert first == second and len(first) > 0
    other = {
        "next_item/last": lambda: next_item_batches(splits, 20, 256, np.random.default_rng(8)),
        "next_item/random": lambda: next_item_batches(splits, 20, 256, np.random.default_rng(8), "random"),
        "last_item": lambda: last_item_batches(splits, 20, 1024, np.random.default_rng(8), 2),
        "masked_item/last": lambda: masked_item_batches(splits, 20, TrainConfig(batch_size=256),
                                                        np.random.default_rng(8), 99),
        "masked_item/random": lambda: masked_item_batches(splits, 20, TrainConfig(batch_size=256, window="random"),
                                                          np.random.default_rng(8), 99),
    }[name]
    assert rows(other()) != first  # and the seed matters
