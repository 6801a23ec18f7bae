"""Hot user records in memory: an LRU cache bounded in bytes, written through after each committed batch.

The store stays the truth: a cached record carries the version it has in the store, and every write is
compare-and-set on that version, so a record another worker changed is detected at commit (VersionConflict),
dropped here and re-read. Reads (recommend) trust the cache only when this process is the store's only writer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from longrec.serve.store import UserRecord

ENTRY_OVERHEAD = 512  # bytes per entry beyond its tensors' data (dict slot, tensor headers): a rough bound


def record_bytes(r: UserRecord) -> int:
    tensors = [*r.state.values(), r.seen]
    return ENTRY_OVERHEAD + sum(t.numel() * t.element_size() for t in tensors)


class StateCache:
    """user -> UserRecord, least recently used evicted first once the entries exceed max_bytes (0: no cache)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[UserRecord, int]] = OrderedDict()
        self._lock = threading.Lock()  # the cold FastAPI endpoints run in a thread pool

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        out: dict[str, UserRecord] = {}
        with self._lock:
            for u in users:
                hit = self._entries.get(u)
                if hit is not None:
                    self._entries.move_to_end(u)
                    out[u] = hit[0]
        return out

    def put(self, records: Mapping[str, UserRecord]) -> None:
        if self.max_bytes <= 0:
            return
        with self._lock:
            for u, r in records.items():
                old = self._entries.pop(u, None)
                if old is not None:
                    self.bytes -= old[1]
                size = record_bytes(r)
                self._entries[u] = (r, size)
                self.bytes += size
            while self.bytes > self.max_bytes and self._entries:
                _, (_, size) = self._entries.popitem(last=False)
                self.bytes -= size

    def drop(self, users: Iterable[str]) -> None:
        with self._lock:
            for u in users:
                old = self._entries.pop(u, None)
                if old is not None:
                    self.bytes -= old[1]
