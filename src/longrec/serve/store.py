"""The StateStore contract: where per-user streaming states live (implementations: sqlite_store, redis_store)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from longrec.errors import LongrecError

EventKey = tuple[str, str]  # (user, event id): idempotency is per user, as event ids are the client's


class StoreError(LongrecError):
    """The state store is unusable: it belongs to another model, or a stored record is corrupt."""


class VersionConflict(StoreError):
    """A compare-and-set write found records changed since they were read (another worker wrote them); nothing
    of the batch was written. `users` are the changed ones: drop any cached copy, re-read, recompute, retry."""

    def __init__(self, users: set[str]) -> None:
        super().__init__(f"state store: {len(users)} user record(s) changed since they were read")
        self.users = users


@dataclass(frozen=True)
class UserRecord:
    """One user's serving state. `state` holds unbatched tensors in the Recommender's layout (encoder state and
    the last output "h" [D]); `seen` [S] int64 is the sorted distinct item indices; `events` counts applied events.
    `version` is the store's version of the record it was read from (0: not stored); each write bumps it by one,
    and a write is refused (VersionConflict) unless the stored version still equals the one read."""

    state: dict[str, Tensor]
    seen: Tensor
    events: int
    version: int = 0

    def written(self) -> UserRecord:
        """This record as the store holds it after put() wrote it (compare-and-set on `version`)."""
        return UserRecord(self.state, self.seen, self.events, self.version + 1)


class StoreBatch(Protocol):
    """Reads and writes inside one write transaction: all of a batch commits, or none of it."""

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]: ...

    def put(self, records: Mapping[str, UserRecord], blobs: Sequence[tuple[bytes, bytes]] | None = None) -> None:
        """Write records, compare-and-set: each is stored at version r.version + 1 if the stored version is still
        r.version (0: absent). Raises VersionConflict, here or when the batch commits, and writes nothing else.
        `blobs`: the records' (state, seen) already encoded (record_codec), one per record in order."""
        ...

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]: ...

    def mark_applied(self, keys: Sequence[EventKey]) -> None:
        """Log these keys as applied, in this order, after every key applied before (applied_log reads it)."""
        ...


class StateStore(Protocol):
    """Where user states live. Safe to share between threads; `batch()` serialises writers."""

    def bind(self, fingerprint: str) -> None:
        """Claim an empty store for a model, or refuse one that holds another model's states."""
        ...

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        """The stored records of those users that have one (a consistent read, no write lock)."""
        ...

    def batch(self) -> AbstractContextManager[StoreBatch]: ...

    def count(self) -> int: ...

    def applied_log(self, user: str) -> list[str]:
        """The user's applied event ids in the order the store applied them (replays check against it)."""
        ...

    def close(self) -> None: ...
