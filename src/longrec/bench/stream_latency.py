"""Per-event update latency of the streaming service (issue 7): one observe() after a history of L events.

Each variant is a small random model (the preset's dims, no training) serving one user per L, whose state is
prefilled from a history of L random events (Recommender.prefill_from_corpus: batched forwards). Then new events
are applied one at a time, each to every L's user in turn (so load spikes of a shared machine hit every L alike),
and timed: --warmup untimed first, then the median and p90 over --reps:
  observe: Recommender.observe, the service's path (store read, model update, store write; one SQLite transaction)
  step:    the model update alone (Streamer.extend on the batched state, no store)
Constant-size states (linear attention, LRU, Hydra, ReLA) should cost the same at every L. Softmax re-encoding
its last L events (max_len = L) grows with L; a softmax KV cache steps one query but reads, and stores, K and V
of all L events. Ratios divide by the same variant's time at the smallest L of the run.

    longrec bench stream-latency --lengths 256 1024 4096 16384 --reps 50 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longrec.argtypes import non_negative_int, positive_float, positive_int, thread_count
from longrec.bench.harness import add_options, device_name, markdown, option, options, percentile, write_csv
from longrec.config import load_config
from longrec.data.corpus import Corpus
from longrec.errors import LongrecError
from longrec.objectives import build_model, mask_token
from longrec.plots import loglog_by_variant
from longrec.serve.recommender import Recommender, Served
from longrec.serve.store_url import open_store
from longrec.serve.streamers import STREAMERS, StreamMode

DEFAULT_LENGTHS = (256, 1024, 4096, 16384)
COLUMNS = tuple(
    "variant preset mixer path L reps observe_p50_us observe_p90_us observe_ratio step_p50_us step_p90_us "
    "step_ratio state_kib device threads".split()
)
STEPPED = "causal-linrec lt-sasrec lrurec retention gla gated-delta hydrarec-causal recgrela-causal".split()
VARIANTS = {p: (p, StreamMode.STEP) for p in STEPPED} | {  # (preset, how observe() advances the state)
    "sasrec-reencode": ("sasrec", StreamMode.WINDOW),  # max_len = the largest L: it re-encodes the whole history
    "sasrec-kv": ("sasrec", StreamMode.STEP),  # SoftmaxMixer.step: a growing KV cache
}
DEFAULT_VARIANTS = ("causal-linrec", "lrurec", "hydrarec-causal", "recgrela-causal", "sasrec-reencode", "sasrec-kv")


@dataclass(frozen=True)
class Options:
    """What each cell measures; the fields made with option() are flags of `longrec bench stream-latency`."""

    reps: int = option(50, "timed events per cell (median and p90)", type=positive_int)
    warmup: int = option(5, "untimed events first (allocator, first-call paths, SQLite page cache)",
                         type=non_negative_int)
    dim: int = option(0, "model width (0: the preset's)", type=non_negative_int)
    items: int = option(1000, "catalogue size (only the embedding lookup depends on it)", type=positive_int)
    time_limit_s: float = option(60.0, "seconds per variant and path: then stop, once 3 events are timed at each L",
                                 "--time-limit", type=positive_float)
    seed: int = 0


def _interleaved(runs: Mapping[int, Callable[[Any], object]], new: Sequence[Any],
                 opts: Options) -> dict[int, list[float]]:
    """Seconds of runs[L](item) per L. Each event is applied at every L in turn, so a slow spell of a shared
    machine hits every L alike; the first opts.warmup events are not timed."""
    times: dict[int, list[float]] = {n: [] for n in runs}
    start = time.perf_counter()
    for i, item in enumerate(new):
        for n, run in runs.items():
            t0 = time.perf_counter()
            run(item)
            if i >= opts.warmup:
                times[n].append(time.perf_counter() - t0)
        if i + 1 - opts.warmup >= 3 and time.perf_counter() - start > opts.time_limit_s:
            break
    return times


def measure(name: str, lengths: Sequence[int], opts: Options, store_dir: Path) -> list[dict[str, Any]]:
    """One variant at every L: a user per L prefilled with L events (one model, one store), then new events
    timed through observe() and through the bare model update, interleaved across L."""
    (preset, mode), lengths = VARIANTS[name], sorted(set(lengths))
    torch.manual_seed(opts.seed)
    overrides = [f"model.dim={opts.dim or load_config(preset).model.dim}", "model.dropout=0.0"]
    if mode == StreamMode.WINDOW:
        overrides.append(f"model.max_len={max(lengths)}")  # every user's whole history fits the window
    cfg = load_config(preset, overrides)
    model = build_model(opts.items, cfg.model, cfg.train).eval()
    g = np.random.default_rng(opts.seed)  # a user per L, named `L<L>`, with L random events
    hists = [g.integers(1, opts.items + 1, n) for n in lengths]
    corpus = Corpus.from_seqs(hists, opts.items, user_ids=[f"L{n}" for n in lengths])
    token = mask_token(model, cfg.train)
    rec = Recommender(Served(model, f"bench {name}", token, name), corpus, open_store(store_dir / f"{name}.db"), mode)
    new = np.random.default_rng(opts.seed + 1).integers(1, opts.items + 1, opts.warmup + opts.reps).tolist()
    try:
        rec.prefill_from_corpus(users_per_batch=1)  # alone: a KV cache batched with longer rows keeps pads
        observe = {n: partial(rec.observe, f"L{n}") for n in lengths}
        times = {"observe": _interleaved(observe, [str(i) for i in new], opts)}
        records = rec.store.get([f"L{n}" for n in lengths])
    finally:
        rec.close()
    streamer = STREAMERS[mode](model, token)
    with torch.inference_mode():
        states = {n: streamer.from_history([corpus.seq(u).astype("int64").tolist()]) for u, n in enumerate(lengths)}

        def step(n: int, item: int) -> None:
            states[n] = streamer.extend(states[n], [[item]])

        times["step"] = _interleaved({n: partial(step, n) for n in lengths}, new, opts)
    common = {"variant": name, "preset": preset, "mixer": cfg.model.mixer, "path": rec.mode.value,
              "device": device_name(torch.device("cpu")), "threads": torch.get_num_threads()}
    rows = []
    for n in lengths:
        state = records[f"L{n}"].state
        row = {**common, "L": n, "reps": min(len(t[n]) for t in times.values()),
               "state_kib": sum(a.numel() * a.element_size() for a in state.values()) / 1024}
        for path, t in times.items():
            us = [1e6 * x for x in t[n]]
            row[f"{path}_p50_us"], row[f"{path}_p90_us"] = statistics.median(us), percentile(us, 0.9)
        rows.append(row)
    return rows


def run_stream_latency(
    variants: Sequence[str] = DEFAULT_VARIANTS,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    opts: Options | None = None,
    out_dir: Path | str | None = Path("runs/bench/stream-latency"),
) -> list[dict[str, Any]]:
    """Measure every (variant, L), add ratios to the smallest L, write stream-latency.csv and .png (log-log median
    µs against L, observe() and the step alone side by side) in out_dir."""
    opts = opts or Options()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise LongrecError(f"stream-latency: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if not lengths or min(lengths) < 1 or opts.reps < 1 or opts.warmup < 0:
        raise LongrecError("stream-latency: need lengths >= 1, --reps >= 1 and --warmup >= 0")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="longrec-stream-latency-") as tmp:
        for name in dict.fromkeys(variants):
            mine = measure(name, lengths, opts, Path(tmp))
            print(f"{name}: " + ", ".join(f"L={r['L']} {r['observe_p50_us']:.0f} us" for r in mine), file=sys.stderr)
            rows += mine
    for r in rows:
        first = next(x for x in rows if x["variant"] == r["variant"])  # the smallest L: rows are sorted by L
        for path in ("observe", "step"):
            r[f"{path}_ratio"] = r[f"{path}_p50_us"] / first[f"{path}_p50_us"]
    if out_dir is not None:
        write_csv(Path(out_dir) / "stream-latency.csv", rows, COLUMNS)
        y = "median µs per event"
        loglog_by_variant(Path(out_dir) / "stream-latency.png", rows, ("L", "history length L"),
                          [("observe_p50_us", y, "observe()"), ("step_p50_us", y, "model step only")],
                          f"per-event update latency, {rows[0]['device']}, {rows[0]['threads']} thread(s)")
    return rows


TABLE = {  # column: (header, format)
    "variant": ("variant", ""), "path": ("path", ""), "L": ("L", ""), "observe_p50_us": ("observe µs p50", ".0f"),
    "observe_p90_us": ("p90", ".0f"), "observe_ratio": ("ratio", ".2f"), "step_p50_us": ("step µs p50", ".0f"),
    "step_p90_us": ("p90", ".0f"), "step_ratio": ("ratio", ".2f"), "state_kib": ("state KiB", ".1f"),
}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per (variant, L), times in µs, ratios to the variant's smallest L."""
    return markdown(rows, list(TABLE), [h for h, _ in TABLE.values()], {c: f for c, (_, f) in TABLE.items()})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help=f"any of: {', '.join(VARIANTS)}")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=list(DEFAULT_LENGTHS), help="history lengths L")
    add_options(p, Options)
    p.add_argument("--threads", type=thread_count, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("runs/bench/stream-latency"), help="directory for CSV and PNG")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        rows = run_stream_latency(args.variants, args.lengths, options(Options, args), args.out)
    except LongrecError as e:
        p.error(str(e))
    print(
        f"per-event latency, {rows[0]['device']}, {args.threads} thread(s), median of {args.reps} after "
        f"{args.warmup} warm-up; ratio = time / time at L={min(args.lengths)}"
    )
    print(table(rows))
    print(f"\nwrote {args.out}/stream-latency.csv (and .png with matplotlib)")


if __name__ == "__main__":
    main()
