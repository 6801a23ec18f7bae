"""Micro-batching and the fast HTTP path against their plain references: concurrent requests batched into one
group commit leave the same states, counts and top-k as observing the events one by one; the orjson fast path
accepts only what the FastAPI model accepts, and reads it the same way."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from longrec.serve import Applied, Event, Recommender, ServeError, StoreError
from longrec.serve.batcher import Batcher
from test_serve import assert_same, runs  # noqa: F401  (runs: the module's trained-run fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _requests(rec: Recommender, seed: int) -> list[list[Event]]:
    """Interleaved users (a corpus user among them), repeated event ids within and across requests, id-less
    events, requests of 1 to 4 events."""
    rng = random.Random(seed)
    users = ["a", "b", "c", "7"]
    out = []
    for _ in range(40):
        out.append([Event(rng.choice(users), rng.choice(rec.item_ids[1:]),
                          None if rng.random() < 0.2 else f"e{rng.randrange(30)}") for _j in range(rng.randint(1, 4))])
    return out


def _states(rec: Recommender, users: list[str]) -> dict[str, Any]:
    got = rec.store.get(users)
    return {u: (got[u].events, got[u].seen.tolist(), got[u].state) for u in users}


@pytest.mark.parametrize("preset", ["lrurec", "sasrec"])  # a stepped state and a re-encoded window
def test_batched_requests_equal_events_observed_one_by_one(
    preset: str, runs: Callable[[str], Path], tmp_path: Path  # noqa: F811
) -> None:
    seq = Recommender.load(runs(preset), store=tmp_path / "seq.db")
    requests = _requests(seq, seed=3)
    want = [Applied(sum(seq.observe(e.user, e.item, e.event_id) for e in evs), 0) for evs in requests]
    want = [Applied(w.applied, len(evs) - w.applied) for w, evs in zip(want, requests, strict=True)]

    rec = Recommender.load(runs(preset), store=tmp_path / "batched.db")
    batcher = Batcher(rec, max_batch=16)

    async def burst() -> list[Applied]:
        return await asyncio.gather(*(batcher.submit(evs) for evs in requests))  # queued in this order

    assert asyncio.run(burst()) == want
    assert 1 < batcher.batches < len(requests)  # batched, and max_batch split the burst
    users = ["a", "b", "c", "7"]
    for u, (events, seen, state) in _states(rec, users).items():
        w_events, w_seen, w_state = _states(seq, users)[u]
        assert (events, seen) == (w_events, w_seen), u
        for k, v in state.items():
            torch.testing.assert_close(v, w_state[k], rtol=1e-4, atol=1e-5)
        assert_same(rec.recommend(u, k=5), seq.recommend(u, k=5))
    assert rec.store.applied_log("a") == seq.store.applied_log("a")  # applied in the same order


def test_a_bad_request_fails_alone_and_a_store_failure_fails_its_batch(
    runs: Callable[[str], Path], tmp_path: Path  # noqa: F811
) -> None:
    rec = Recommender.load(runs("gru4rec"), store=tmp_path / "s.db")
    batcher = Batcher(rec)
    item = rec.item_ids[3]

    async def burst(*reqs: list[Event]) -> list[Any]:
        return await asyncio.gather(*(batcher.submit(r) for r in reqs), return_exceptions=True)

    ok, bad, ok2 = asyncio.run(burst([Event("u", item, "1")], [Event("u", "nope", "2")], [Event("v", item, "1")]))
    assert ok == ok2 == Applied(1, 0) and isinstance(bad, ServeError) and "nope" in str(bad)
    assert {u: r.events for u, r in rec.store.get(["u", "v"]).items()} == {"u": 1, "v": 1}

    def down() -> None:
        raise StoreError("state store: down")

    rec.store.batch = down  # type: ignore[method-assign,assignment]
    first, second = asyncio.run(burst([Event("u", item, "3")], [Event("w", item, "3")]))
    assert isinstance(first, StoreError) and isinstance(second, StoreError)
    del rec.store.batch
    assert rec.store.get(["u"])["u"].events == 1 and rec.store.get(["w"]) == {}  # nothing acknowledged, nothing in
    rec.close()


BODIES: list[tuple[Any, bool]] = [  # (body, plainly valid)
    ({"events": [{"user": "u", "item": "3"}]}, True),
    ({"events": [{"user": 5, "item": 3, "event_id": 9, "ts": 1}], "extra": 1}, True),
    ({"events": [{"user": "u", "item": "3", "event_id": None, "ts": 2.5, "other": []}]}, True),
    ({"events": []}, False),
    ({"events": [{"user": "", "item": "3"}]}, False),
    ({"events": [{"user": "x" * 257, "item": "3"}]}, False),
    ({"events": [{"user": True, "item": "3"}]}, False),
    ({"events": [{"user": 1.5, "item": "3"}]}, False),
    ({"events": [{"user": "u"}]}, False),
    ({"events": [{"user": "u", "item": "3", "ts": "5"}]}, False),  # pydantic would coerce: left to it
    ({"events": [{"user": "u", "item": "3", "event_id": ""}]}, False),
    ({"events": "x"}, False),
    ([{"user": "u", "item": "3"}], False),
]


@pytest.mark.parametrize(("body", "plain"), BODIES)
def test_fast_path_parses_only_what_the_fastapi_model_accepts(body: Any, plain: bool) -> None:
    pytest.importorskip("orjson")
    from pydantic import ValidationError

    from longrec.serve.api import parse_events
    from longrec.serve.app import EventsIn

    got = parse_events(body)
    assert (got is not None) == plain  # not plain: passed on to FastAPI, which refuses it or coerces (ts "5")
    if got is not None:  # the same events as the FastAPI model reads
        model = EventsIn.model_validate(body)
        assert got == [Event(e.user, e.item, e.event_id, e.ts) for e in model.events]
    elif body != {"events": [{"user": "u", "item": "3", "ts": "5"}]}:
        with pytest.raises(ValidationError):
            EventsIn.model_validate(body)


def test_fast_path_query_parsing() -> None:
    pytest.importorskip("orjson")
    from longrec.serve.api import parse_query

    assert parse_query(b"") == (10, True)
    assert parse_query(b"k=3&exclude_seen=false") == (3, False)
    assert parse_query(b"exclude_seen=On&k=1000") == (1000, True)
    for q in (b"k=0", b"k=1001", b"k=abc", b"k=-1", b"k=%D9%A1", b"exclude_seen=maybe", b"other=1"):
        assert parse_query(q) is None, q  # left to FastAPI, which answers 422 (or ignores `other`)


def test_a_batch_waits_batch_wait_ms_for_more_requests(runs: Callable[[str], Path], tmp_path: Path) -> None:  # noqa: F811
    rec = Recommender.load(runs("gru4rec"), store=tmp_path / "s.db")
    item = rec.item_ids[2]

    async def staggered(batcher: Batcher) -> list[Applied]:
        async def late(i: int) -> Applied:
            await asyncio.sleep(0.01 * i)  # arrive 0, 10, 20 ms after the first
            return await batcher.submit([Event(f"u{i}", item, "1")])

        return await asyncio.gather(*(late(i) for i in range(3)))

    waiting, eager = Batcher(rec, wait_ms=200.0), Batcher(rec, wait_ms=0.0)
    assert asyncio.run(staggered(waiting)) == [Applied(1, 0)] * 3 and waiting.batches == 1  # one commit for all
    assert asyncio.run(staggered(eager)) == [Applied(0, 1)] * 3 and eager.batches == 3  # no wait: one each
    rec.close()


def test_the_state_cache_evicts_the_least_recently_used_within_its_bytes() -> None:
    from longrec.serve.states import StateCache, record_bytes
    from longrec.serve.store import UserRecord

    def rec(n: int) -> UserRecord:
        return UserRecord({"h": torch.full((64,), float(n))}, torch.arange(3), n, n)

    size = record_bytes(rec(0))
    cache = StateCache(3 * size)
    cache.put({"a": rec(1), "b": rec(2), "c": rec(3)})
    assert cache.get(["a"])["a"].events == 1  # a is now the most recently used
    cache.put({"d": rec(4)})
    assert set(cache.get(["a", "b", "c", "d"])) == {"a", "c", "d"} and cache.bytes == 3 * size  # b evicted
    cache.put({"a": rec(5)})  # replaced, not counted twice
    assert cache.get(["a"])["a"].events == 5 and cache.bytes == 3 * size and len(cache) == 3
    cache.drop(["a", "zz"])
    assert len(cache) == 2 and cache.bytes == 2 * size
    off = StateCache(0)
    off.put({"a": rec(1)})
    assert off.get(["a"]) == {} and len(off) == 0


def test_serve_option_defaults_agree_with_the_code() -> None:
    from dataclasses import fields

    from longrec.cli_parser import build_parser
    from longrec.serve.process import ServeOptions

    args = build_parser().parse_args(["serve", "run"])
    for f in fields(ServeOptions):
        if f.name not in ("run_dir", "store"):
            assert getattr(args, f.name) == f.default, f.name
