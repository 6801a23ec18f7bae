"""Where one `POST /v1/events` request's time goes, from arrival to acknowledgement (issue 20), in-process.

Drives the service's ASGI app (longrec.serve.app.create_app) directly, with no socket, so the figures are the
server's own cost: HTTP parsing and JSON (the framework), validation, the store transaction, state decode and
encode, and the model step. Prints the mean time per request and the functions with the largest cumulative
time under cProfile. Runs against whatever longrec is on PYTHONPATH (the same script measured main and issue20).

    OMP_NUM_THREADS=1 python scripts/serve_profile.py runs/ml1m-lru --requests 2000 --batch 1
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch


async def _call(app: Any, body: bytes) -> int:
    """One POST /v1/events through the ASGI interface; returns the status code."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/events", "raw_path": b"/v1/events", "query_string": b"",
             "root_path": "", "headers": [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    sent = False
    status = [0]

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            status[0] = msg["status"]

    await app(scope, receive, send)
    return status[0]


async def _drive(app: Any, bodies: list[bytes]) -> None:
    for b in bodies:
        if await _call(app, b) != 200:
            raise SystemExit(f"request failed: {b[:200]!r}")


def _profile_off_thread(prof: cProfile.Profile) -> None:
    """Profile Recommender.observe_many with `prof` when it runs off the event-loop thread (FastAPI runs sync
    handlers in a thread pool, where the event loop's profiler does not see them)."""
    import threading

    from longrec.serve.recommender import Recommender

    inner = Recommender.observe_many
    main_thread = threading.main_thread()

    def observe_many(self: Any, events: Any) -> Any:
        if threading.current_thread() is main_thread:
            return inner(self, events)
        prof.enable()
        try:
            return inner(self, events)
        finally:
            prof.disable()

    Recommender.observe_many = observe_many  # type: ignore[method-assign]


def _print(prof: cProfile.Profile, top: int, title: str) -> None:
    prof.create_stats()
    if not prof.stats:  # type: ignore[attr-defined]  # nothing ran in that thread
        return
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"--- {title}\n{out.getvalue()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1, help="events per request")
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--top", type=int, default=22, help="functions listed")
    args = p.parse_args()
    torch.set_num_threads(1)
    from longrec.serve.app import create_app
    from longrec.serve.recommender import Recommender

    items = [str(x) for x in json.loads((args.run_dir / "id_maps.json").read_text())["items"][1:]]
    rng = random.Random(0)
    bodies = [json.dumps({"events": [{"user": f"p{rng.randrange(args.users)}", "item": rng.choice(items),
                                      "event_id": f"e{r}-{j}"} for j in range(args.batch)]}).encode()
              for r in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recommender.load(args.run_dir, store=Path(tmp) / "s.db", device="cpu")
        app = create_app(rec)
        asyncio.run(_drive(app, bodies[:200]))  # warm-up: every user exists, caches are warm
        prof, off = cProfile.Profile(), cProfile.Profile()
        _profile_off_thread(off)
        t0 = time.perf_counter()
        prof.enable()
        asyncio.run(_drive(app, bodies[200:]))
        prof.disable()
        wall = time.perf_counter() - t0
        rec.close()
    n = args.requests - 200
    print(f"{n} requests of {args.batch} event(s), sequential, under cProfile: {1e3 * wall / n:.3f} ms/request "
          f"({n * args.batch / wall:.0f} events/s; cProfile roughly doubles Python-heavy code)")
    _print(prof, args.top, "event-loop thread")
    _print(off, args.top, "observe_many in the thread pool")


if __name__ == "__main__":
    main()
