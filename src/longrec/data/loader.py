"""Batches: left-padded windows (newest event at index N-1), their collation, and the evaluation batches; the
training batches of each objective are built from these in longrec.objectives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from longrec.data.corpus import Corpus
from longrec.data.split import EvalSet, Splits


@dataclass(frozen=True)
class Batch:
    """items [B,N] int64 left-padded (0 = PAD); mask [B,N] bool (True = real event);
    targets [B,N] int64 (0 = no target at that position); users [B] int64 (corpus user index);
    times [B,N] float64 seconds of each event (NaN at pads), or None when the corpus has no timestamps.
    N is the longest row's window (at most the model's max_len): columns that are padding in every row are cut."""

    items: Tensor
    mask: Tensor
    targets: Tensor
    users: Tensor
    times: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        items, mask, targets, users = (t.to(device, non_blocking=True)
                                       for t in (self.items, self.mask, self.targets, self.users))
        return Batch(items, mask, targets, users, None if self.times is None else self.times.to(device))

    def rows(self, idx: Tensor | slice) -> Batch:
        """The batch of the given rows."""
        return Batch(self.items[idx], self.mask[idx], self.targets[idx], self.users[idx],
                     None if self.times is None else self.times[idx])


def collate(corpus: Corpus, users: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int,
            values: np.ndarray | None = None) -> np.ndarray:
    """[B, n]: row r holds values[seq(users[r])[starts[r]:ends[r]]] right-aligned (values: corpus.items, int64,
    zeros (PAD) before; or a float array of the same layout such as corpus.times, NaN before)."""
    src_values = corpus.items if values is None else values
    w = np.minimum(ends - starts, n)
    starts = ends - w
    b = len(users)
    out = np.zeros((b, n), dtype=np.int64) if values is None else np.full((b, n), np.nan)
    row = np.repeat(np.arange(b), w)
    within = np.arange(w.sum()) - np.repeat(np.cumsum(w) - w, w)
    src = (corpus.offsets[users] + starts)[row] + within
    out[row, n - w[row] + within] = src_values[src]
    return out


def collate_times(corpus: Corpus, users: np.ndarray, starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray | None:
    """collate() of the corpus timestamps (float64, NaN at pads), or None when it has none."""
    return None if corpus.times is None else collate(corpus, users, starts, ends, n, corpus.times)


def to_batch(items: np.ndarray, targets: np.ndarray, users: np.ndarray, times: np.ndarray | None = None) -> Batch:
    """The Batch of [B,N] item ids, targets and times (targets at pads dropped), columns padded in every row cut."""
    # a column that is padding in every row changes no output (positions count from the first real event, and
    # every mixer is padding-invariant: DESIGN §3), so it is cut: short windows cost their length, not max_len
    real = items > 0
    used = real.any(0)
    first = int(used.argmax()) if used.any() else 0
    it, tg, mask = (torch.from_numpy(np.ascontiguousarray(a[:, first:])) for a in (items, targets, real))
    tm = None if times is None else torch.from_numpy(np.ascontiguousarray(times[:, first:]))
    return Batch(it, mask, tg * mask, torch.from_numpy(users.astype(np.int64)), tm)


def batch_rows(lengths: np.ndarray, batch_size: int, bucket: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Row indices of each batch over rows already in random order. bucket = 0: consecutive slices (random
    batches). bucket = k > 0: each pool of k batches' rows is sorted by window length before slicing and the
    batches are then shuffled, so rows of like length share a batch and the padding cut by to_batch grows."""
    idx = np.arange(len(lengths))
    if bucket <= 0:
        return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    pool = bucket * batch_size
    out: list[np.ndarray] = []
    for i in range(0, len(idx), pool):
        p = idx[i : i + pool][np.argsort(lengths[i : i + pool], kind="stable")]
        out += [p[j : j + batch_size] for j in range(0, len(p), batch_size)]
    return [out[k] for k in rng.permutation(len(out))]


def window_ends(train_ends: np.ndarray, first: int, window: str, rng: np.random.Generator) -> np.ndarray:
    """Where each row's training window ends (train.window): at the end of the training part (last), or at a
    uniform point in first..end (random: a random window each epoch)."""
    return train_ends if window == "last" else rng.integers(first, train_ends + 1)


def eval_batches(splits: Splits, rows: EvalSet, n: int, batch_size: int,
                 mask_token: int = 0) -> Iterator[tuple[Batch, np.ndarray]]:
    """(Batch, row indices) with the history window as input and the target at the last column.
    With a mask token (BERT4Rec), the input is the newest n-1 events followed by the mask token."""
    corpus = splits.corpus
    for i in range(0, len(rows), batch_size):
        idx = np.arange(i, min(i + batch_size, len(rows)))
        u, e = rows.users[idx], rows.ends[idx]
        items, times = history_windows(corpus, u, e, n, mask_token)
        targets = np.zeros_like(items)
        targets[:, -1] = corpus.items[corpus.offsets[u] + e]
        yield to_batch(items, targets, u, times), idx


def history_windows(corpus: Corpus, users: np.ndarray, ends: np.ndarray, n: int,
                    mask_token: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """The query windows of rows (users[r], history seq[:ends[r]]): items [B,n] int64 and times [B,n] or None.
    With a mask token (BERT4Rec), the newest n-1 events followed by the mask token."""
    if not mask_token:
        s0 = np.maximum(ends - n, 0)
        return collate(corpus, users, s0, ends, n), collate_times(corpus, users, s0, ends, n)
    s0 = np.maximum(ends - n + 1, 0)
    hist = collate(corpus, users, s0, ends, n - 1)
    items = np.concatenate([hist, np.full((len(users), 1), mask_token, dtype=np.int64)], axis=1)
    times = collate_times(corpus, users, s0, ends, n - 1)
    return items, None if times is None else np.concatenate([times, np.full((len(users), 1), np.nan)], axis=1)


def train_item_counts(splits: Splits, block: int = 1 << 22) -> np.ndarray:
    """[I+1] float64 count of each item in the training parts seq[:train_end] (index 0 = PAD, count 0).
    Reads the corpus `block` events at a time, so a memory-mapped corpus is never loaded whole."""
    c = splits.corpus
    counts = np.zeros(c.num_items + 1, dtype=np.int64)
    off, te = c.offsets, splits.train_ends
    u = 0
    while u < c.num_users:
        v = max(int(np.searchsorted(off, off[u] + block, side="right")) - 1, u + 1)  # users u..v-1 in this block
        lens = te[u:v]
        start = off[u:v] - off[u]
        pos = np.repeat(start, lens) + np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        counts += np.bincount(np.asarray(c.items[off[u] : off[v]])[pos], minlength=c.num_items + 1)
        u = v
    return counts.astype(np.float64)


def train_sequences(splits: Splits) -> Iterator[np.ndarray]:
    """The training part seq[:train_end] of every user's sequence (item indices), one user at a time."""
    c = splits.corpus
    for u, end in enumerate(splits.train_ends.tolist()):
        if end:
            yield np.asarray(c.items[c.offsets[u] : c.offsets[u] + end])
