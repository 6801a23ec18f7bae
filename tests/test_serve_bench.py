"""Serving benchmarks and start-up: the stream-latency table and CSV, `longrec serve --prefill`, and the loopback
load test's kill -9 + restart + exactly-once check (small counts; the timings themselves are not asserted)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from longrec.bench import stream_latency
from longrec.bench.stream_latency import COLUMNS, Options, run_stream_latency, table
from longrec.cli import main as cli_main
from longrec.errors import LongrecError
from longrec.model.encoder import SeqEncoder
from longrec.serve import Recommender
from test_serve import tiny_run

TINY = Options(reps=3, warmup=1, dim=8, items=20)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("bench-run"), "gru4rec")


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, int]:
    calls = {name: 0}
    orig = getattr(SeqEncoder, name)

    def counted(self: SeqEncoder, *args: Any) -> Any:
        calls[name] += 1
        return orig(self, *args)

    monkeypatch.setattr(SeqEncoder, name, counted)
    return calls


def test_stream_latency_writes_a_row_per_cell_and_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps, forwards = _count_calls(monkeypatch, "step"), _count_calls(monkeypatch, "forward")
    rows = run_stream_latency(["causal-linrec", "lrurec"], [8, 32], TINY, tmp_path)
    assert forwards["forward"] == 0  # constant-size states: prefill, then only SeqEncoder.step per event
    assert steps["step"] == 2 * 2 * 2 * (TINY.warmup + TINY.reps)  # variants x lengths x (observe, bare step)

    rows += run_stream_latency(["sasrec-reencode", "sasrec-kv"], [8, 32], TINY, tmp_path)
    assert forwards["forward"] > 0  # the re-encoding variant runs a forward per event
    with open(tmp_path / "stream-latency.csv") as f:
        written = list(csv.DictReader(f))
    assert tuple(written[0]) == COLUMNS and len(written) == 4  # the second call rewrote the CSV with its cells
    by = {(r["variant"], r["L"]): r for r in rows}
    assert set(by) == {(v, n) for v in ("causal-linrec", "lrurec", "sasrec-reencode", "sasrec-kv") for n in (8, 32)}
    assert {v: by[v, 8]["path"] for v in ("causal-linrec", "lrurec", "sasrec-kv", "sasrec-reencode")} == {
        "causal-linrec": "step",
        "lrurec": "step",
        "sasrec-kv": "step",
        "sasrec-reencode": "window",
    }
    for (_, n), r in by.items():
        assert r["reps"] == TINY.reps and 0 < r["observe_p50_us"] <= r["observe_p90_us"]
        assert r["observe_ratio"] == r["step_ratio"] == 1.0 if n == 8 else r["observe_ratio"] > 0
    assert by["causal-linrec", 8]["state_kib"] == by["causal-linrec", 32]["state_kib"]  # constant-size state
    assert by["sasrec-kv", 32]["state_kib"] > by["sasrec-kv", 8]["state_kib"]  # a growing KV cache
    lines = table(rows).splitlines()
    assert len(lines) == 2 + len(rows) and lines[0].startswith("| variant | path | L |")
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "stream-latency.png").stat().st_size > 0
    with pytest.raises(LongrecError, match="unknown variant.*nope.*known: causal-linrec"):
        run_stream_latency(["nope"], [8], TINY, tmp_path)


def test_stream_latency_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--variants", "hydrarec-causal", "--lengths", "4", "8", "--reps", "2", "--warmup", "0", "--dim", "8"]
    assert cli_main(["bench", "stream-latency", *args, "--items", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| hydrarec-causal | step | 8 |" in out and (tmp_path / "stream-latency.csv").exists()
    with pytest.raises(SystemExit):
        stream_latency.main(["--variants", "nope", "--out", str(tmp_path)])
    assert "unknown variant" in capsys.readouterr().err


def test_serve_prefill_stores_every_corpus_user_before_serving(
    gru_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    served: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    store = tmp_path / "s.db"
    assert (
        cli_main(["serve", str(gru_run), "--store", str(store), "--prefill", "--port", "9", "--log-level", "warning"])
        == 0
    )
    assert served == [{"host": "127.0.0.1", "port": 9, "log_level": "warning", "loop": "uvloop", "http": "httptools"}]
    assert "prefilled 30 of 30 corpus users" in capsys.readouterr().out
    rec = Recommender.load(gru_run, store=store)
    stored = rec.store.get(list(rec.user_index))
    assert len(stored) == 30
    for u, r in stored.items():  # the whole corpus history: train, valid and test events
        assert r.events == len(rec.corpus.seq(rec.user_index[u]))
    assert rec.prefill_from_corpus() == 0  # users already stored keep their state
    rec.close()


def test_loadtest_survives_kill_9_with_every_event_exactly_once(gru_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    from longrec.bench.loadtest import LoadOptions, run_loadtest

    opts = LoadOptions(events=90, crash_events=120, clients=3, users=9, kill_at=0.3, check_users=6, prefill=True)
    report = run_loadtest(gru_run, opts, work_dir=tmp_path)
    log = (tmp_path / "server.log").read_text()  # `longrec serve --prefill`, started twice on one store
    assert "prefilled 30 of 30 corpus users" in log and "prefilled 0 of 30 corpus users" in log, log
    t, dur, st = report["throughput"], report["durability"], report["store"]
    assert t["events"] == 90 and t["errors"] == [] and t["p50_ms"] <= t["p99_ms"]
    assert dur["unacknowledged"] > 0, "the server was killed after every event was acknowledged"
    assert dur["acknowledged_before_kill"] + dur["unacknowledged"] == 120
    assert dur["resend_errors"] == [] and dur["users_with_wrong_state"] == 0
    assert st == {"events_missing": 0, "users_with_wrong_count": 0, "examples": {}, "exactly_once": True}
