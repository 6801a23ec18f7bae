"""Corpus: every user's chronological item sequence as CSR arrays, with the raw-id maps."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longrec.errors import DataError

PAD = 0  # item id 0 is padding; real items are 1..num_items


@dataclass(frozen=True)
class Corpus:
    """items[offsets[u]:offsets[u+1]] is user u's history, oldest first.

    items:    [ΣL] int32, remapped item ids in 1..num_items
    offsets:  [U+1] int64
    times:    [ΣL] float64 timestamps, or None when the source has none
    user_ids: [U] raw user ids (str)
    item_ids: [num_items+1] raw item ids (str); item_ids[0] is the PAD placeholder
    """

    items: np.ndarray
    offsets: np.ndarray
    times: np.ndarray | None
    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def from_seqs(cls, seqs: Sequence[Sequence[int] | np.ndarray], num_items: int = 0,
                  times: Sequence[Sequence[float]] | None = None, user_ids: Sequence[str] | None = None) -> Corpus:
        """A corpus holding exactly these item-id sequences (ids 1..num_items, default the largest given; raw item
        id = str(id)), users named "0".."U-1" unless user_ids are given: synthetic corpora for tests and benchmarks."""
        items = np.concatenate([np.asarray(s, dtype=np.int32) for s in seqs])
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
        t = None if times is None else np.concatenate([np.asarray(x, dtype=np.float64) for x in times])
        num_items = num_items or int(items.max())
        users = np.array([str(u) for u in range(len(seqs))] if user_ids is None else list(user_ids))
        return cls(items, offsets, t, users, np.array(["<pad>", *map(str, range(1, num_items + 1))]))

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_items(self) -> int:
        return len(self.item_ids) - 1

    @property
    def num_interactions(self) -> int:
        return len(self.items)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def seq(self, u: int) -> np.ndarray:
        return self.items[self.offsets[u] : self.offsets[u + 1]]

    def stats(self) -> dict[str, float | int]:
        """Users, items, interactions, density, sequence-length statistics and repeat shares: `repeat_any`, events
        whose item the user had before; `repeat_prev`, events whose item is the user's previous one. With
        timestamps, also `time_min` and `time_max` (seconds)."""
        lens = self.lengths
        users, items, n = self.num_users, self.num_items, self.num_interactions
        owner = np.repeat(np.arange(users, dtype=np.int64), lens)
        seq = np.asarray(self.items, dtype=np.int64)
        first_pairs = np.unique(owner * (items + 1) + seq).size
        same_prev = int(((seq[1:] == seq[:-1]) & (owner[1:] == owner[:-1])).sum())
        out: dict[str, float | int] = {
            "users": users,
            "items": items,
            "interactions": n,
            "density": n / max(users * items, 1),
            "len_mean": float(lens.mean()),
            "len_median": float(np.median(lens)),
            "len_min": int(lens.min()),
            "len_max": int(lens.max()),
            "repeat_any": (n - first_pairs) / max(n, 1),
            "repeat_prev": same_prev / max(n, 1),
        }
        if self.times is not None:
            out["time_min"], out["time_max"] = float(np.min(self.times)), float(np.max(self.times))
        return out

    def save(self, path: Path) -> None:
        """Write atomically as .npz (no pickled objects)."""
        arrays = {"items": self.items, "offsets": self.offsets, "user_ids": self.user_ids.astype(str),
                  "item_ids": self.item_ids.astype(str)}
        if self.times is not None:
            arrays["times"] = self.times
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Corpus:
        try:
            with np.load(path, allow_pickle=False) as z:
                times = z["times"] if "times" in z.files else None
                return cls(z["items"], z["offsets"], times, z["user_ids"], z["item_ids"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: not a readable corpus cache ({e})") from None

    def save_dir(self, path: Path) -> None:
        """Write one .npy file per array into the directory `path` (atomically), for `load_dir`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=path.name, suffix=".tmp"))
        try:
            arrays = {"items": self.items, "offsets": self.offsets, "user_ids": self.user_ids.astype(str),
                      "item_ids": self.item_ids.astype(str), "times": self.times}
            for name, a in arrays.items():
                if a is not None:
                    np.save(tmp / f"{name}.npy", np.asarray(a))
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load_dir(cls, path: Path) -> Corpus:
        """The corpus of a `save_dir` directory with items, offsets and times memory-mapped (read-only): pages
        are read on demand and the kernel may drop them again, so the events need not fit in memory."""
        try:
            times = np.load(path / "times.npy", mmap_mode="r") if (path / "times.npy").is_file() else None
            return cls(np.load(path / "items.npy", mmap_mode="r"), np.load(path / "offsets.npy", mmap_mode="r"),
                       times, np.load(path / "user_ids.npy"), np.load(path / "item_ids.npy"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: not a readable corpus directory ({e})") from None
