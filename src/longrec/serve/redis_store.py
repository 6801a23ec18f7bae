"""StateStore in Redis (the optional `redis` extra): one hash per user, a set and a list of applied event ids per user.

A batch reads directly and buffers its writes; they commit in one Lua script, which Redis runs atomically: it
compares every written user's stored version with the version the batch read and, only if all match, writes the
records (version + 1) and logs the new event ids (set: membership; list: the order applied). A stale batch writes
nothing and raises VersionConflict, so several workers (processes or machines) can share one Redis without a lock.
Durability after a crash of Redis itself is Redis's configuration (appendonly/appendfsync); a crash of the
service loses nothing that was acknowledged, as every acknowledged batch was committed by its script first.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from longrec.errors import ConfigError
from longrec.serve.record_codec import decode_record, encode_record
from longrec.serve.store import EventKey, StoreBatch, StoreError, UserRecord, VersionConflict

try:
    import redis
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ConfigError(f"a redis:// state store needs the redis extra: pip install 'longrec[redis]' ({e})") from None

FORMAT = "2"  # record_codec's format; stores written before it (safetensors blobs, no versions) are refused
# KEYS: users set, n user hashes, then (applied set, applied list) per keyed user.
# ARGV: n, m, n x (user, version, state, seen, events), then per keyed user: count, event ids.
COMMIT = """
local n, m = tonumber(ARGV[1]), tonumber(ARGV[2])
local stale = {}
for i = 1, n do
  local a = 3 + (i - 1) * 5
  if (redis.call('HGET', KEYS[1 + i], 'version') or '0') ~= ARGV[a + 1] then stale[#stale + 1] = ARGV[a] end
end
if #stale > 0 then return stale end
for i = 1, n do
  local a = 3 + (i - 1) * 5
  redis.call('HSET', KEYS[1 + i], 'state', ARGV[a + 2], 'seen', ARGV[a + 3], 'events', ARGV[a + 4],
             'version', tostring(tonumber(ARGV[a + 1]) + 1))
  redis.call('SADD', KEYS[1], ARGV[a])
end
local at = 3 + n * 5
for j = 1, m do
  local c = tonumber(ARGV[at])
  for k = 1, c do
    if redis.call('SADD', KEYS[n + 2 * j], ARGV[at + k]) == 1 then
      redis.call('RPUSH', KEYS[n + 2 * j + 1], ARGV[at + k])
    end
  end
  at = at + c + 1
end
return stale
"""

# our URL query parameters and their defaults; redis-py gets the rest. lock_ttl (the old write lock's TTL) is
# still accepted so that existing URLs keep working, and unused: writes are compare-and-set, there is no lock.
OURS = {"prefix": "longrec", "lock_ttl": "10"}


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """(the URL for redis-py, our parameters: `prefix` of every key, the unused `lock_ttl`)."""
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
    except redis.RedisError as e:
        raise StoreError(f"state store '{url}': Redis failed ({type(e).__name__}: {e})") from None


class _RedisBatch:
    """Reads see the store plus this batch's own buffered writes; writes commit at the end of the batch."""

    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.records: dict[str, UserRecord] = {}
        self.blobs: dict[str, tuple[bytes, bytes]] = {}
        self.keys: list[EventKey] = []

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        out = self.store.get([u for u in users if u not in self.records])
        return {**out, **{u: self.records[u].written() for u in users if u in self.records}}

    def put(self, records: Mapping[str, UserRecord], blobs: Sequence[tuple[bytes, bytes]] | None = None) -> None:
        given: Sequence[tuple[bytes, bytes] | None] = blobs or [None] * len(records)
        for (u, r), blob in zip(records.items(), given, strict=True):
            if u in self.records:  # written twice in one batch: compare against what this batch read first
                r = UserRecord(r.state, r.seen, r.events, self.records[u].version)
            self.records[u] = r
            self.blobs[u] = blob or encode_record(r)[:2]

    def applied(self, keys: Sequence[EventKey]) -> set[EventKey]:
        keys = list(dict.fromkeys(keys))
        pipe = self.store.r.pipeline(transaction=False)
        for user, event in keys:
            pipe.sismember(self.store.key("applied", user), event)
        found = {k for k, hit in zip(keys, pipe.execute(), strict=True) if hit}
        return found | (set(keys) & set(self.keys))

    def mark_applied(self, keys: Sequence[EventKey]) -> None:
        self.keys.extend(keys)

    def commit(self) -> None:
        by_user: dict[str, list[str]] = {}
        for user, event in self.keys:
            by_user.setdefault(user, []).append(event)
        k = self.store.key
        argv: list[Any] = [len(self.records), len(by_user)]
        keys = [k("users"), *(k("user", u) for u in self.records)]
        for u, r in self.records.items():
            argv += [u, r.version, *self.blobs[u], r.events]
        for u, events in by_user.items():
            keys += [k("applied", u), k("log", u)]
            argv += [len(events), *events]
        stale = self.store.commit_script(keys=keys, args=argv)
        if stale:
            raise VersionConflict({s.decode() if isinstance(s, bytes) else str(s) for s in stale})


class RedisStore:
    """StateStore over `redis://[:password@]host:port/db[?prefix=NAME]`; keys live under `NAME:`."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        address, ours = split_url(url)
        self.prefix = ours["prefix"]
        self.timeout_s = timeout_s
        try:
            self.r = redis.Redis.from_url(address, socket_timeout=timeout_s, socket_connect_timeout=5.0)
            self.r.ping()
        except (redis.RedisError, ValueError) as e:
            raise StoreError(f"state store '{url}': cannot use this Redis server ({e})") from None
        self.commit_script = self.r.register_script(COMMIT)

    def key(self, kind: str, user: str = "") -> str:
        return f"{self.prefix}:{kind}:{user}" if user else f"{self.prefix}:{kind}"

    def bind(self, fingerprint: str) -> None:
        with _unavailable(self.url):
            self.r.set(self.key("model"), fingerprint, nx=True)
            raw, fmt = self.r.mget([self.key("model"), self.key("format")])
        held = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        if held != fingerprint:
            raise StoreError(
                f"{self.url}: this store holds the states of another model (fingerprint {held[:12]}, this model "
                f"{fingerprint[:12]}); use another Redis database or ?prefix="
            )
        with _unavailable(self.url):
            held_fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            old = held_fmt is None and bool(self.r.scard(self.key("users"))) or held_fmt not in (None, FORMAT)
            if fmt is None and not old:
                self.r.set(self.key("format"), FORMAT)
        if old:
            raise StoreError(f"{self.url}: a state store of an older longrec (record format 1, no versions); "
                             "use another Redis database or ?prefix=")

    def get(self, users: Sequence[str]) -> dict[str, UserRecord]:
        users = list(dict.fromkeys(users))
        pipe = self.r.pipeline(transaction=False)
        for u in users:
            pipe.hmget(self.key("user", u), ["state", "seen", "events", "version"])
        with _unavailable(self.url):
            rows = pipe.execute()
        out: dict[str, UserRecord] = {}
        for u, (state, seen, events, version) in zip(users, rows, strict=True):
            if state is not None:
                if seen is None or events is None or version is None:
                    raise StoreError(f"state store: the record of user '{u}' is incomplete (or of format 1)")
                out[u] = decode_record(u, state, seen, events, version)
        return out

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        with _unavailable(self.url):
            b = _RedisBatch(self)
            yield b
            b.commit()

    def count(self) -> int:
        with _unavailable(self.url):
            return int(self.r.scard(self.key("users")))  # type: ignore[arg-type]

    def applied_log(self, user: str) -> list[str]:
        with _unavailable(self.url):
            return [e.decode() for e in self.r.lrange(self.key("log", user), 0, -1)]  # type: ignore[union-attr]

    def close(self) -> None:
        self.r.close()
