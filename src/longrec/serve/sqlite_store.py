"""StateStore in one SQLite file (the default store): WAL journal, format-2 blobs, one connection per thread.

Writes are compare-and-set on each record's version inside a `BEGIN IMMEDIATE` transaction, so several processes
(`longrec serve --workers K`) may share one file: a worker whose cached record is stale gets a VersionConflict and
retries from the stored one. `applied` keeps every applied (user, event id) in the order applied (its rowid)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from longrec.serve.record_codec import decode_record, encode_record
from longrec.serve.store import EventKey, StoreBatch, StoreError, UserRecord, VersionConflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, state BLOB NOT NULL, seen BLOB NOT NULL,
                                  events INTEGER NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS applied (user TEXT NOT NULL, event_id TEXT NOT NULL, PRIMARY KEY (user, event_id));
"""
CHUNK = 400  # bound variables per statement, under SQLite's old limit of 999
CHECKPOINT_S = 0.5  # how often the checkpointer thread copies the WAL into the database file


def _chunks(xs: list[Any], n: int = CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def _get(conn: sqlite3.Connection, users: Sequence[str]) -> dict[str, UserRecord]:
    out: dict[str, UserRecord] = {}
    for part in _chunks(list(dict.fromkeys(users))):
        sql = f"SELECT user, state, seen, events, version FROM users WHERE user IN ({', '.join('?' * len(part))})"
        for user, state, seen, events, version in conn.execute(sql, part):
            out[user] = decode_record(user, state, seen, events, version)
    return out


def _versions(conn: sqlite3.Connection, users: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in _chunks(users):
        sql = f"SELECT user, version FROM users WHERE user IN ({', '.join('?' * len(part))})"
        out.update(conn.execute(sql, part).fetchall())
    return out


class _SQLiteBatch:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        return _get(self.conn, users)

    def put(self, records: Mapping[str, UserRecord], blobs: Sequence[tuple[bytes, bytes]] | None = None) -> None:
        """Compare-and-set (the write lock is held, so check-then-write is atomic); `blobs`: the records' encoded
        (state, seen), when the caller encoded a batch at once."""
        stored = _versions(self.conn, list(records))
        stale = {u for u, r in records.items() if stored.get(u, 0) != r.version}
        if stale:
            raise VersionConflict(stale)
        rows = ([(u, *encode_record(r), r.version + 1) for u, r in records.items()] if blobs is None else
                [(u, st, seen, r.events, r.version + 1) for (u, r), (st, seen) in zip(records.items(), blobs,
                                                                                        strict=True)])
        self.conn.executemany(
            "INSERT OR REPLACE INTO users (user, state, seen, events, version) VALUES (?, ?, ?, ?, ?)", rows
        )

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]:
        """A keyed lookup of these keys (a join on the primary key; `(user, event_id) IN (VALUES ...)` would
        scan every applied event)."""
        found: set[EventKey] = set()
        for part in _chunks(list(dict.fromkeys(keys)), CHUNK // 2):
            values = ", ".join(["(?, ?)"] * len(part))
            sql = (f"SELECT a.user, a.event_id FROM (VALUES {values}) AS k CROSS JOIN applied AS a "
                   "ON a.user = k.column1 AND a.event_id = k.column2")
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
            conn = self._conn()
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(users)")}
        except sqlite3.DatabaseError as e:
            self.close()
            raise StoreError(f"{self.path}: not a usable SQLite state store ({e})") from None
        if "version" not in columns:
            self.close()
            raise StoreError(f"{self.path}: a state store of an older longrec (record format 1, no versions); serve "
                             "from a new store file (--store NEW.db; --prefill rebuilds the corpus users' states)")
        self._stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoints(self) -> None:
        """WAL checkpoints, and their fsyncs, off the commit path (autocheckpoint is off: a commit only appends
        to the WAL, which a kill -9 does not lose; the 1000-page autocheckpoint made every ~10th batch of 100
        users pay ~50 ms). PASSIVE: never waits for readers or writers."""
        conn = sqlite3.connect(self.path, timeout=self.timeout_s, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(CHECKPOINT_S):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            conn.close()

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
            conn.execute("PRAGMA wal_autocheckpoint=0")  # the checkpointer thread does it
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

    def applied_log(self, user: str) -> list[str]:
        rows = self._conn().execute("SELECT event_id FROM applied WHERE user = ? ORDER BY rowid", (user,))
        return [e for (e,) in rows]

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None and not stop.is_set():
            stop.set()
            self._checkpointer.join(timeout=self.timeout_s)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
