"""The Redis state store behind the StateStore contract, against a real redis-server started for the module:
the same contract checks as SQLite, streamed == full forward through a redis:// URL, concurrent writers, and the
loopback kill -9 test. Skipped, with the reason, without redis-py or a redis-server binary."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from longrec.errors import ConfigError
from longrec.serve import (
    Event,
    Recommender,
    SQLiteStore,
    StateStore,
    StoreError,
    UserRecord,
    VersionConflict,
    open_store,
)
from test_serve import assert_same, reference, tiny_run

redis = pytest.importorskip("redis", reason="redis-py not installed (pip install 'longrec[redis]')")
REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not on PATH (apt-get install redis-server)")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port, no persistence; its URL."""
    from longrec.bench.serve_proc import free_port

    assert REDIS_SERVER is not None
    port, work = free_port(), tmp_path_factory.mktemp("redis")
    cmd = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(work),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    try:
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            pytest.skip(f"redis-server did not start on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("redis-run"), "lrurec")


@pytest.fixture(params=["sqlite", "redis"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], StateStore]:
    """prefix -> a store: a SQLite file per prefix, or a Redis key prefix on the module's server."""

    def make(prefix: str) -> StateStore:
        if request.param == "sqlite":
            return SQLiteStore(tmp_path / f"{prefix}.db")
        return open_store(f"{request.getfixturevalue('redis_url')}?prefix={request.node.name}-{prefix}")

    return make


def _record(n: int, version: int = 0) -> UserRecord:
    return UserRecord({"h": torch.full((3,), float(n)), "pos": torch.tensor([n])}, torch.arange(n), n, version)


def test_store_contract(make_store: Callable[[str], StateStore]) -> None:
    store = make_store("a")
    store.bind("model-1")
    store.bind("model-1")  # the same model may reopen it
    with pytest.raises(StoreError, match="another model"):
        make_store("a").bind("model-2")
    assert store.get(["u"]) == {} and store.count() == 0
    with store.batch() as txn:
        assert txn.applied([("u", "e1")]) == set()
        txn.put({"u": _record(2), "v": _record(3)})
        txn.mark_applied([("u", "e1"), ("v", "e1")])
        assert txn.get(["u"])["u"].events == 2  # a batch reads its own writes
    with pytest.raises(RuntimeError, match="boom"), store.batch() as txn:
        txn.put({"u": _record(9, version=1), "w": _record(1)})
        txn.mark_applied([("u", "e2")])
        raise RuntimeError("boom")  # nothing of this batch may land
    got = store.get(["u", "v", "w", "u"])
    assert set(got) == {"u", "v"} and store.count() == 2
    assert got["u"].events == 2 and got["u"].seen.tolist() == [0, 1] and got["v"].state["h"].tolist() == [3.0] * 3
    assert got["u"].version == got["v"].version == 1  # written once
    with store.batch() as txn:
        assert txn.applied([("u", "e1"), ("u", "e2"), ("v", "e1"), ("w", "e1")]) == {("u", "e1"), ("v", "e1")}
    store.close()


def test_store_writes_are_compare_and_set_on_the_version(make_store: Callable[[str], StateStore]) -> None:
    """Two handles on one store (two workers): a write based on a stale read changes nothing and names the user."""
    a, b = make_store("cas"), make_store("cas")
    a.bind("m")
    b.bind("m")
    with a.batch() as txn:
        txn.put({"u": _record(1), "v": _record(1)})
    stale = a.get(["u", "v"])
    with b.batch() as txn:  # the other worker advances u
        txn.put({"u": _record(2, version=1)})
        txn.mark_applied([("u", "b1")])
    with pytest.raises(VersionConflict) as e, a.batch() as txn:
        txn.put({"u": _record(7, stale["u"].version), "v": _record(7, stale["v"].version), "w": _record(7)})
        txn.mark_applied([("u", "a1"), ("w", "a1")])
    assert e.value.users == {"u"}
    got = a.get(["u", "v", "w"])
    assert {u: (r.events, r.version) for u, r in got.items()} == {"u": (2, 2), "v": (1, 1)}
    with a.batch() as txn:
        assert txn.applied([("u", "a1"), ("w", "a1"), ("u", "b1")]) == {("u", "b1")}
        txn.put({"u": _record(3, got["u"].version)})  # re-read: the retry lands
        txn.mark_applied([("u", "a2"), ("u", "a1")])
    assert a.get(["u"])["u"].version == 3
    assert a.applied_log("u") == ["b1", "a2", "a1"]  # the order the store applied them
    a.close()
    b.close()


def test_two_recommenders_on_one_store_retry_on_version_conflicts(
    run: Path, make_store: Callable[[str], StateStore], tmp_path: Path
) -> None:
    """Two workers' Recommenders, each with its own cache: a stale cached state is caught by compare-and-set,
    re-read and recomputed, so the final state is a replay of the events in the order the store applied them."""
    a, b = (Recommender.load(run, store=make_store("two")) for _ in range(2))
    a.sole_writer = b.sole_writer = False  # as `longrec serve --workers 2`: reads go to the store
    items = [a.item_ids[i] for i in (2, 8, 5, 13, 9)]
    assert a.observe("u", items[0], "a1")  # a caches u
    assert b.observe("u", items[1], "b1") and b.observe("u", items[2], "b2")  # a's cache is now stale
    assert a.observe("u", items[3], "a2")  # conflict, retry from the stored record
    assert not a.observe("u", items[1], "b1")  # b's event is seen as applied through a
    assert b.observe("u", items[4], "b3")
    log = a.store.applied_log("u")
    assert log == ["a1", "b1", "b2", "a2", "b3"]
    by_id = dict(zip(["a1", "b1", "b2", "a2", "b3"], items, strict=True))
    replay = Recommender.load(run, store=tmp_path / "replay.db")
    replay.observe_many([Event("u", by_id[e], e) for e in log])
    for r in (a, b):
        assert r.store.get(["u"])["u"].events == 5
        assert_same(r.recommend("u", k=5), replay.recommend("u", k=5))
    assert_same(replay.recommend("u", k=5), reference(replay, [2, 8, 5, 13, 9], 5))
    for r in (a, b, replay):
        r.close()


def test_store_urls(redis_url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported scheme 'postgres'"):
        open_store("postgres://x/y")
    with pytest.raises(StoreError, match="cannot use this Redis server"):
        open_store("redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert isinstance(open_store(f"sqlite:{tmp_path / 'x.db'}"), SQLiteStore)
    assert type(open_store(redis_url)).__name__ == "RedisStore"


def test_recommender_streams_through_redis(run: Path, redis_url: str) -> None:
    url = f"{redis_url}?prefix=stream"
    rec = Recommender.load(run, store=url)
    items = [rec.item_ids[i] for i in (2, 8, 8, 13)]
    assert rec.observe_many([Event("u", i, f"e{n}") for n, i in enumerate(items)]).applied == 4
    assert rec.observe("u", items[0], "e0") is False
    assert_same(rec.recommend("u", k=5), reference(rec, [2, 8, 8, 13], 5))
    rec.close()
    again = Recommender.load(run, store=url)  # the state outlives the process that wrote it
    assert_same(again.recommend("u", k=5), reference(again, [2, 8, 8, 13], 5))
    assert again.store.get(["u"])["u"].seen.tolist() == [2, 8, 13]
    again.close()


def test_concurrent_writers_lose_no_update(run: Path, redis_url: str) -> None:
    recs = [Recommender.load(run, store=f"{redis_url}?prefix=race") for _ in range(2)]  # two "processes"
    item = recs[0].item_ids[3]

    def write(r: Recommender, t: int) -> None:
        for n in range(15):
            r.observe("shared", item, f"t{t}-{n}")
            r.observe("shared", item, f"t{t}-{n}")  # a duplicate: never applied twice

    threads = [threading.Thread(target=write, args=(recs[t % 2], t)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert recs[0].store.get(["shared"])["shared"].events == 60
    for r in recs:
        r.close()


@pytest.mark.slow  # two server start-ups: ~10 s on an idle machine, 20+ s on a loaded one; SQLite's runs by default
def test_loadtest_kill_9_exactly_once_on_redis(run: Path, redis_url: str, tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    from longrec.bench.loadtest import LoadOptions, run_loadtest

    opts = LoadOptions(events=30, crash_events=120, clients=3, users=9, kill_at=0.3, check_users=5)
    report = run_loadtest(run, opts, store=f"{redis_url}?prefix=loadtest", work_dir=tmp_path)
    dur = report["durability"]
    assert dur["unacknowledged"] > 0 and dur["resend_errors"] == [] and dur["users_with_wrong_state"] == 0, report
    assert report["store"]["exactly_once"], report


def test_an_old_redis_url_with_lock_ttl_still_opens(redis_url: str) -> None:
    store = open_store(f"{redis_url}?prefix=oldurl&lock_ttl=2")
    store.bind("m")
    assert store.count() == 0
    store.close()
