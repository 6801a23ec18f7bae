"""Streaming inference and the HTTP service (app.py and api.py need the `serve` extra: fastapi, uvicorn, orjson)."""

from longrec.serve.recommender import Recommender
from longrec.serve.sqlite_store import SQLiteStore
from longrec.serve.store import StateStore, StoreError, UserRecord, VersionConflict
from longrec.serve.store_url import open_store
from longrec.serve.streamers import StreamMode
from longrec.serve.types import Applied, Event, Scored, ServeError, StreamingUnsupported, UnknownItem, UnknownUser

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
    "VersionConflict",
    "open_store",
    "StreamMode",
]
