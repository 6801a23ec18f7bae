"""Loopback load test and crash durability of `longrec serve` (issues 7, 20); needs the serve extra (httpx).

Starts `longrec serve RUN_DIR` as a subprocess on 127.0.0.1 over a state store (a fresh SQLite file by default).
  throughput: --clients threads send --events events, each with a unique event id, --batch per request; each
              client owns its users and sends their events in order. Reports events/s and request p50/p99;
              with --reads-per-s, one more thread meanwhile GETs recommendations (their p50/p99).
  durability: the clients send --crash-events more; once --kill-at of them are acknowledged the server is killed
              with SIGKILL mid-stream. It is restarted on the same store, and each client re-sends every event
              it has no acknowledgement for, plus --dup-fraction of its acknowledged ones (all must come back
              as duplicates). Then the store must hold every sent event exactly once: each (user, event id)
              marked applied, each user's event count equal to its number of distinct events; and the
              restarted server's recommendations for --check-users users must equal those of an uninterrupted
              in-process replay of their events, so no event was lost, doubled or reordered.

    longrec bench loadtest runs/ml-1m-gru4rec --events 10000 --clients 8 --reads-per-s 100
    longrec bench loadtest RUN --store redis://127.0.0.1:6379/0 --server-args '--workers 2'
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrec.argtypes import fraction, non_negative_float, positive_int
from longrec.bench.harness import add_options, option, options, percentile
from longrec.bench.serve_proc import TRANSPORT_ERRORS, Http, Server
from longrec.errors import LongrecError
from longrec.serve.store_url import open_store

Ev = tuple[str, str, str]  # (user, item, event id)


@dataclass(frozen=True)
class LoadOptions:
    """What the load test sends; the fields made with option() are flags of `longrec bench loadtest`."""

    events: int = option(10_000, "events in the throughput phase", type=positive_int)
    crash_events: int = option(2_000, "events in the kill -9 phase", type=positive_int)
    clients: int = option(8, "concurrent client threads", type=positive_int)
    users: int = option(200, "distinct users, spread over the clients", type=positive_int)
    batch: int = option(1, "events per request", type=positive_int)
    kill_at: float = option(0.3, "kill once this fraction of the crash-phase events is acknowledged", type=fraction)
    dup_fraction: float = option(0.1, "fraction of acknowledged events re-sent after the restart", type=fraction)
    check_users: int = option(20, "users whose served recommendations are checked against a replay",
                              type=positive_int)
    server_threads: int = option(1, "torch threads of the server", type=positive_int)
    reads_per_s: float = option(0.0, "GET /v1/users/{user}/recommendations per second during the throughput "
                                     "phase, from one more client thread, for users with acknowledged events",
                                type=non_negative_float)
    server_args: str = option("", "more options of `longrec serve`, one string (e.g. '--workers 2')")
    prefill: bool = option(False, "start the server with --prefill (the run's corpus users' states built first)",
                           action="store_true")
    start_timeout_s: float = 120.0
    seed: int = 0


@dataclass
class Sent:
    """What one client thread got back: acknowledged events, request latencies (s), the first failure."""

    acked: list[Ev] = field(default_factory=list)
    unacked: list[Ev] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    duplicates: int = 0
    error: str = ""


def plan(n: int, opts: LoadOptions, items: Sequence[str], tag: str, rng: random.Random) -> list[list[Ev]]:
    """n events over opts.users users (user j belongs to client j % clients): one ordered list per client."""
    per_client: list[list[Ev]] = [[] for _ in range(opts.clients)]
    for k in range(n):
        j = rng.randrange(opts.users)
        per_client[j % opts.clients].append((f"{tag}-u{j}", rng.choice(items), f"{tag}-e{k}"))
    return per_client


def send(url: str, events: list[Ev], batch: int, out: Sent, ack_counter: list[int]) -> None:
    """POST the events in order, `batch` per request; stop at the first failure (the rest stays unacked)."""
    http = Http(url)
    for i in range(0, len(events), batch):
        part = events[i : i + batch]
        body = {"events": [{"user": u, "item": it, "event_id": e} for u, it, e in part]}
        t0 = time.perf_counter()
        try:
            status, text = http.request("POST", "/v1/events", body)
            failed = "" if status == 200 else f"HTTP {status}: {text[:200]!r}"
        except TRANSPORT_ERRORS as e:
            failed = f"{type(e).__name__}: {e}"
        if failed:
            out.error, out.unacked = failed, events[i:]
            break
        out.latencies.append(time.perf_counter() - t0)
        out.duplicates += json.loads(text)["duplicates"]
        out.acked.extend(part)
        ack_counter[0] += len(part)  # approximate across threads: only steers when to kill
    http.close()


def read(url: str, results: list[Sent], per_s: float, running: threading.Event, out: Sent) -> None:
    """GET recommendations of users with an acknowledged event, per_s a second, while `running`; latencies and
    the first non-200 answer go to `out`."""
    rng, http = random.Random(1), Http(url)
    while running.is_set():
        time.sleep(rng.expovariate(per_s))
        acked = rng.choice(results).acked
        if not acked:
            continue
        t0 = time.perf_counter()
        status, text = http.request("GET", f"/v1/users/{acked[-1][0]}/recommendations?k=10")
        out.latencies.append(time.perf_counter() - t0)
        if status != 200 and not out.error:
            out.error = f"GET HTTP {status}: {text[:200]!r}"
    http.close()


def run_clients(
    url: str, per_client: list[list[Ev]], batch: int, kill: Server | None = None, kill_after: int = 0,
    reads_per_s: float = 0.0,
) -> tuple[list[Sent], float, Sent]:
    """One thread per client; with `kill`, SIGKILL that server once kill_after events are acknowledged; with
    reads_per_s, one more thread reading recommendations meanwhile (its Sent is the third value)."""
    results, reads, running = [Sent() for _ in per_client], Sent(), threading.Event()
    acked = [0]
    threads = [threading.Thread(target=send, args=(url, evs, batch, res, acked))
               for evs, res in zip(per_client, results, strict=True)]
    reader = threading.Thread(target=read, args=(url, results, reads_per_s, running, reads))
    t0 = time.perf_counter()
    running.set()
    for t in threads:
        t.start()
    if reads_per_s > 0:
        reader.start()
    while kill is not None and any(t.is_alive() for t in threads) and acked[0] < kill_after:
        time.sleep(0.001)
    if kill is not None:  # every event may have been acknowledged before the kill: then it comes now
        kill.kill()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    running.clear()
    if reader.is_alive():
        reader.join()
    return results, wall, reads


def throughput(results: list[Sent], wall_s: float, reads: Sent) -> dict[str, Any]:
    lat = [x for r in results for x in r.latencies]
    n = sum(len(r.acked) for r in results)
    ms = [1e3 * percentile(x, q) if x else 0.0 for x in (lat, reads.latencies) for q in (0.5, 0.99)]
    return {"events": n, "requests": len(lat), "seconds": wall_s, "events_per_s": n / wall_s, "p50_ms": ms[0],
            "p99_ms": ms[1], "reads": len(reads.latencies), "read_p50_ms": ms[2], "read_p99_ms": ms[3],
            "errors": [r.error for r in [*results, reads] if r.error]}


def check_store(store_url: str, sent: list[Ev]) -> dict[str, Any]:
    """Every sent (user, event id) applied, and each user's event count = its number of distinct events."""
    want = Counter(u for u, _, _ in sent)
    store = open_store(store_url)
    try:
        with store.batch() as txn:
            missing = len(sent) - len(txn.applied([(u, e) for u, _, e in sent]))
        records = store.get(list(want))
    finally:
        store.close()
    got = {u: records[u].events if u in records else 0 for u in want}
    wrong = {u: (got[u], n) for u, n in want.items() if got[u] != n}
    return {"events_missing": missing, "users_with_wrong_count": len(wrong), "examples": dict(list(wrong.items())[:5]),
            "exactly_once": missing == 0 and not wrong}


def check_states(url: str, run_dir: Path, replay_store: Path, sent: list[Ev], n_users: int, rng: random.Random) -> int:
    """Users (n_users sampled) whose served top-10 differs from an uninterrupted in-process replay of their events
    (Recommender.observe_many on a fresh store): a lost, doubled or reordered event changes the state."""
    import httpx

    from longrec.serve.recommender import Event, Recommender

    history: dict[str, list[Ev]] = {}
    for ev in sent:
        history.setdefault(ev[0], []).append(ev)
    users = rng.sample(sorted(history), min(n_users, len(history)))
    replay = Recommender.load(run_dir, store=replay_store, device="cpu")
    bad = 0
    try:
        replay.observe_many([Event(u, item, e) for user in users for u, item, e in history[user]])
        with httpx.Client(base_url=url, timeout=60.0) as http:
            for u in users:
                got = http.get(f"/v1/users/{u}/recommendations", params={"k": 10}).json()["items"]
                want = replay.recommend(u, k=10)
                same = [g["item"] for g in got] == [w.item for w in want] and all(
                    abs(g["score"] - w.score) <= 1e-3 * max(1.0, abs(w.score)) for g, w in zip(got, want, strict=True)
                )
                bad += not same
    finally:
        replay.close()
    return bad


def run_loadtest(run_dir: Path, opts: LoadOptions, store: str = "", work_dir: Path | None = None) -> dict[str, Any]:
    """Both phases against `longrec serve RUN_DIR`; returns the report (see the module docstring)."""
    if not (run_dir / "id_maps.json").is_file():
        raise LongrecError(f"{run_dir}: not a finished run (no id_maps.json)")
    if not (0 < opts.kill_at < 1) or opts.clients < 1 or opts.users < opts.clients or opts.batch < 1:
        raise LongrecError("loadtest: need 0 < --kill-at < 1, --clients >= 1, --users >= --clients, --batch >= 1")
    items = [str(x) for x in json.loads((run_dir / "id_maps.json").read_text())["items"][1:]]
    rng = random.Random(opts.seed)
    tag = f"lt{os.getpid()}x{int(time.time())}"  # fresh users and event ids even on a reused store
    with tempfile.TemporaryDirectory(prefix="longrec-loadtest-") as tmp:
        work = work_dir or Path(tmp)
        store = store or f"sqlite:///{work / 'loadtest-state.db'}"
        server = Server(run_dir, store, work / "server.log", opts)
        try:
            first = plan(opts.events, opts, items, f"{tag}a", rng)
            report: dict[str, Any] = {"throughput": throughput(*run_clients(server.url, first, opts.batch,
                                                                            reads_per_s=opts.reads_per_s))}
            crash = plan(opts.crash_events, opts, items, f"{tag}b", rng)
            results, _, _ = run_clients(server.url, crash, opts.batch, server, int(opts.kill_at * opts.crash_events))
            server = Server(run_dir, store, work / "server.log", opts)  # restarted on the same store
            dups = [rng.sample(r.acked, int(opts.dup_fraction * len(r.acked))) for r in results]
            again = [d + r.unacked for d, r in zip(dups, results, strict=True)]
            resent, _, _ = run_clients(server.url, again, opts.batch)
            sent, n_dups = [e for c in first + crash for e in c], sum(map(len, dups))
            report["durability"] = {
                "acknowledged_before_kill": sum(len(r.acked) for r in results),
                "unacknowledged": sum(len(r.unacked) for r in results),
                "resent_acknowledged": n_dups,
                "committed_but_unacknowledged": sum(r.duplicates for r in resent) - n_dups,
                "resend_errors": [r.error for r in resent if r.error],
                "users_with_wrong_state": check_states(server.url, run_dir, work / "replay.db", sent,
                                                       opts.check_users, rng),
            }
        finally:
            server.stop()
        report["store"] = check_store(store, sent)
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    add_options(p, LoadOptions)
    p.add_argument("--store", default="", help="state store URL (default: a fresh SQLite file in a temp dir)")
    args = p.parse_args(argv)
    opts = options(LoadOptions, args)
    try:
        report = run_loadtest(args.run_dir, opts, args.store)
    except LongrecError as e:
        p.error(str(e))
    t, dur, st = report["throughput"], report["durability"], report["store"]
    print(
        f"throughput: {t['events']} events in {t['requests']} requests from {opts.clients} clients, "
        f"{t['seconds']:.1f} s: {t['events_per_s']:.0f} events/s, p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms"
        + (f"; {t['reads']} GET recommendations meanwhile: p50 {t['read_p50_ms']:.1f} ms, p99 "
           f"{t['read_p99_ms']:.1f} ms" if t["reads"] else "")
    )
    print(
        f"kill -9: {dur['acknowledged_before_kill']} acknowledged, {dur['unacknowledged']} not "
        f"({dur['committed_but_unacknowledged']} of these had been committed); re-sent them and "
        f"{dur['resent_acknowledged']} acknowledged ones"
    )
    print(
        f"store: {'every event exactly once' if st['exactly_once'] else 'NOT exactly once'} "
        f"(missing {st['events_missing']}, users with a wrong count {st['users_with_wrong_count']}); "
        f"users whose state differs from a replay: {dur['users_with_wrong_state']}"
    )
    print(json.dumps(report, indent=1))
    ok = st["exactly_once"] and not dur["users_with_wrong_state"] and not t["errors"] and not dur["resend_errors"]
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
