"""StateStore in one SQLite file (the default store): WAL journal, safetensors blobs, one connection per thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from longrec.serve.record_codec import decode_record, encode_record
from longrec.serve.store import EventKey, StoreBatch, StoreError, UserRecord

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
