"""`longrec serve`: one process, or `--workers K` processes on one listening socket and one state store.

Each worker is one event loop (uvloop, httptools) with its own micro-batcher and hot-state cache. Workers share
the store, not memory: writes are compare-and-set on record versions (a stale cached record is re-read and the
batch recomputed), and with several workers recommend() reads the store rather than a cache another worker may
have outdated. SQLite suits workers on one machine (WAL; writers queue on its lock), Redis workers on several.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from longrec.serve.batcher import BATCH_WAIT_MS, MAX_BATCH
from longrec.serve.recommender import CACHE_MIB

ENV = "LONGREC_SERVE_OPTIONS"  # how the supervisor hands ServeOptions to the worker processes it spawns


@dataclass(frozen=True)
class ServeOptions:
    run_dir: str
    store: str
    host: str = "127.0.0.1"
    port: int = 8000
    prefill: bool = False
    log_level: str = "info"
    workers: int = 1  # server processes on the one port (uvicorn's supervisor; each has its own batcher and cache)
    threads: int = 1  # torch threads per worker: batches are small, one core per worker is the efficient use
    max_batch: int = MAX_BATCH  # events per group commit
    batch_wait_ms: float = BATCH_WAIT_MS  # how long a batch waits for more requests (0: those already queued)
    cache_mib: float = CACHE_MIB  # per worker; 0: no cache


def _app(opts: ServeOptions, prefill: bool):  # type: ignore[no-untyped-def]  # -> FastPath (app.py imports fastapi)
    from longrec.serve.app import create_app, prepare

    torch.set_num_threads(opts.threads)
    rec = prepare(opts.run_dir, opts.store, prefill, opts.cache_mib)
    rec.sole_writer = opts.workers == 1
    return create_app(rec, opts.max_batch, opts.batch_wait_ms), rec


def worker_app():  # type: ignore[no-untyped-def]
    """The app of one worker process (uvicorn factory), from the options the supervisor put in the environment."""
    opts = ServeOptions(**json.loads(os.environ[ENV]))
    return _app(opts, prefill=False)[0]


def serve_main(opts: ServeOptions) -> None:
    """Load the run, open the store (prefilled first, once, when asked) and serve HTTP until interrupted."""
    import uvicorn

    server: dict[str, Any] = {"host": opts.host, "port": opts.port, "log_level": opts.log_level, "loop": "uvloop",
                              "http": "httptools"}
    if opts.workers == 1:
        app, rec = _app(opts, opts.prefill)
        try:
            uvicorn.run(app, **server)
        finally:
            rec.close()
        return
    if opts.prefill:  # once, before the workers start: they would all build the same states
        from longrec.serve.app import prepare

        prepare(opts.run_dir, opts.store, prefill=True, cache_mib=0).close()
    os.environ[ENV] = json.dumps({**asdict(opts), "run_dir": str(Path(opts.run_dir)), "store": str(opts.store)})
    uvicorn.run("longrec.serve.process:worker_app", factory=True, workers=opts.workers, **server)
