"""open_store: a StateStore from a URL (sqlite:///path, a file path, redis://host); the scheme picks the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from longrec.errors import ConfigError
from longrec.serve.sqlite_store import SQLiteStore
from longrec.serve.store import StateStore


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
