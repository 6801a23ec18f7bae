"""open_store: a StateStore from a URL (sqlite:///path, a file path, redis://host); the scheme picks the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from longrec.errors import ConfigError
from longrec.serve.sqlite_store import SQLiteStore
from longrec.serve.store import StateStore


def sqlite_path(url: str) -> Path:
    """The file of a SQLite store URL, read as SQLAlchemy does: `sqlite:///state.db` (3 slashes) is relative to the
    working directory, `sqlite:////var/state.db` (4) absolute; `sqlite:state.db` and a plain path are paths."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
    elif url.startswith("sqlite://"):
        raise ConfigError(f"state store '{url}': write sqlite:///relative.db or sqlite:////absolute.db (a SQLite "
                          "URL has no host)")
    else:
        path = url.removeprefix("sqlite:")
    if not path or path == ":memory:":
        raise ConfigError(f"state store '{url}': give a file path (states must outlive the process)")
    if not Path(path).parent.is_dir():
        raise ConfigError(f"state store '{url}': directory {Path(path).parent} does not exist (create it first)")
    return Path(path)


def _open_sqlite(url: str) -> StateStore:
    return SQLiteStore(sqlite_path(url))


def _open_redis(url: str) -> StateStore:
    from longrec.serve.redis_store import RedisStore  # the optional `redis` extra

    return RedisStore(url)


STORES: dict[str, Callable[[str], StateStore]] = {"sqlite": _open_sqlite, "redis": _open_redis, "rediss": _open_redis}


def open_store(url: str | Path) -> StateStore:
    """A store from a URL: `sqlite:///relative.db`, `sqlite:////absolute.db`, a plain file path (SQLite), or
    `redis://[:password@]host:port/db[?prefix=NAME]` (Redis, with the `redis` extra; keys under `NAME:`)."""
    text = str(url)
    scheme = text.split(":", 1)[0] if "://" in text or text.startswith("sqlite:") else "sqlite"
    if scheme not in STORES:
        raise ConfigError(
            f"state store '{text}': unsupported scheme '{scheme}' (known: sqlite:///path, a file path, redis://host)"
        )
    return STORES[scheme](text)
