"""Batch recommendation from a run directory: top-k for its users (all, or listed) or for a new item list, with
external ids, written atomically to parquet, csv or jsonl."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from longrec.config import ExperimentConfig
from longrec.data.corpus import Corpus
from longrec.data.loader import history_windows, to_batch
from longrec.data.split import Splits
from longrec.errors import DataError, LongrecError
from longrec.scoring import Banned, Scorer, banned_pairs, top_k
from longrec.train.evaluate import history_index
from longrec.train.run import load_scorer
from longrec.train.runinfo import peak_memory_mib

FORMATS = ("parquet", "csv", "jsonl")
COLUMNS = ("user", "rank", "item", "score")


@dataclass(frozen=True)
class Request:
    """What to recommend: k items per user; keep_history None = the run's eval.mask_history decides; as_of "now"
    reads each user's whole history, "test" the test split's input (the history `longrec eval` ranks from)."""

    k: int = 10
    keep_history: bool | None = None
    as_of: str = "now"
    batch_size: int = 0  # users per batch; 0 = the run's eval.batch_size


def out_format(out: Path) -> str:
    fmt = out.suffix.lstrip(".")
    if fmt not in FORMATS:
        raise LongrecError(f"{out}: the output must end in .{', .'.join(FORMATS)}")
    return fmt


def read_user_file(path: Path, corpus: Corpus) -> np.ndarray:
    """Corpus indices of the external user ids in `path`, one a line (blank lines skipped)."""
    index = {str(u): i for i, u in enumerate(corpus.user_ids.tolist())}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    out: list[int] = []
    for n, line in enumerate(lines, 1):
        if not (user := line.strip()):
            continue
        if user not in index:
            raise DataError(f"{path}:{n}: unknown user {user!r} (not in the run's corpus)")
        out.append(index[user])
    if not out:
        raise DataError(f"{path}: no user ids")
    return np.asarray(out, dtype=np.int64)


def _rows(scorer: Scorer, corpus: Corpus, users: np.ndarray, ends: np.ndarray, req: Request,
          chunk: int) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(users, scores [B,k'], items [B,k']) per batch of users; history items banned unless req.keep_history
    (resolved by the caller: not None)."""
    bs, device, keep = req.batch_size, scorer.device, bool(req.keep_history)
    for i in range(0, len(users), bs):
        u, e = users[i : i + bs], ends[i : i + bs]
        items, times = history_windows(corpus, u, e, scorer.max_len, scorer.mask_token)
        b = to_batch(items, np.zeros_like(items), u, times).to(device)
        banned: Banned = banned_pairs([], device)
        if not keep:
            hr, hi = history_index(corpus, u, e)
            banned = (torch.from_numpy(hr).to(device), torch.from_numpy(hi).to(device))
        with torch.no_grad():
            query = scorer.encode(b.items, b.mask, b.times)
            v, idx = top_k(scorer, query, req.k, banned, chunk)
        yield u, v.cpu(), idx.cpu()


class _Writer:
    """Rows to a temporary file beside `out`, renamed onto it by `commit`: readers never see half a file."""

    def __init__(self, out: Path) -> None:
        self.out, self.fmt = out, out_format(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
        os.close(fd)
        self.tmp = Path(tmp)
        self._pq: Any = None
        self._text = None if self.fmt == "parquet" else open(self.tmp, "w", newline="")  # noqa: SIM115
        if self.fmt == "csv" and self._text is not None:
            csv.writer(self._text).writerow(COLUMNS)

    def write(self, cols: dict[str, list[Any]]) -> None:
        if self.fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            t = pa.table({"user": pa.array(cols["user"], pa.string()), "rank": pa.array(cols["rank"], pa.int32()),
                          "item": pa.array(cols["item"], pa.string()), "score": pa.array(cols["score"], pa.float32())})
            self._pq = self._pq or pq.ParquetWriter(str(self.tmp), t.schema)
            self._pq.write_table(t)
            return
        assert self._text is not None
        rows = zip(*(cols[c] for c in COLUMNS), strict=True)
        if self.fmt == "csv":
            csv.writer(self._text).writerows(rows)
        else:
            buf = io.StringIO()
            for r in rows:
                buf.write(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n")
            self._text.write(buf.getvalue())

    def commit(self) -> None:
        if self.fmt == "parquet":
            if self._pq is None:
                self.write({c: [] for c in COLUMNS})
            self._pq.close()
        else:
            assert self._text is not None
            self._text.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._text is not None:
            self._text.close()
        self.tmp.unlink(missing_ok=True)


def _load(run_dir: Path, req: Request) -> tuple[ExperimentConfig, Scorer, Splits, Request]:
    """The run's config, scorer and splits, and `req` resolved against the run: keep_history from its
    eval.mask_history where the request leaves it open, batch_size from its eval.batch_size where 0."""
    if req.k < 1:
        raise LongrecError(f"--k must be at least 1, got {req.k}")
    cfg, scorer, splits = load_scorer(run_dir)
    keep = (not cfg.eval.mask_history) if req.keep_history is None else req.keep_history
    return cfg, scorer, splits, Request(req.k, keep, req.as_of, req.batch_size or cfg.eval.batch_size)


def recommend_users(run_dir: Path, users: str, out: Path, req: Request) -> dict[str, Any]:
    """Top-k of every user of the run (users="all") or of those listed in the file `users`, written to `out`
    (.parquet/.csv/.jsonl: columns user, rank, item, score); returns counts, seconds and peak memory."""
    t0 = time.time()
    out_format(out)  # before any work
    cfg, scorer, splits, req = _load(run_dir, req)
    corpus, keep = splits.corpus, bool(req.keep_history)
    if req.as_of == "test":
        pos = {int(u): r for r, u in enumerate(splits.test.users.tolist())}
        rows = np.arange(len(splits.test)) if users == "all" else _test_rows(Path(users), corpus, pos)
        ids, ends = splits.test.users[rows], splits.test.ends[rows]
    else:
        ids = np.arange(corpus.num_users) if users == "all" else read_user_file(Path(users), corpus)
        ends = corpus.lengths[ids]
    device = scorer.device
    writer = _Writer(out)
    n_rows = 0
    try:
        bar = tqdm(total=len(ids), desc="recommend", unit="user", file=sys.stderr,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)
        for u, v, idx in _rows(scorer, corpus, ids, ends, req, cfg.eval.item_chunk):
            cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
            for user, scores, items in zip(u.tolist(), v.tolist(), idx.tolist(), strict=True):
                kept = [(i, s) for i, s in zip(items, scores, strict=True) if s != float("-inf")]
                cols["user"] += [str(corpus.user_ids[user])] * len(kept)
                cols["rank"] += list(range(1, len(kept) + 1))
                cols["item"] += [str(corpus.item_ids[i]) for i, _ in kept]
                cols["score"] += [s for _, s in kept]
            n_rows += len(cols["user"])
            writer.write(cols)
            bar.update(len(u))
        bar.close()
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return {"users": len(ids), "rows": n_rows, "history": "kept" if keep else "excluded",
            "seconds": time.time() - t0, "peak_memory": peak_memory_mib(device)}


def _test_rows(path: Path, corpus: Corpus, pos: dict[int, int]) -> np.ndarray:
    users = read_user_file(path, corpus)
    if missing := [str(corpus.user_ids[u]) for u in users.tolist() if u not in pos]:
        raise DataError(f"{path}: user {missing[0]!r} has no test row ({len(missing)} such users)")
    return np.asarray([pos[u] for u in users.tolist()], dtype=np.int64)


def recommend_history(run_dir: Path, history: list[str], req: Request) -> list[tuple[int, str, float]]:
    """(rank, item, score) of the top-k for a new user whose items (external ids, oldest first) are `history`."""
    cfg, scorer, splits, req = _load(run_dir, dataclasses.replace(req, batch_size=1))
    corpus = splits.corpus
    index = {str(raw): i for i, raw in enumerate(corpus.item_ids.tolist()) if i > 0}
    if unknown := [x for x in history if x not in index]:
        raise DataError(f"--history: unknown item id {unknown[0]!r} ({len(unknown)} of {len(history)} not in the "
                        "run's catalogue)")
    one = Corpus.from_seqs([[index[x] for x in history]], corpus.num_items)
    _, v, idx = next(_rows(scorer, one, np.zeros(1, dtype=np.int64), one.lengths, req, cfg.eval.item_chunk))
    kept = [(i, s) for i, s in zip(idx[0].tolist(), v[0].tolist(), strict=True) if s != float("-inf")]
    return [(r, str(corpus.item_ids[i]), s) for r, (i, s) in enumerate(kept, 1)]
