"""Serving: streamed state == a full forward for every causal preset, idempotent events, a persistent SQLite store,
and an HTTP API that answers bad input with a 4xx message, never a 500."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from longrec.config import load_config
from longrec.objectives import build_model
from longrec.serve import (
    Applied,
    Event,
    Recommender,
    Scored,
    StoreError,
    StreamingUnsupported,
    StreamMode,
    UnknownItem,
    UnknownUser,
    UserRecord,
    VersionConflict,
)
from longrec.train.loop import fit
from tests_helpers import synthetic_log

CAUSAL = [
    "sasrec",
    "gru4rec",
    "causal-linrec",
    "causal-linrec-local",
    "lt-sasrec",
    "hydrarec-causal",
    "lrurec",
    "recgrela-causal",
    "ea-sasrec",
    "retention",
    "gla",
    "gated-delta",
]
MAX_LEN = 16  # longer than every corpus history (10) plus the streamed events, unless a test says otherwise


def tiny(log: Path) -> list[str]:
    return [
        f"data.name={log}",
        "model.dim=16",
        f"model.max_len={MAX_LEN}",
        "model.dropout=0.0",
        "train.epochs=1",
        "train.batch_size=64",
        "eval.batch_size=64",
        "train.device=cpu",
        "train.threads=1",
    ]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_run(root: Path, preset: str) -> Path:
    """root/preset: the preset trained for one epoch on a small synthetic log (30 users, 25 items) in root."""
    log = root / "walk.txt"
    if not log.exists():
        synthetic_log(log, users=30, length=10, items=25)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LONGREC_CACHE_DIR", str(root / "cache"))
        fit(load_config(preset, tiny(log)), root / preset)
    return root / preset


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """preset -> a run directory trained for one epoch on a small synthetic log (built once, on first use)."""
    root = tmp_path_factory.mktemp("serve-runs")
    built: dict[str, Path] = {}

    def get(preset: str) -> Path:
        if preset not in built:
            built[preset] = tiny_run(root, preset)
        return built[preset]

    return get


def reference(rec: Recommender, history: list[int], k: int, exclude_seen: bool = True) -> list[Scored]:
    """Top-k from one full forward over the history (item indices), ranked as the evaluator does."""
    items = torch.tensor([history])
    with torch.no_grad():
        h = rec.model(items, items > 0)[:, -1]
        scores = (h @ rec.model.item_table().T)[0]
    scores[0] = float("-inf")
    if exclude_seen:
        scores[history] = float("-inf")
    vals, idx = scores.topk(k)
    return [Scored(rec.item_ids[i], v) for v, i in zip(vals.tolist(), idx.tolist(), strict=True)]


def assert_same(got: list[Scored], want: list[Scored]) -> None:
    assert [s.item for s in got] == [s.item for s in want]
    torch.testing.assert_close(
        torch.tensor([s.score for s in got]), torch.tensor([s.score for s in want]), rtol=1e-4, atol=1e-5
    )


def raw(rec: Recommender, idx: list[int]) -> list[str]:
    return [rec.item_ids[i] for i in idx]


@pytest.mark.parametrize("preset", CAUSAL)
def test_encoder_prefill_then_step_equals_forward(preset: str) -> None:
    torch.manual_seed(0)
    cfg = load_config(preset, ["model.dim=16", "model.max_len=12", "model.dropout=0.0"])
    model = build_model(30, cfg.model, cfg.train).eval()
    items = torch.randint(1, 31, (3, 10))
    items[1, :3] = 0
    items[2, :7] = 0  # rows of 10, 7 and 3 events; row 2 is all padding before the cut
    mask = items > 0
    with torch.no_grad():
        full = model(items, mask)
        h, state = model.prefill(items[:, :7], mask[:, :7])
        torch.testing.assert_close(h, full[:, :7], rtol=1e-4, atol=1e-5)
        assert state.keys() == model.init_state(3, torch.device("cpu")).keys()
        for t in range(7, 10):
            h_t, state = model.step(state, items[:, t])
            torch.testing.assert_close(h_t, full[:, t], rtol=1e-4, atol=1e-5)
    assert state["pos"].tolist() == [10, 7, 3]


@pytest.mark.parametrize("preset", CAUSAL)
def test_streamed_recommendations_equal_a_full_forward(
    preset: str, runs: Callable[[str], Path], tmp_path: Path
) -> None:
    rec = Recommender.load(runs(preset), store=tmp_path / "a.db")
    assert rec.mode == (StreamMode.WINDOW if preset == "sasrec" else StreamMode.STEP)
    g = torch.Generator().manual_seed(1)
    new = {"new-a": torch.randint(1, 26, (9,), generator=g).tolist(), "new-b": [3, 3, 7, 1, 3]}
    for user, hist in new.items():  # one event at a time
        for item in raw(rec, hist):
            rec.observe(user, item)
    corpus_user, extra = "7", [5, 11]
    assert rec.prefill_from_corpus() == 30
    rec.observe_many([Event(corpus_user, item) for item in raw(rec, extra)])
    histories = {**new, corpus_user: rec.corpus.seq(rec.user_index[corpus_user]).tolist() + extra}
    for user, hist in histories.items():
        assert_same(rec.recommend(user, k=5), reference(rec, hist, 5))
        assert_same(rec.recommend(user, k=5, exclude_seen=False), reference(rec, hist, 5, exclude_seen=False))
        assert_same(rec.recommend_items(raw(rec, hist), k=5), reference(rec, hist, 5))

    # one interleaved batch into a fresh store, corpus user built lazily: the same states
    other = Recommender.load(runs(preset), store=tmp_path / "b.db")
    events = [
        Event(u, rec.item_ids[i])
        for t in range(9)
        for u, h in histories.items()
        if u != corpus_user
        for i in h[t : t + 1]
    ]
    assert other.observe_many(events + [Event(corpus_user, i) for i in raw(rec, extra)]) == Applied(16, 0)
    for user, hist in histories.items():
        assert_same(other.recommend(user, k=5), reference(rec, hist, 5))


@pytest.mark.parametrize(("preset", "window"), [("sasrec", True), ("lt-sasrec", False)])
def test_histories_longer_than_max_len(preset: str, window: bool, runs: Callable[[str], Path], tmp_path: Path) -> None:
    """Softmax re-encodes the newest max_len events (as offline evaluation); a constant-size state keeps all."""
    rec = Recommender.load(runs(preset), store=tmp_path / "s.db")
    hist = torch.randint(1, 26, (MAX_LEN + 5,), generator=torch.Generator().manual_seed(2)).tolist()
    rec.observe_many([Event("long", i) for i in raw(rec, hist)])
    want = reference(rec, hist[-MAX_LEN:] if window else hist, 5, exclude_seen=False)
    assert_same(rec.recommend("long", k=5, exclude_seen=False), want)


def test_global_models_refuse_streaming_but_rank_item_lists(runs: Callable[[str], Path], tmp_path: Path) -> None:
    rec = Recommender.load(runs("bert4rec"), store=tmp_path / "s.db")
    assert rec.mode == StreamMode.NONE
    with pytest.raises(StreamingUnsupported, match="global"):
        rec.observe("u", rec.item_ids[1])
    with pytest.raises(StreamingUnsupported, match="POST /v1/recommendations"):
        rec.recommend("1")
    hist = [4, 9, 2]
    items = torch.tensor([hist + [rec.mask_token]])  # the cloze query after the history, as the evaluator does
    with torch.no_grad():
        scores = (rec.model(items, items > 0)[:, -1] @ rec.model.item_table().T)[0]
    scores[[0, *hist]] = float("-inf")
    assert [s.item for s in rec.recommend_items(raw(rec, hist), k=4)] == raw(rec, scores.topk(4).indices.tolist())


def test_events_are_applied_once_per_user_and_event_id(runs: Callable[[str], Path], tmp_path: Path) -> None:
    rec = Recommender.load(runs("gru4rec"), store=tmp_path / "s.db")
    a, b, c = raw(rec, [3, 4, 5])
    assert rec.observe("u", a, "e1") is True
    assert rec.observe("u", a, "e1") is False
    assert rec.observe("w", a, 7) is True and rec.observe("w", b, "7") is False  # type: ignore[arg-type]
    res = rec.observe_many([Event("u", b, "e2"), Event("u", b, "e2"), Event("v", b, "e2"), Event("u", c)])
    assert res == Applied(3, 1)
    assert {u: r.events for u, r in rec.store.get(["u", "v"]).items()} == {"u": 3, "v": 1}
    assert_same(rec.recommend("u", k=5), reference(rec, [3, 4, 5], 5))
    with pytest.raises(UnknownItem, match="'nope'.*nothing was applied"):  # a bad item rejects the whole batch
        rec.observe_many([Event("u", a, "e3"), Event("u", "nope", "e4")])
    assert rec.store.get(["u"])["u"].events == 3
    assert rec.observe("u", a, "e3") is True  # the rejected batch marked no event as applied
    with pytest.raises(UnknownUser, match="'ghost'"):
        rec.recommend("ghost")


class _RivalWorker:
    """A store whose first batch write loses a race: another worker stores `victim` between the read and the
    commit (here: right after the rolled-back batch), as an optimistic store (Redis) reports it."""

    def __init__(self, store: Any, victim: str, record: UserRecord) -> None:
        self.store, self.victim, self.record, self.lost = store, victim, record, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    @contextlib.contextmanager
    def batch(self) -> Iterator[Any]:
        if self.lost:
            with self.store.batch() as txn:
                yield txn
            return
        self.lost = True
        with contextlib.suppress(VersionConflict), self.store.batch() as txn:
            yield txn
            raise VersionConflict({self.victim})  # at commit: nothing of the batch written
        with self.store.batch() as txn:  # the rival's write
            txn.put({self.victim: self.record})
        raise VersionConflict({self.victim})


def test_prefill_builds_the_rest_of_a_batch_that_lost_a_race(runs: Callable[[str], Path], tmp_path: Path) -> None:
    rec = Recommender.load(runs("gru4rec"), store=tmp_path / "s.db")
    users = list(rec.user_index)
    theirs = rec._from_corpus([users[1]])[users[1]]  # the rival built it from a shorter history: a different state
    theirs = dataclasses.replace(theirs, state={k: v + 1 for k, v in theirs.state.items()})
    rec.store = _RivalWorker(rec.store, users[0], theirs)
    assert rec.prefill_from_corpus(users_per_batch=8) == len(users) - 1  # every user but the rival's one
    stored = rec.store.get(users)
    assert stored.keys() == set(users) and rec.store.lost
    torch.testing.assert_close(stored[users[0]].state, theirs.state)  # the rival's record kept
    for u in users[1:]:
        assert stored[u].events == len(rec.corpus.seq(rec.user_index[u]))


def test_the_sqlite_store_survives_reopening_and_refuses_another_model(
    runs: Callable[[str], Path], tmp_path: Path
) -> None:
    path = tmp_path / "state.db"
    rec = Recommender.load(runs("lrurec"), store=f"sqlite:///{path}")
    rec.observe_many([Event("u", i, f"e{n}") for n, i in enumerate(raw(rec, [2, 8, 8, 13]))])
    before = rec.recommend("u", k=5)
    rec.close()
    again = Recommender.load(runs("lrurec"), store=path)
    assert_same(again.recommend("u", k=5), before)
    assert_same(before, reference(again, [2, 8, 8, 13], 5))
    assert again.observe("u", again.item_ids[2], "e0") is False  # applied event ids persist too
    assert again.store.get(["u"])["u"].seen.tolist() == [2, 8, 13]
    again.close()
    with pytest.raises(StoreError, match="another model"):
        Recommender.load(runs("gru4rec"), store=path)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_http_api(runs: Callable[[str], Path], tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from longrec.serve.app import create_app

    rec = Recommender.load(runs("causal-linrec"), store=tmp_path / "s.db")
    http = TestClient(create_app(rec))  # raises on any server error, so a 500 fails the test
    assert http.get("/healthz").json()["status"] == "ok"

    a, b, c = raw(rec, [3, 4, 5])
    body = {
        "events": [
            {"user": "x", "item": a, "event_id": 1},
            {"user": "x", "item": b, "event_id": "2", "ts": 5.0},
            {"user": "x", "item": a, "event_id": "1"},
        ]
    }
    assert http.post("/v1/events", json=body).json() == {"applied": 2, "duplicates": 1}
    assert http.post("/v1/events", json=body).json() == {"applied": 0, "duplicates": 3}
    got = http.get("/v1/users/x/recommendations", params={"k": 3}).json()
    assert [s["item"] for s in got["items"]] == [s.item for s in reference(rec, [3, 4], 3)]
    assert len(http.get("/v1/users/x/recommendations?k=3&exclude_seen=false").json()["items"]) == 3
    assert len(http.get("/v1/users/7/recommendations").json()["items"]) == 10  # a corpus user, never observed
    got = http.post("/v1/recommendations", json={"items": [a, b, int(c)], "k": 2}).json()
    assert [s["item"] for s in got["items"]] == [s.item for s in reference(rec, [3, 4, 5], 2)]

    bad: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("post", "/v1/events", {"json": {"events": [{"user": "x", "item": "nope"}]}}, 422, "nope"),
        ("get", "/v1/users/ghost/recommendations", {}, 404, "ghost"),
        ("post", "/v1/recommendations", {"json": {"items": ["nope"], "k": 2}}, 422, "nope"),
        ("post", "/v1/events", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, ""),
        ("post", "/v1/events", {"json": {"events": []}}, 422, "events"),
        ("post", "/v1/events", {"json": [{"user": "x", "item": a}]}, 422, ""),
        ("post", "/v1/events", {"json": {"events": [{"user": None, "item": a}]}}, 422, "user"),
        ("post", "/v1/events", {"json": {"events": [{"user": "", "item": a}]}}, 422, "user"),
        ("post", "/v1/events", {"json": {"events": [{"user": "x", "item": [a]}]}}, 422, "item"),
        ("get", "/v1/users/x/recommendations?k=0", {}, 422, "k"),
        ("get", "/v1/users/x/recommendations?k=abc", {}, 422, "k"),
        ("post", "/v1/recommendations", {"json": {"items": []}}, 422, "items"),
        ("post", "/v1/recommendations", {"json": {"items": [a], "k": -1}}, 422, "k"),
        ("post", "/v1/events", {"content": b'{"events": [{"user": "\\ud800", "item": "3"}]}',
                                "headers": {"content-type": "application/json"}}, 400, "lone surrogate"),
        ("post", "/v1/events", {"content": b'{"events": [{"user": "x", "item": "3", "event_id": "\\udfff"}]}',
                                "headers": {"content-type": "application/json"}}, 400, "event id"),
    ]
    for method, url, kwargs, status, needle in bad:
        r = getattr(http, method)(url, **kwargs) if method == "get" else http.request("POST", url, **kwargs)
        assert r.status_code == status, (url, kwargs, r.text)
        msg = r.json()["message"]
        assert isinstance(msg, str) and msg and needle in msg, (url, msg)
    assert rec.store.get(["x"])["x"].events == 2  # nothing above changed the state

    def down(users: list[str]) -> None:
        raise StoreError("state store 'redis://x': Redis failed (ConnectionError)")

    rec.store.get = down  # type: ignore[method-assign]
    rec.cache.drop(["x"])  # a hot user is answered from memory; a cold one must be read
    r = http.get("/v1/users/x/recommendations")
    assert r.status_code == 503 and r.json()["error"] == "store_unavailable" and "Redis failed" in r.json()["message"]


def test_state_blobs_round_trip_row_by_row_and_batched() -> None:
    from longrec.serve.record_codec import decode, encode, encode_rows

    tensors = {
        "pos": torch.tensor(7),  # 0-d, as an unbatched state row holds it
        "h": torch.randn(5),
        "valid": torch.tensor([True, False, True]),
        "0.k": torch.randn(1, 0, 4),  # an empty KV cache
        "bf": torch.randn(3, 2).bfloat16(),
        "i32": torch.arange(5, dtype=torch.int32),
        "strided": torch.randn(4, 3).T,
    }
    back = decode("u", encode(tensors))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    batched = {"h": torch.randn(3, 4), "pos": torch.tensor([1, 2, 3]), "s": torch.randn(3, 2, 2).transpose(1, 2)}
    for b, blob in enumerate(encode_rows(batched)):  # one shared header: each row decodes to its own tensors
        assert blob == encode({k: v[b] for k, v in batched.items()})
        row = decode("u", blob)
        assert all(torch.equal(row[k], v[b]) for k, v in batched.items())
    with pytest.raises(StoreError, match="record of user 'u' is corrupt"):
        decode("u", encode(tensors)[:-3])
    with pytest.raises(StoreError, match="corrupt"):
        decode("u", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")  # a format-1 (safetensors) blob


def test_a_store_of_the_old_record_format_is_refused_in_one_line(
    runs: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    from longrec.cli import main as cli_main

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # format 1: safetensors blobs, no versions
        conn.executescript("CREATE TABLE users (user TEXT PRIMARY KEY, state BLOB NOT NULL, seen BLOB NOT NULL, "
                           "events INTEGER NOT NULL);")
    run = runs("gru4rec")
    capsys.readouterr()  # the fixture's training output
    assert cli_main(["serve", str(run), "--store", str(old)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "older longrec (record format 1" in err and str(old) in err
