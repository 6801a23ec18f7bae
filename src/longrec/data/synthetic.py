"""A seeded generator of long interaction logs whose structure rewards long context.

Real public logs rarely give users thousands of events, so the long-history experiments of docs/BENCHMARKS.md
run on this generator. It is built so that a model that sees more of a user's past can predict better, and so
that the size of that gain is checkable without training anything (`context_gain`):

- The catalogue is split into `clusters` topics of equal size; every topic's items form a ring (a "next
  episode" order).
- Every user has `interests` topics with Dirichlet weights, and inside each topic a personal Zipf ranking of
  its items: stable, long-lived preferences that a short window only samples a little of.
- The log is a run of sessions (geometric lengths, mean `session_len`). A session stays in one topic: with
  probability `recall` it returns to the topic of the session `period` sessions back (a long-range dependency:
  `period` is drawn per user, so that session lies hundreds to thousands of events back), otherwise it draws
  a topic from the user's weights.
- Inside a session, each step either continues the ring from the previous item (probability `follow`, a
  short-range pattern) or draws a fresh item from the user's ranking of that topic.

History lengths are log-uniform in [min_len, max_len]. Output is a "user item" pairs file in time order (gzip
when the name ends in .gz), readable by `longrec data` like any other log, plus a JSON sidecar with every
parameter and the seed. Same parameters and seed, same bytes.

    longrec synth runs/data/synth-long.txt.gz --users 1000 --min-len 1000 --max-len 20000
"""

from __future__ import annotations

import argparse
import functools
import gzip
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longrec import argtypes


@dataclass(frozen=True)
class SynthConfig:
    users: int = 1000
    items: int = 5000
    clusters: int = 100  # topics of items // clusters items each
    interests: int = 20  # topics per user
    min_len: int = 1000  # history length, log-uniform in [min_len, max_len]
    max_len: int = 20000
    session_len: float = 15.0  # mean session length (geometric)
    recall: float = 0.3  # P(a session returns to the topic of the session `period` sessions back)
    period: tuple[int, int] = (20, 100)  # per-user period in sessions, uniform in [lo, hi]
    follow: float = 0.3  # P(next item continues the topic's ring)
    zipf: float = 1.1  # exponent of the user's ranking of a topic's items
    seed: int = 0

    def __post_init__(self) -> None:
        if self.items % self.clusters or self.items < self.clusters:
            raise ValueError(f"items ({self.items}) must be a positive multiple of clusters ({self.clusters})")
        if not 1 <= self.interests <= self.clusters:
            raise ValueError(f"interests must be in [1, clusters={self.clusters}], got {self.interests}")
        if not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"need 1 <= min_len <= max_len, got {self.min_len}, {self.max_len}")
        if not 1 <= self.period[0] <= self.period[1]:
            raise ValueError(f"need 1 <= period LO <= HI, got {self.period[0]}, {self.period[1]}")
        if self.session_len < 1 or not (0 <= self.recall <= 1 and 0 <= self.follow < 1):
            raise ValueError("need session_len >= 1, recall in [0, 1] and follow in [0, 1)")


def _session(rng: np.random.Generator, length: int, topic: int, ranks: np.ndarray, cfg: SynthConfig) -> np.ndarray:
    """Item ids (1-based) of one session in `topic`: fresh draws from the user's ranking, ring steps between."""
    size = cfg.items // cfg.clusters
    fresh = rng.random(length) >= cfg.follow
    fresh[0] = True
    draws = ranks[zipf_ranks(rng, size, cfg.zipf, length)]  # topic offsets
    last = np.maximum.accumulate(np.where(fresh, np.arange(length), 0))  # the latest fresh step at or before t
    offsets = (draws[last] + np.arange(length) - last) % size
    return topic * size + offsets + 1


@functools.cache
def _zipf_cdf(size: int, s: float) -> np.ndarray:
    """Cumulative Zipf(s) probabilities of ranks 1..size, without the final 1.0 (for searchsorted)."""
    w = 1.0 / np.arange(1, size + 1) ** s
    return np.cumsum(w / w.sum())[:-1]


def zipf_ranks(rng: np.random.Generator, size: int, s: float, shape: int | tuple[int, ...]) -> np.ndarray:
    """Ranks in [0, size) drawn with Zipf(s) probabilities, rank r weighing 1 / (r + 1)^s: the popularity of every
    synthetic log here, in the benchmarks and in the tests (add 1 for item ids)."""
    return np.searchsorted(_zipf_cdf(size, s), rng.random(shape), side="right")


def user_log(rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """One user's item sequence, in time order."""
    length = int(np.exp(rng.uniform(np.log(cfg.min_len), np.log(cfg.max_len + 1))))
    length = min(max(length, cfg.min_len), cfg.max_len)
    topics = rng.choice(cfg.clusters, size=cfg.interests, replace=False)
    cum_weights = np.cumsum(rng.dirichlet(np.ones(cfg.interests)))[:-1]
    size = cfg.items // cfg.clusters
    ranks = {int(t): rng.permutation(size) for t in topics}  # the user's favourite items first
    period = int(rng.integers(cfg.period[0], cfg.period[1] + 1))
    chunks: list[np.ndarray] = []
    history: list[int] = []  # topic of every session so far
    n = 0
    while n < length:
        if len(history) >= period and rng.random() < cfg.recall:
            topic = history[-period]
        else:
            topic = int(topics[np.searchsorted(cum_weights, rng.random(), side="right")])
        history.append(topic)
        k = min(int(rng.geometric(1.0 / cfg.session_len)), length - n)
        chunks.append(_session(rng, k, topic, ranks[topic], cfg))
        n += k
    return np.concatenate(chunks)


def generate(cfg: SynthConfig) -> list[np.ndarray]:
    """Every user's sequence; user u's log is element u-1. Seeded: one child generator per user."""
    seeds = np.random.SeedSequence(cfg.seed).spawn(cfg.users)
    return [user_log(np.random.default_rng(s), cfg) for s in seeds]


def write_log(path: Path, cfg: SynthConfig) -> Path:
    """Generate and write the pairs file (atomically) and its JSON sidecar PATH.json; returns the log path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write_pairs(tmp, enumerate(generate(cfg), start=1), compress=path.suffix == ".gz")
    os.replace(tmp, path)
    meta = path.with_name(path.name + ".json")
    meta.write_text(json.dumps({"generator": "longrec.data.synthetic", **asdict(cfg)}, indent=2) + "\n")
    return path


def write_pairs(path: Path, histories: Iterable[tuple[object, Sequence[int] | np.ndarray]],
                compress: bool | None = None) -> Path:
    """A "user item" pairs file, one line per event, each user's events in order: what `longrec data` reads as a
    log. compress (default: the name ends in .gz): gzip with no file name and mtime 0, so equal logs, equal bytes."""
    with open(path, "wb") as raw:
        packed = path.suffix == ".gz" if compress is None else compress
        sink: Any = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if packed else raw
        with io.TextIOWrapper(sink, encoding="ascii") as f:
            for u, seq in histories:
                f.write("".join(f"{u} {i}\n" for i in np.asarray(seq).tolist()))
    return path


def context_gain(
    seqs: list[np.ndarray], cfg: SynthConfig, windows: tuple[int, ...], last: int = 20, k: int = 10
) -> dict[int, float]:
    """Recall@k of a model-free predictor that sees only the newest W events, scored on each user's `last`
    final events: it proposes the ring successor of the previous item, then the items of the previous item's
    topic most frequent in the window, then the window's most frequent items. Rising with W means long context
    helps (a better estimate of the user's favourites within a topic)."""
    size = cfg.items // cfg.clusters
    out = {}
    for w in windows:
        hits = total = 0
        for seq in seqs:
            for t in range(max(1, len(seq) - last), len(seq)):
                prev = int(seq[t - 1]) - 1
                topic = prev // size
                ids, counts = np.unique(seq[max(0, t - w) : t], return_counts=True)
                in_topic = (ids - 1) // size == topic
                order = np.lexsort((-counts, ~in_topic))  # topic items first, each group by count
                succ = topic * size + (prev % size + 1) % size + 1
                top = [succ, *(int(i) for i in ids[order] if i != succ)][:k]
                hits += int(seq[t] in top)
                total += 1
        out[w] = hits / max(total, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="longrec synth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="pairs file to write (.gz to compress); PATH.json gets the parameters")
    d = SynthConfig()
    types = {"seed": argtypes.non_negative_int, "session_len": argtypes.float_in(1.0), "recall": argtypes.fraction,
             "follow": argtypes.fraction, "zipf": argtypes.non_negative_float}  # other numbers: positive ints
    for f, v in asdict(d).items():
        if f != "period":
            p.add_argument(f"--{f.replace('_', '-')}", type=types.get(f, argtypes.positive_int), default=v)
    p.add_argument("--period", type=argtypes.positive_int, nargs=2, default=list(d.period), metavar=("LO", "HI"))
    args = vars(p.parse_args(argv))
    out = args.pop("out")
    try:
        cfg = SynthConfig(**{**args, "period": tuple(args["period"])})
    except ValueError as e:
        p.error(str(e))
    write_log(out, cfg)
    print(out)


if __name__ == "__main__":
    main()
