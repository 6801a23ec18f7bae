"""StateStore in Redis (the optional `redis` extra): one hash per user, one set of applied event ids per user.

Writers are serialised by a lock key (SET NX PX with a random token, so a crashed holder frees it after its TTL).
A batch reads directly and buffers its writes; they commit in one MULTI/EXEC that WATCHes the lock key, so a
batch that outlived its lock (another writer took it) writes nothing and fails instead of losing an update.
Durability after a crash of Redis itself is Redis's configuration (appendonly/appendfsync); a crash of the
service loses nothing that was acknowledged, as every acknowledged batch was committed by EXEC first.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from longrec.errors import ConfigError
from longrec.serve.record_codec import decode_record, encode_record
from longrec.serve.store import EventKey, StoreBatch, StoreError, UserRecord

try:
    import redis
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ConfigError(f"a redis:// state store needs the redis extra: pip install 'longrec[redis]' ({e})") from None

RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


OURS = {"prefix": "longrec", "lock_ttl": "10"}  # our URL query parameters and their defaults; redis-py gets the rest


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """(the URL for redis-py, our parameters: `prefix` of every key, `lock_ttl` seconds of the write lock)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {**OURS, **{k: v for k, v in query if k in OURS}}
    rest = urlencode([(k, v) for k, v in query if k not in OURS])
    return urlunsplit(parts._replace(query=rest)), ours


@contextmanager
def _unavailable(url: str) -> Iterator[None]:
    """Redis client errors (connection lost, timeouts, OOM) as StoreError: the service answers 503, not 500."""
    try:
        yield
    except redis.WatchError:
        raise StoreError(f"{url}: the write lock expired during a batch; nothing was written") from None
    except redis.RedisError as e:
        raise StoreError(f"state store '{url}': Redis failed ({type(e).__name__}: {e})") from None


class _RedisBatch:
    """Reads see the store plus this batch's own buffered writes; writes commit at the end of the batch."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.records: dict[str, UserRecord] = {}
        self.keys: list[EventKey] = []

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        out = self.store.get([u for u in users if u not in self.records])
        return {**out, **{u: self.records[u] for u in users if u in self.records}}

    def put(self, records: Mapping[str, UserRecord]) -> None:
        self.records.update(records)

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]:
        keys = list(dict.fromkeys(keys))
        pipe = self.store.r.pipeline(transaction=False)
        for user, event in keys:
            pipe.sismember(self.store.key("applied", user), event)
        found = {k for k, hit in zip(keys, pipe.execute(), strict=True) if hit}
        return found | (set(keys) & set(self.keys))

    def mark_applied(self, keys: Sequence[EventKey]) -> None:
        self.keys.extend(keys)


class RedisStore:
    """StateStore over `redis://[:password@]host:port/db[?prefix=NAME&lock_ttl=SECONDS]`; keys live under `NAME:`.
    lock_ttl (default 10 s) bounds both a batch's duration and how long a crashed writer blocks the others."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        address, ours = split_url(url)
        self.prefix = ours["prefix"]
        try:
            self.lock_ttl_ms = int(1000 * float(ours["lock_ttl"]))
        except ValueError:
            self.lock_ttl_ms = 0
        if self.lock_ttl_ms < 1:
            raise ConfigError(f"state store '{url}': lock_ttl must be a positive number of seconds")
        self.timeout_s = timeout_s
        self._writer = threading.Lock()  # threads queue here rather than polling the Redis lock
        try:
            self.r = redis.Redis.from_url(address, socket_timeout=timeout_s, socket_connect_timeout=5.0)
            self.r.ping()
        except (redis.RedisError, ValueError) as e:
            raise StoreError(f"state store '{url}': cannot use this Redis server ({e})") from None
        self._release = self.r.register_script(RELEASE)

    def key(self, kind: str, user: str = "") -> str:
        return f"{self.prefix}:{kind}:{user}" if user else f"{self.prefix}:{kind}"

    def bind(self, fingerprint: str) -> None:
        with _unavailable(self.url):
            self.r.set(self.key("model"), fingerprint, nx=True)
            raw = self.r.get(self.key("model"))
        held = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        if held != fingerprint:
            raise StoreError(
                f"{self.url}: this store holds the states of another model (fingerprint {held[:12]}, this model "
                f"{fingerprint[:12]}); use another Redis database or ?prefix="
            )

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        users = list(dict.fromkeys(users))
        pipe = self.r.pipeline(transaction=False)
        for u in users:
            pipe.hmget(self.key("user", u), ["state", "seen", "events"])
        with _unavailable(self.url):
            rows = pipe.execute()
        out: dict[str, UserRecord] = {}
        for u, (state, seen, events) in zip(users, rows, strict=True):
            if state is not None:
                if seen is None or events is None:
                    raise StoreError(f"state store: the record of user '{u}' is incomplete")
                out[u] = decode_record(u, state, seen, events)
        return out

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        with self._writer, _unavailable(self.url):
            token = self._acquire()
            try:
                b = _RedisBatch(self)
                yield b
                self._commit(token, b)
            finally:
                self._release(keys=[self.key("lock")], args=[token])

    def _acquire(self) -> str:
        token = os.urandom(16).hex()
        deadline = time.monotonic() + self.timeout_s
        while not self.r.set(self.key("lock"), token, nx=True, px=self.lock_ttl_ms):
            if time.monotonic() > deadline:
                raise StoreError(f"{self.url}: waited {self.timeout_s:.0f} s for the write lock")
            time.sleep(0.002)
        return token

    def _commit(self, token: str, b: _RedisBatch) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(self.key("lock"))
            if pipe.get(self.key("lock")) != token.encode():
                raise StoreError(f"{self.url}: the write lock expired during a batch; nothing was written")
            pipe.multi()
            for u, rec in b.records.items():
                state, seen, events = encode_record(rec)
                pipe.hset(self.key("user", u), mapping={"state": state, "seen": seen, "events": events})
            if b.records:
                pipe.sadd(self.key("users"), *b.records)
            for user, event in b.keys:
                pipe.sadd(self.key("applied", user), event)
            pipe.execute()  # WatchError (via _unavailable) when another writer took the expired lock

    def count(self) -> int:
        with _unavailable(self.url):
            return int(self.r.scard(self.key("users")))  # type: ignore[arg-type]

    def close(self) -> None:
        self.r.close()
