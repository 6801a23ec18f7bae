"""Streaming inference and the HTTP service (app.py needs the `serve` extra: fastapi, uvicorn)."""

from longrec.serve.recommender import (
    Applied,
    Event,
    Recommender,
    Scored,
    ServeError,
    StreamingUnsupported,
    UnknownItem,
    UnknownUser,
)
from longrec.serve.sqlite_store import SQLiteStore
from longrec.serve.store import StateStore, StoreError, UserRecord
from longrec.serve.store_url import open_store
from longrec.serve.streamers import StreamMode

__all__ = [
    "Applied",
    "Event",
    "Recommender",
    "Scored",
    "ServeError",
    "StreamingUnsupported",
    "UnknownItem",
    "UnknownUser",
    "SQLiteStore",
    "StateStore",
    "StoreError",
    "UserRecord",
    "open_store",
    "StreamMode",
]
