"""What the serving layer exchanges: events in, counts and scored items out, and the errors it answers with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from longrec.errors import LongrecError

MAX_EVENTS = 10_000  # per request: bounds the work (and the write transaction) one call can cause
MAX_ID = 256  # characters of a user, item or event id


class ServeError(LongrecError):
    """A request the service refuses; `status` is its HTTP code and the message says why."""

    status = 400
    code = "bad_request"


class UnknownItem(ServeError):
    status = 422
    code = "unknown_item"


class UnknownUser(ServeError):
    status = 404
    code = "unknown_user"


class StreamingUnsupported(ServeError):
    status = 409
    code = "streaming_unsupported"


@dataclass(frozen=True)
class Event:
    user: str
    item: str
    event_id: str | None = None  # (user, event_id) is applied at most once; None: always applied
    ts: float | None = None  # seconds; required by time-channel models (model.time=gap), unused otherwise


@dataclass(frozen=True)
class Applied:
    applied: int
    duplicates: int


@dataclass(frozen=True)
class Scored:
    item: str  # raw (external) item id
    score: float


def check_id(kind: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ServeError(f"{kind} id must be a non-empty string, got {value!r}")
    try:
        value.encode("utf-8")  # stores and JSON replies need it; a lone UTF-16 surrogate ("\ud800") is not text
    except UnicodeEncodeError:
        raise ServeError(f"{kind} id {value!r} is not valid Unicode text (it holds a lone surrogate)") from None


def ranked(scored: list[Scored]) -> list[dict[str, Any]]:
    """Scored items as the API returns them, best first."""
    return [{"item": x.item, "score": x.score} for x in scored]


def refusal(e: Exception) -> tuple[int, dict[str, str]]:
    """(HTTP status, JSON body) of a refused request: a ServeError's own status, 503 when the store is down or
    refuses (not the client's fault). Both the FastAPI app and the fast path answer with it."""
    if isinstance(e, ServeError):
        return e.status, {"error": e.code, "message": str(e)}
    return 503, {"error": "store_unavailable", "message": str(e)}
