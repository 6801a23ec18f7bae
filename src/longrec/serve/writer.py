"""Group commit: several requests' validated events applied in ONE batched state update and ONE store transaction.

Per batch: the applied-key lookup of the batch's own keys (duplicates, within the batch too, count as such),
the users' records (cache, else store, else corpus history, else empty), one Streamer.extend over the stacked
states (users advance together, each in its own event order), and one compare-and-set write of every new record
with the new event keys. A VersionConflict (another worker wrote some of these users) drops them from the cache
and recomputes the whole batch from the stored records after a short jittered backoff (within a process,
one batch writes at a time, so conflicts come from other processes); nothing is acknowledged before its commit.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from longrec.mixers.base import MixerState
from longrec.serve.record_codec import encode, encode_rows
from longrec.serve.store import EventKey, StoreBatch, StoreError, UserRecord, VersionConflict
from longrec.serve.types import Applied, Event

if TYPE_CHECKING:
    from longrec.serve.recommender import Recommender

MAX_ATTEMPTS = 50  # compare-and-set attempts of one batch before the service answers 503
BACKOFF_S = 0.0005  # the first retry waits up to this, doubling per conflict (jittered, capped at 50 ms)


@dataclass(frozen=True)
class Request:
    """One request's events, already validated, with their item indices."""

    events: Sequence[Event]
    items: Sequence[int]


@torch.inference_mode()
def apply_requests(rec: Recommender, requests: Sequence[Request]) -> list[Applied]:
    """Apply the requests in order, as if one after the other, in one store transaction; per request its counts."""
    with rec.write_lock:  # one batch at a time per process: conflicts come only from other processes
        for attempt in range(MAX_ATTEMPTS):
            try:
                with rec.store.batch() as txn:
                    counts, written = _apply_once(rec, txn, requests)
            except VersionConflict as e:
                rec.cache.drop(e.users)
                rec.conflicts += 1
                time.sleep(random.uniform(0, min(0.05, BACKOFF_S * 2**attempt)))  # writers on one user spread out
                continue
            rec.cache.put({u: r.written() for u, r in written.items()})  # the store's versions, now committed
            return counts
    raise StoreError(f"state store: gave up after {MAX_ATTEMPTS} version conflicts in a row (too many writers "
                     "on the same users)")


def _apply_once(rec: Recommender, txn: StoreBatch, requests: Sequence[Request]
                ) -> tuple[list[Applied], dict[str, UserRecord]]:
    events = [e for r in requests for e in r.events]
    keys: list[EventKey | None] = [(e.user, str(e.event_id)) if e.event_id is not None else None for e in events]
    done = txn.applied([k for k in keys if k is not None])
    new_keys: list[EventKey] = []
    todo: dict[str, list[int]] = {}
    todo_t: dict[str, list[float]] = {}
    counts: list[Applied] = []
    at = 0
    for r in requests:
        applied = 0
        for e, i in zip(r.events, r.items, strict=True):
            key = keys[at]
            at += 1
            if key is not None:
                if key in done:
                    continue
                done.add(key)
                new_keys.append(key)
            todo.setdefault(e.user, []).append(i)
            todo_t.setdefault(e.user, []).append(float(e.ts) if e.ts is not None else math.nan)
            applied += 1
        counts.append(Applied(applied, len(r.events) - applied))
    written = _advance(rec, txn, todo, todo_t) if todo else {}
    txn.mark_applied(new_keys)
    return counts, written


def _advance(rec: Recommender, txn: StoreBatch, todo: dict[str, list[int]], todo_t: dict[str, list[float]]
             ) -> dict[str, UserRecord]:
    """Every user's record after its new events, written (compare-and-set) in txn."""
    users = list(todo)
    records = rec.cache.get(users)
    missing = [u for u in users if u not in records]
    if missing:
        records.update(rec.records(missing, txn.get(missing)))
    times = list(todo_t.values()) if rec.model.uses_time else None
    streamer = rec.require_streaming()
    state = streamer.extend(stack([records[u].state for u in users], rec.device), list(todo.values()), times)
    state = {k: v.cpu() for k, v in state.items()}
    seen = [union(records[u].seen, todo[u]) for u in users]
    blobs = [(s, encode({"seen": x})) for s, x in zip(encode_rows(state), seen, strict=True)]
    out = {
        u: UserRecord({k: v[b].clone() for k, v in state.items()}, seen[b], records[u].events + len(todo[u]),
                      records[u].version)
        for b, u in enumerate(users)
    }
    txn.put(out, blobs)
    return out


def stack(states: list[dict[str, Tensor]], device: torch.device) -> MixerState:
    return {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}


def union(seen: Tensor, items: list[int]) -> Tensor:
    """Sorted distinct item indices."""
    return torch.unique(torch.cat([seen.long(), torch.tensor(items, dtype=torch.long)]))
