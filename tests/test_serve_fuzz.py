"""Property-based fuzz of the HTTP API: requests generated from its OpenAPI spec (schemathesis, valid and invalid
data) and from id strategies that mix real catalogue ids with hostile strings; no request may get a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from longrec.serve import Recommender
from longrec.train.runinfo import torch_threads
from test_serve import tiny_run

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("httpx")
from fastapi import FastAPI  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402

from longrec.serve.app import create_app  # noqa: E402

EXAMPLES = 60  # per strategy: about 10 s on one loaded core; raise locally to fuzz harder
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FastAPI, Recommender]]:
    root = tmp_path_factory.mktemp("fuzz")
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("LONGREC_CACHE_DIR", str(root / "cache"))  # the server reads the run's data through the cache
        rec = Recommender.load(tiny_run(root, "causal-linrec"), store=root / "state.db")
        yield create_app(rec), rec
        rec.close()


def _no_5xx(r: Any, what: object) -> None:
    assert r.status_code < 500, (what, r.status_code, r.text[:300])
    if r.status_code >= 400:  # every refusal is JSON with a message
        assert r.json()["message"], (what, r.text[:300])


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_openapi_fuzz_never_answers_5xx(served: tuple[FastAPI, Recommender], mode: GenerationMode) -> None:
    app, _ = served
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in ops} >= {
        "GET /healthz",
        "POST /v1/events",
        "GET /v1/users/{user}/recommendations",
        "POST /v1/recommendations",
    }

    @FUZZ
    @given(case=st.one_of([op.as_strategy(generation_mode=mode) for op in ops]))
    def check(case: Any) -> None:
        _no_5xx(case.call(), case)

    check()


# Well-typed requests with hostile ids, so they get past validation into the store and the ranking code (type
# errors are the OpenAPI fuzz's negative mode): control characters, NUL, lone surrogates, paths, long ids.
HOSTILE = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["\ud800", "a\x00b", "../x", "%2F", " ", "0", "-1", "1e9", "NaN", "x" * 300]),
)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_events_and_rankings_with_real_and_hostile_ids_never_answer_5xx(
    served: tuple[FastAPI, Recommender],
) -> None:
    from fastapi.testclient import TestClient

    app, rec = served
    http = TestClient(app, raise_server_exceptions=False)
    items = st.one_of(st.sampled_from(rec.item_ids[1:]), HOSTILE)
    users = st.one_of(st.sampled_from(["7", "u1", "u2"]), HOSTILE)
    event = st.fixed_dictionaries(
        {"user": users, "item": st.one_of(st.sampled_from(rec.item_ids[1:]), items)},
        optional={"event_id": st.one_of(st.integers(0, 20), HOSTILE), "ts": st.floats()},
    )

    def post(url: str, body: object) -> Any:  # ASCII JSON: lone surrogates travel as \ud800 escapes
        return http.post(url, content=json.dumps(body).encode(), headers={"content-type": "application/json"})

    @FUZZ
    @given(
        events=st.lists(event, max_size=4),
        hist=st.lists(items, max_size=30),
        k=st.integers(-2, 1200),
        user=users,
        exclude=st.booleans(),
    )
    def check(events: list[dict[str, Any]], hist: list[str], k: int, user: str, exclude: bool) -> None:
        _no_5xx(post("/v1/events", {"events": events}), events)
        _no_5xx(post("/v1/recommendations", {"items": hist, "k": k, "exclude_seen": exclude}), hist)
        path = quote(user, safe="", errors="surrogatepass")
        query = urlencode({"k": k, "exclude_seen": exclude}, errors="surrogatepass")
        _no_5xx(http.get(f"/v1/users/{path}/recommendations?{query}"), (user, query))

    check()
