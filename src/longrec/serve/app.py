"""HTTP service over a Recommender: events in, top-k out; every refused request is a 4xx JSON with a message.

The FastAPI app here is the specification of the API (routes, validation, errors, OpenAPI); create_app puts the
fast path of api.py in front of it for the two hot endpoints, and POST /v1/events always goes through the
micro-batcher (batcher.py), whichever of the two parses it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

from longrec.errors import ConfigError

try:
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, BeforeValidator, Field
    from starlette.exceptions import HTTPException
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ConfigError(f"the HTTP service needs the serve extra: pip install 'longrec[serve]' ({e})") from None

from longrec.serve.api import FastPath
from longrec.serve.batcher import BATCH_WAIT_MS, MAX_BATCH, Batcher
from longrec.serve.recommender import CACHE_MIB, Recommender
from longrec.serve.store import StoreError
from longrec.serve.streamers import StreamMode
from longrec.serve.types import MAX_EVENTS, MAX_ID, Event, ServeError, ranked, refusal

MAX_ITEMS = 10_000  # per anonymous history; only the newest max_len events are encoded


def _as_str(v: Any) -> Any:
    """Numeric ids (MovieLens-style) are accepted as JSON numbers and become their decimal strings."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


Id = Annotated[str, BeforeValidator(_as_str), Field(min_length=1, max_length=MAX_ID)]


class EventIn(BaseModel):
    user: Id
    item: Id
    event_id: Id | None = None  # idempotency key, unique per user
    ts: float | None = None  # seconds; required by time-channel models, unused by the others


class EventsIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_EVENTS)


class ItemsIn(BaseModel):
    items: list[Id] = Field(min_length=1, max_length=MAX_ITEMS)  # oldest first
    ts: list[float] | None = Field(None, max_length=MAX_ITEMS)  # their times in seconds (time-channel models)
    k: int = Field(10, ge=1, le=1000)
    exclude_seen: bool = True


def _message(err: Any) -> str:
    """A validation error's message, with the JSON decoder's reason when the body is not JSON."""
    msg = str(err.get("msg", "invalid"))
    reason = (err.get("ctx") or {}).get("error")
    return f"{msg} ({reason})" if err.get("type") == "json_invalid" and reason else msg


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "message": message, **extra}, status_code=status)


def create_app(recommender: Recommender, max_batch: int = MAX_BATCH, batch_wait_ms: float = BATCH_WAIT_MS
               ) -> FastPath:
    """The service: api.FastPath for the hot endpoints in front of the FastAPI app, one micro-batcher."""
    batcher = Batcher(recommender, max_batch, batch_wait_ms)
    return FastPath(create_fastapi_app(batcher), batcher)


def _error_handlers(app: FastAPI) -> None:
    """Every refused request is a 4xx JSON {error, message} (a 503 when the store is down), never a traceback."""

    @app.exception_handler(ServeError)
    @app.exception_handler(StoreError)
    def refused(_: Request, e: Exception) -> JSONResponse:
        status, body = refusal(e)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = [{"loc": list(x.get("loc", ())), "msg": _message(x)} for x in e.errors()]
        first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return _error(422, "invalid_request", f"{where}: {first['msg']}", details=errs)

    @app.exception_handler(HTTPException)
    def http_error(_: Request, e: HTTPException) -> JSONResponse:  # unknown routes, wrong methods
        return JSONResponse(
            {"error": "http_error", "message": str(e.detail)}, status_code=e.status_code, headers=e.headers
        )


def create_fastapi_app(batcher: Batcher) -> FastAPI:
    """The FastAPI app; sync handlers run in the server's thread pool (the store and the cache are thread-safe),
    events go through the batcher on the event loop."""
    rec = batcher.rec
    app = FastAPI(title="longrec", summary="streaming sequential recommendation", version="1")

    _error_handlers(app)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "pid": os.getpid(),  # which worker answered (`longrec serve --workers K`)
            "model": rec.name,
            "streaming": rec.mode.value,
            "items": len(rec.item_index),
            "users": rec.store.count(),
            "batches": batcher.batches,
            "batched_requests": batcher.batched_requests,
            "version_conflicts": rec.conflicts,
        }

    @app.post("/v1/events")
    async def post_events(body: EventsIn) -> dict[str, int]:
        res = await batcher.submit([Event(e.user, e.item, e.event_id, e.ts) for e in body.events])
        return {"applied": res.applied, "duplicates": res.duplicates}

    @app.get("/v1/users/{user}/recommendations")
    def user_recommendations(
        user: str, k: Annotated[int, Query(ge=1, le=1000)] = 10, exclude_seen: bool = True
    ) -> dict[str, Any]:
        return {"user": user, "items": ranked(rec.recommend(user, k, exclude_seen))}

    @app.post("/v1/recommendations")
    def item_list_recommendations(body: ItemsIn) -> dict[str, Any]:
        return {"items": ranked(rec.recommend_items(body.items, body.k, body.exclude_seen, body.ts))}

    return app


def prepare(run_dir: str | Path, store_url: str | Path, prefill: bool = False, cache_mib: float = CACHE_MIB
            ) -> Recommender:
    """Load the run and open its state store; prefill: first store the state of every user of the run's corpus
    (whole histories, batched forwards) so no request pays for building one. The corpus is the run's whole
    dataset, train, valid and test events alike: a deployed model knows every event logged before it went
    live (the splits only hide the newest ones to measure the model); users already in the store keep theirs."""
    rec = Recommender.load(run_dir, store=store_url, cache_mib=cache_mib)
    if prefill and rec.mode == StreamMode.NONE:
        rec.close()
        raise ConfigError(f"--prefill: model '{rec.name}' has global (bidirectional) mixers and keeps no user states")
    if prefill:
        t0 = time.perf_counter()
        try:
            built = rec.prefill_from_corpus()
        except BaseException:
            rec.close()
            raise
        print(
            f"longrec serve: prefilled {built} of {len(rec.user_index)} corpus users in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    return rec
