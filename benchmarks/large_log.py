"""Large-log benchmark: peak memory and time of preparing a Parquet log of 2M..10M+ events.

The log (user, item, ts; Zipf item popularity over --items, --users users, time order with ties) is written
with pyarrow one row group at a time, so generating it never holds the whole log. Each preparation runs in a
fresh interpreter; memory is its peak resident set (VmHWM, see longrec.bench.harness), reported whole and as
growth over a baseline taken after the imports. `stream` is the bounded-memory path (data.mmap=true);
`in-memory` the default reader + build_corpus, run only up to --in-memory-max events (it holds every id as a
Python string).

    python -m benchmarks.large_log --events 2000000 10000000   # from the repository root
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from longrec.bench.harness import CellFailed, markdown, peak_rss_mib, run_cell
from longrec.data.synthetic import zipf_ranks

COLUMNS = ("path", "events", "users", "items", "peak_rss_mib", "growth_mib", "seconds", "status")


def write_log(path: Path, events: int, users: int, items: int, group: int = 1 << 20, seed: int = 0) -> Path:
    """A Parquet log written one row group at a time (never the whole log in memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    schema = pa.schema([("user", pa.int64()), ("item", pa.int64()), ("ts", pa.int64())])
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as w:
        for s in range(0, events, group):
            n = min(group, events - s)
            item = zipf_ranks(rng, items, 1.0, n) + 1
            ts = 1_600_000_000 + (s + np.arange(n)) // 3  # three events a second: ties within users too
            w.write_table(pa.table({"user": rng.integers(1, users + 1, n), "item": item, "ts": ts}, schema=schema))
    tmp.replace(path)
    return path


def cell(spec: dict[str, Any]) -> dict[str, Any]:
    """One preparation in this fresh process."""
    from longrec.data.mmap_corpus import prepare_streaming
    from longrec.data.prepare import build_corpus
    from longrec.data.readers import Columns, read_log

    path, out, cols = Path(spec["log"]), Path(spec["out"]), Columns("user", "item", "ts")
    base = peak_rss_mib()
    t0 = time.perf_counter()
    if spec["path"] == "stream":
        corpus = prepare_streaming(path, "parquet", cols, out)
    else:
        corpus = build_corpus(read_log(path, "parquet", cols))
    peak = peak_rss_mib()
    return {"seconds": time.perf_counter() - t0, "peak_rss_mib": peak, "growth_mib": peak - base,
            "users": corpus.num_users, "items": corpus.num_items, "events": corpus.num_interactions}


def measure(kind: str, log: Path, events: int, opts: argparse.Namespace) -> dict[str, Any]:
    out = Path(opts.dir) / f"prepared-{events}"
    shutil.rmtree(out, ignore_errors=True)
    try:
        r = run_cell("benchmarks.large_log", {"path": kind, "log": str(log), "out": str(out)}, opts.time_limit)
    except CellFailed as e:
        return {"path": kind, "events": events, "status": f"{e.status}: {e.note[:80]}"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if r["events"] != events:
        raise RuntimeError(f"{kind}: prepared {r['events']} events of {events}")
    return {"path": kind, **{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}, "status": "ok"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.large_log", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, nargs="+", default=[2_000_000, 10_000_000])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--in-memory-max", type=int, default=2_000_000, help="largest log given to the in-memory path")
    p.add_argument("--dir", default="/tmp/longrec-large-log", help="where the Parquet logs are written (kept)")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds per preparation")
    p.add_argument("--cell", default="", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.cell:
        print(json.dumps(cell(json.loads(opts.cell))))
        return
    Path(opts.dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for events in opts.events:
        log = Path(opts.dir) / f"log-{events}-{opts.users}-{opts.items}.parquet"
        if not log.is_file():
            t0 = time.time()
            write_log(log, events, opts.users, opts.items)
            print(f"wrote {log} ({log.stat().st_size / 2**20:.0f} MiB, {time.time() - t0:.0f}s)", file=sys.stderr)
        for kind in ("stream", "in-memory"):
            if kind == "in-memory" and events > opts.in_memory_max:
                continue
            rows.append(measure(kind, log, events, opts))
            print(" | ".join(str(rows[-1].get(c, "")) for c in COLUMNS), file=sys.stderr)
    print(markdown(rows, COLUMNS))


if __name__ == "__main__":
    main()
