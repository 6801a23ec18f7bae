"""RawLog -> Corpus: stable chronological order, optional dedup and k-core, id remapping (0 = PAD)."""

from __future__ import annotations

import numpy as np

from longrec.data.corpus import Corpus
from longrec.data.readers import RawLog
from longrec.errors import DataError


def remap_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense ids 0..K-1 in sorted raw-id order (numeric when every id is an integer) and the raw ids as str."""
    keys = raw
    if raw.dtype.kind in "US":
        s = raw.astype(str)
        # integer-like only if int() round-trips: "007" and "7" stay two ids, and int64 cannot overflow
        lens = np.char.str_len(s)
        numeric = np.char.isdigit(s) & ((lens == 1) | ~np.char.startswith(s, "0"))
        if numeric.all() and lens.max() < 19:
            keys = s.astype(np.int64)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return inverse.astype(np.int64), uniq.astype(str)


def kcore_mask(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Rows kept by the iterative k-core: every kept user and item has >= k kept interactions."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        uc = np.bincount(users[keep], minlength=users.max() + 1)
        ic = np.bincount(items[keep], minlength=items.max() + 1)
        new = keep & (uc[users] >= k) & (ic[items] >= k)
        if new.sum() == keep.sum():
            return keep
        keep = new


def build_corpus(log: RawLog, dedup: bool = False, kcore: int = 0, source: str = "log") -> Corpus:
    """Sort each user's events by time (stable: file order breaks ties), filter, remap ids."""
    users, user_raw = remap_ids(log.users)
    items, item_raw = remap_ids(log.items)
    times = log.times
    if times is not None and not np.isfinite(times).all():
        raise DataError(f"{source}: timestamps must be finite numbers")
    order = np.lexsort((times, users)) if times is not None else np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    times = times[order] if times is not None else None
    keep = np.ones(len(users), dtype=bool)
    if dedup:
        _, first = np.unique(users * (items.max() + 1) + items, return_index=True)
        keep[:] = False
        keep[first] = True
    if kcore > 0:
        sub = kcore_mask(users[keep], items[keep], kcore)
        keep[np.flatnonzero(keep)[~sub]] = False
    if not keep.any():
        raise DataError(f"{source}: no interactions left after dedup={dedup}, kcore={kcore}")
    users, items = users[keep], items[keep]
    times = times[keep] if times is not None else None
    # Re-densify after filtering; item ids shift by one so that 0 is PAD.
    uniq_u, users = np.unique(users, return_inverse=True)
    uniq_i, items = np.unique(items, return_inverse=True)
    counts = np.bincount(users, minlength=len(uniq_u))
    offsets = np.zeros(len(uniq_u) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    item_ids = np.concatenate([np.array(["<pad>"]), item_raw[uniq_i]])
    return Corpus(
        items=(items + 1).astype(np.int32),
        offsets=offsets,
        times=times,
        user_ids=user_raw[uniq_u],
        item_ids=item_ids,
    )
