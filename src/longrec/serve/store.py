"""Per-user streaming state: the StateStore contract, its SQLite implementation (WAL, safetensors blobs), open_store."""

from __future__ import annotations

import json
import sqlite3
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from longrec.errors import ConfigError, LongrecError

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


SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, state BLOB NOT NULL, seen BLOB NOT NULL,
                                  events INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (user TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user, event_id))
    WITHOUT ROWID;
"""
CHUNK = 400  # bound variables per statement, under SQLite's old limit of 999


def _chunks(xs: list[Any], n: int = CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}  # fmt: skip


def _encode(tensors: Mapping[str, Tensor]) -> bytes:
    """The safetensors format, written here: safetensors.torch.save spends ~0.1-0.4 ms per tensor on small
    tensors (np.prod over a torch.Size), which was most of a streamed event's store cost. Read by st_load."""
    ts = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    if any(v.dtype not in ST_DTYPES for v in ts.values()):
        return st_save({k: v.clone() for k, v in ts.items()})
    header: dict[str, Any] = {}
    data: list[bytes] = []
    offset = 0
    for k in sorted(ts, key=lambda k: -ts[k].element_size()):  # widest first: every tensor stays aligned
        raw = ts[k].reshape(-1).view(torch.uint8).numpy().tobytes()
        header[k] = {
            "dtype": ST_DTYPES[ts[k].dtype],
            "shape": list(ts[k].shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        data.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(head)) + head + b"".join(data)


def _decode(user: str, blob: bytes) -> dict[str, Tensor]:
    try:
        return st_load(blob)
    except (SafetensorError, ValueError) as e:
        raise StoreError(f"state store: the record of user '{user}' is corrupt ({e})") from None


def encode_record(r: UserRecord) -> tuple[bytes, bytes, int]:
    """(state blob, seen blob, events): how every store serialises a record (safetensors, CPU tensors)."""
    return _encode(r.state), _encode({"seen": r.seen}), r.events


def decode_record(user: str, state: bytes, seen: bytes, events: int | bytes | str) -> UserRecord:
    """The inverse of encode_record; a StoreError naming the user when a blob is corrupt."""
    seen_t = _decode(user, seen).get("seen")
    if seen_t is None:
        raise StoreError(f"state store: the record of user '{user}' has no seen items")
    return UserRecord(_decode(user, state), seen_t, int(events))


def _get(conn: sqlite3.Connection, users: Sequence[str]) -> dict[str, UserRecord]:
    out: dict[str, UserRecord] = {}
    for part in _chunks(list(dict.fromkeys(users))):
        sql = f"SELECT user, state, seen, events FROM users WHERE user IN ({', '.join('?' * len(part))})"
        for user, state, seen, events in conn.execute(sql, part):
            out[user] = decode_record(user, state, seen, events)
    return out


class _SQLiteBatch:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        return _get(self.conn, users)

    def put(self, records: Mapping[str, UserRecord]) -> None:
        rows = [(u, *encode_record(r)) for u, r in records.items()]
        self.conn.executemany("INSERT OR REPLACE INTO users (user, state, seen, events) VALUES (?, ?, ?, ?)", rows)

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]:
        found: set[EventKey] = set()
        for part in _chunks(list(dict.fromkeys(keys)), CHUNK // 2):
            values = ", ".join(["(?, ?)"] * len(part))
            sql = f"SELECT user, event_id FROM applied WHERE (user, event_id) IN (VALUES {values})"
            found.update((u, e) for u, e in self.conn.execute(sql, [x for key in part for x in key]))
        return found

    def mark_applied(self, keys: Sequence[EventKey]) -> None:
        self.conn.executemany("INSERT OR IGNORE INTO applied (user, event_id) VALUES (?, ?)", keys)


class SQLiteStore:
    """StateStore in one SQLite file: WAL journal (readers never block the writer), one connection per thread,
    `BEGIN IMMEDIATE` per batch so concurrent writers (threads or processes) queue instead of losing updates.
    synchronous=NORMAL: a committed batch survives a crash of the service, though not always a power cut."""

    def __init__(self, path: str | Path, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._writer = threading.Lock()  # one writing thread per process; other processes wait in BEGIN IMMEDIATE
        self._conns: list[sqlite3.Connection] = []
        try:
            self._conn().executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: not a usable SQLite state store ({e})") from None

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are opened explicitly by _transaction()
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
            with self._lock:
                self._conns.append(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        # Threads queue on a lock: SQLite's busy handler would poll with sleeps of up to 100 ms instead.
        with self._writer:
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now: read-modify-write cannot interleave
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def bind(self, fingerprint: str) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('model', ?)", (fingerprint,))
            elif row[0] != fingerprint:
                raise StoreError(
                    f"{self.path}: this store holds the states of another model (fingerprint "
                    f"{row[0][:12]}, this model {fingerprint[:12]}); use a new store file"
                )

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        return _get(self._conn(), users)

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        with self._transaction() as conn:
            yield _SQLiteBatch(conn)

    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM users").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()


def _open_sqlite(url: str) -> StateStore:
    path = url.removeprefix("sqlite://").removeprefix("sqlite:")
    if not path or path == ":memory:":
        raise ConfigError(f"state store '{url}': give a file path (states must outlive the process)")
    return SQLiteStore(path)


def _open_redis(url: str) -> StateStore:
    from longrec.serve.redis_store import RedisStore  # the optional `redis` extra

    return RedisStore(url)


STORES: dict[str, Callable[[str], StateStore]] = {"sqlite": _open_sqlite, "redis": _open_redis, "rediss": _open_redis}


def open_store(url: str | Path) -> StateStore:
    """A store from a URL: `sqlite:///abs/path.db`, `sqlite:relative.db`, a plain file path (SQLite), or
    `redis://[:password@]host:port/db[?prefix=NAME]` (Redis, with the `redis` extra; keys under `NAME:`)."""
    text = str(url)
    scheme = text.split(":", 1)[0] if "://" in text or text.startswith("sqlite:") else "sqlite"
    if scheme not in STORES:
        raise ConfigError(
            f"state store '{text}': unsupported scheme '{scheme}' (known: sqlite:///path, a file path, redis://host)"
        )
    return STORES[scheme](text)
