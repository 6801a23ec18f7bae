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


@dataclass(frozen=True)
class UserRecord:
    """One user's serving state. `state` holds unbatched tensors in the Recommender's layout (encoder state and
    the last output "h" [D]); `seen` [S] int64 is the sorted distinct item indices; `events` counts applied events."""

    state: dict[str, Tensor]
    seen: Tensor
    events: int


class StoreBatch(Protocol):
    """Reads and writes inside one write transaction: all of a batch commits, or none of it."""

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]: ...

    def put(self, records: Mapping[str, UserRecord]) -> None: ...

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]: ...

    def mark_applied(self, keys: Sequence[EventKey]) -> None: ...


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

    def close(self) -> None: ...
