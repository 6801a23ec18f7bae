"""`longrec serve --workers 2` on one Redis store: concurrent load on overlapping users through both workers; every
user's final state equals a replay of its events in the order the store applied them, none lost or doubled."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest
import torch

from longrec.bench.loadtest import LoadOptions
from longrec.bench.serve_proc import Http, Server
from longrec.serve import Event, Recommender, Scored, open_store
from test_serve import assert_same, tiny_run
from test_serve_redis import REDIS_SERVER, redis_url  # noqa: F401  (the module's redis-server fixture)

pytest.importorskip("redis", reason="redis-py not installed (pip install 'longrec[redis]')")
pytestmark = [
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not on PATH (apt-get install redis-server)"),
    pytest.mark.slow,  # two worker processes start (torch, the model): ~15-25 s on a loaded 2-core machine
]
USERS = ["s0", "s1", "s2", "s3", "7"]  # every client writes every user; "7" is a corpus user


def _client(url: str, items: list[str], seed: int, sent: list[tuple[str, str, str]], errors: list[str]) -> None:
    rng, http = random.Random(seed), Http(url)  # its own connection: the kernel spreads them over the workers
    mine: list[tuple[str, str, str]] = []
    for n in range(40):
        part = [(rng.choice(USERS), rng.choice(items), f"c{seed}-{n}-{j}") for j in range(rng.randint(1, 3))]
        if mine and rng.random() < 0.2:
            part.append(rng.choice(mine))  # a re-sent event: must come back as a duplicate
        status, text = http.request("POST", "/v1/events", {"events": [dict(zip(("user", "item", "event_id"), e,
                                                                                strict=True)) for e in part]})
        if status != 200:
            errors.append(f"{status}: {text[:200]!r}")
            return
        mine.extend(e for e in part if e not in mine)
    sent.extend(mine)
    http.close()


def test_two_workers_on_redis_apply_every_event_once_in_a_replayable_order(
    tmp_path: Path, redis_url: str  # noqa: F811
) -> None:
    run = tiny_run(tmp_path, "lrurec")
    store = f"{redis_url}?prefix=workers"
    server = Server(run, store, tmp_path / "server.log", LoadOptions(server_args="--workers 2"))
    try:
        pids: set[int] = set()
        deadline = time.monotonic() + 60  # the second worker may still be loading the model
        while len(pids) < 2 and time.monotonic() < deadline:
            pids.add(json.loads(Http(server.url).request("GET", "/healthz")[1])["pid"])  # a new connection each
            time.sleep(0.05)
        assert len(pids) == 2, f"one worker answered every connection: {pids}"
        items = [str(x) for x in json.loads((run / "id_maps.json").read_text())["items"][1:]]
        sent: list[tuple[str, str, str]] = []
        errors: list[str] = []
        threads = [threading.Thread(target=_client, args=(server.url, items, s, sent, errors)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        served = {u: json.loads(Http(server.url).request("GET", f"/v1/users/{u}/recommendations?k=5")[1])
                  for u in USERS}
        health = {}  # per worker: its batches and its compare-and-set retries
        while len(health) < 2:
            h = json.loads(Http(server.url).request("GET", "/healthz")[1])
            health[h["pid"]] = h
        assert all(h["batches"] > 0 for h in health.values()), health  # both workers applied events
        print("version conflicts per worker:", {p: h["version_conflicts"] for p, h in health.items()})
    finally:
        server.stop()
    check = open_store(store)
    replay = Recommender.load(run, store=tmp_path / "replay.db")
    item_of = {(u, e): i for u, i, e in sent}
    for u in USERS:
        log = check.applied_log(u)
        assert sorted(log) == sorted(e for uu, _, e in sent if uu == u), u  # every event once, none lost
        replay.observe_many([Event(u, item_of[u, e], e) for e in log])
        record, want = check.get([u])[u], replay.store.get([u])[u]
        assert record.events == want.events and torch.equal(record.seen, want.seen), u
        for k, v in want.state.items():
            torch.testing.assert_close(record.state[k], v, rtol=1e-4, atol=1e-5)
        assert_same([Scored(g["item"], g["score"]) for g in served[u]["items"]], replay.recommend(u, k=5))
    check.close()
    replay.close()
