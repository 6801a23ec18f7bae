"""The hot endpoints as a thin ASGI layer in front of the FastAPI app: orjson in and out, no per-request framework.

`POST /v1/events` and `GET /v1/users/{user}/recommendations` are answered here when the request is plainly
valid (JSON content, well-typed ids, k and exclude_seen in their usual spelling); anything else, every other
route and every error of validation is passed on unchanged, body included, to the FastAPI app (app.py), which
stays the specification: the same answers, the same 4xx JSON, the same OpenAPI schema. Refusals found here
(unknown items or users, bad ids, the store down) use the FastAPI app's error shape.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from longrec.serve.batcher import Batcher
from longrec.serve.store import StoreError
from longrec.serve.types import MAX_EVENTS, MAX_ID, Event, ServeError, ranked, refusal

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

USER_PATH = re.compile(r"/v1/users/([^/]+)/recommendations")
TRUE = {"true", "1", "yes", "on", "t", "y"}  # pydantic's spellings of a bool, lower-cased
FALSE = {"false", "0", "no", "off", "f", "n"}


def _id(v: Any) -> str | None:
    """An id as app.Id accepts it (a string of 1-256 characters, or an integer), else None (not plainly valid)."""
    if type(v) is int:
        v = str(v)
    return v if type(v) is str and 0 < len(v) <= MAX_ID else None


def parse_events(body: Any) -> list[Event] | None:
    """The events of a plainly valid POST /v1/events body, or None: let the FastAPI app judge it."""
    events = body.get("events") if type(body) is dict else None
    if type(events) is not list or not 0 < len(events) <= MAX_EVENTS:
        return None
    out = []
    for e in events:
        if type(e) is not dict:
            return None
        user, item, eid, ts = _id(e.get("user")), _id(e.get("item")), e.get("event_id"), e.get("ts")
        if user is None or item is None or type(ts) not in (float, int, type(None)):
            return None
        if eid is not None and (eid := _id(eid)) is None:
            return None
        out.append(Event(user, item, eid, None if ts is None else float(ts)))
    return out


def parse_query(query: bytes) -> tuple[int, bool] | None:
    """(k, exclude_seen) of a plainly valid query string, or None."""
    k, exclude = 10, True
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "k" and value.isascii() and value.isdigit() and 1 <= int(value) <= 1000:
            k = int(value)
        elif name == "exclude_seen" and value.lower() in TRUE | FALSE:
            exclude = value.lower() in TRUE
        else:
            return None
    return k, exclude


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that yields the body already read, then defers to the real one (disconnects)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return again


async def _answer(send: Send, status: int, payload: Any) -> None:
    body = orjson.dumps(payload)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";")[0].strip().lower() == b"application/json"
    return True  # FastAPI reads a body without a content type as JSON too


class FastPath:
    """ASGI app: the hot endpoints here, everything else (and anything doubtful) by `cold`, the FastAPI app."""

    def __init__(self, cold: ASGIApp, batcher: Batcher) -> None:
        self.cold = cold
        self.batcher = batcher
        self.rec = batcher.rec

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == "/v1/events" and _is_json(scope):
                return await self._events(scope, receive, send)
            if method == "GET" and (m := USER_PATH.fullmatch(path)):
                query = parse_query(scope.get("query_string", b""))
                if query is not None:
                    return await self._guard(send, self._recommend, m.group(1), *query)
        await self.cold(scope, receive, send)

    async def _events(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read(receive)
        try:
            events = parse_events(orjson.loads(body))
        except orjson.JSONDecodeError:  # not JSON, or JSON orjson refuses (lone surrogates): FastAPI decides
            events = None
        if events is None:
            return await self.cold(scope, _replay(body, receive), send)
        await self._guard(send, self._observe, events)

    async def _observe(self, events: list[Event]) -> dict[str, int]:
        res = await self.batcher.submit(events)
        return {"applied": res.applied, "duplicates": res.duplicates}

    async def _recommend(self, user: str, k: int, exclude_seen: bool) -> dict[str, Any]:
        return {"user": user, "items": ranked(self.rec.recommend(user, k, exclude_seen))}

    async def _guard(self, send: Send, handler: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """The handler's payload as 200, or its refusal in app.py's error shape."""
        try:
            payload = await handler(*args)
        except (ServeError, StoreError) as e:
            return await _answer(send, *refusal(e))
        await _answer(send, 200, payload)
