"""Large logs: streamed preparation equals the in-memory one; the memory-mapped corpus trains like the loaded one."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from longrec.config import load_config
from longrec.data import mmap_corpus
from longrec.data.corpus import Corpus
from longrec.data.loader import train_item_counts
from longrec.data.prepare import build_corpus
from longrec.data.readers import Columns, read_log
from longrec.data.split import leave_one_out
from longrec.errors import DataError
from longrec.objectives.next_item import next_item_batches
from longrec.train.loop import fit
from tests_helpers import synthetic_log


def log_rows(n: int = 300, seed: int = 0) -> dict[str, list]:
    """Interleaved users, string ids where '7' and '007' differ, many timestamp ties, out-of-order times."""
    rng = np.random.default_rng(seed)
    users = [f"u{x}" for x in rng.integers(0, 23, n)]
    items = [["7", "007", "x", "12", "3"][x] if x < 5 else str(x) for x in rng.integers(0, 40, n)]
    times = rng.integers(0, 30, n).astype(float).tolist()
    return {"user": users, "item": items, "ts": times}


def assert_same_corpus(a: Corpus, b: Corpus) -> None:
    for name in ("items", "offsets", "user_ids", "item_ids"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    if a.times is None or b.times is None:
        assert a.times is None and b.times is None
    else:
        np.testing.assert_array_equal(np.asarray(a.times), np.asarray(b.times))


def write_parquet(path: Path, rows: dict[str, list], group: int = 50) -> Path:
    pq.write_table(pa.table(rows), path, row_group_size=group)
    return path


@pytest.mark.parametrize("time_col", ["ts", ""], ids=["timed", "file-order"])
def test_streamed_parquet_equals_the_in_memory_preparation(tmp_path: Path, time_col: str) -> None:
    path = write_parquet(tmp_path / "log.parquet", log_rows())
    cols = Columns("user", "item", time_col)
    got = mmap_corpus.prepare_streaming(path, "parquet", cols, tmp_path / "out", rows=17, part_events=40)
    assert isinstance(got.items, np.memmap) and isinstance(got.offsets, np.memmap)
    assert_same_corpus(got, build_corpus(read_log(path, "parquet", cols)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.parquet", "out"]  # no temporary left


def test_streamed_parquet_with_integer_ids_sorts_them_numerically(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = {"user": rng.integers(1, 30, 200).tolist(), "item": rng.integers(1, 1000, 200).tolist(),
            "ts": rng.integers(0, 10, 200).tolist()}
    path = write_parquet(tmp_path / "ints.parquet", rows)
    cols = Columns("user", "item", "ts")
    got = mmap_corpus.prepare_streaming(path, "parquet", cols, tmp_path / "out", rows=33, part_events=25)
    assert_same_corpus(got, build_corpus(read_log(path, "parquet", cols)))
    assert got.item_ids[1:].astype(int).tolist() == sorted(got.item_ids[1:].astype(int).tolist())


@pytest.mark.parametrize("fmt", ["csv", "tsv", "csv.gz"])
def test_streamed_csv_and_tsv_with_iso_dates_equal_the_in_memory_preparation(tmp_path: Path, fmt: str) -> None:
    rows = log_rows(120, seed=2)
    sep = "\t" if fmt == "tsv" else ","
    dates = [f"2020-01-{int(t) % 28 + 1:02d}T10:00:{int(t) % 60:02d}" for t in rows["ts"]]
    text = f"user{sep}item{sep}when\n" + "".join(f"{u}{sep}{i}{sep}{d}\n"
                                                for u, i, d in zip(rows["user"], rows["item"], dates, strict=True))
    path = tmp_path / f"log.{fmt}"
    if fmt.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    base = fmt.removesuffix(".gz")
    cols = Columns("user", "item", "when")
    got = mmap_corpus.prepare_streaming(path, base, cols, tmp_path / "out", rows=8, part_events=30)
    assert_same_corpus(got, build_corpus(read_log(path, base, cols)))


def test_memory_mapped_corpus_gives_the_same_splits_batches_and_counts(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "log.parquet", log_rows())
    cols = Columns("user", "item", "ts")
    mapped = mmap_corpus.prepare_streaming(path, "parquet", cols, tmp_path / "out")
    loaded = build_corpus(read_log(path, "parquet", cols))
    a, b = leave_one_out(mapped), leave_one_out(loaded)
    np.testing.assert_array_equal(a.train_ends, b.train_ends)
    for x, y in zip(next_item_batches(a, 8, 16, np.random.default_rng(0)),
                    next_item_batches(b, 8, 16, np.random.default_rng(0)), strict=True):
        assert x.items.equal(y.items) and x.targets.equal(y.targets)
    counts = train_item_counts(a, block=7)  # blocks smaller than some users' histories
    expected = np.bincount(np.concatenate([loaded.seq(u)[:e] for u, e in enumerate(b.train_ends)]),
                           minlength=loaded.num_items + 1)
    np.testing.assert_array_equal(counts, expected)


def test_load_large_corpus_caches_and_handles_other_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    path = write_parquet(tmp_path / "log.parquet", log_rows())
    calls = []
    real = mmap_corpus.prepare_streaming
    monkeypatch.setattr(mmap_corpus, "prepare_streaming", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = mmap_corpus.load_large_corpus(str(path), "auto", Columns("user", "item", "ts"))
    again = mmap_corpus.load_large_corpus(str(path), "auto", Columns("user", "item", "ts"))
    assert len(calls) == 1 and isinstance(again.items, np.memmap)
    assert_same_corpus(first, again)
    pairs = synthetic_log(tmp_path / "walk.txt", users=5)  # not streamed: read whole once, then cached as .npy
    got = mmap_corpus.load_large_corpus(str(pairs))
    assert isinstance(got.items, np.memmap)
    assert_same_corpus(got, build_corpus(read_log(pairs)))
    with pytest.raises(DataError, match="not supported with data.mmap"):
        mmap_corpus.load_large_corpus(str(path), "auto", Columns("user", "item", "ts"), kcore=2)


def test_streamed_input_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    rows = log_rows(30)
    path = write_parquet(tmp_path / "log.parquet", rows)
    with pytest.raises(DataError, match="missing column 'when'"):
        mmap_corpus.prepare_streaming(path, "parquet", Columns("user", "item", "when"), tmp_path / "a")
    bad = dict(rows, item=[*rows["item"][:20], None, *rows["item"][21:]])
    path = write_parquet(tmp_path / "null.parquet", bad, group=7)
    with pytest.raises(DataError, match="column 'item' has a missing value at row 21"):
        mmap_corpus.prepare_streaming(path, "parquet", Columns("user", "item"), tmp_path / "b", rows=7)
    csv = tmp_path / "bad.csv"
    csv.write_text("user,item,ts\n1,2,3\n1,,4\n")
    with pytest.raises(DataError, match="column 'item' has a missing value at row 2"):
        mmap_corpus.prepare_streaming(csv, "csv", Columns("user", "item", "ts"), tmp_path / "c")
    csv.write_text("user,item,ts\n1,2,3\n1,3,soon\n")
    with pytest.raises(DataError, match="numbers or ISO dates"):
        mmap_corpus.prepare_streaming(csv, "csv", Columns("user", "item", "ts"), tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "log.parquet", "null.parquet"]


def test_training_on_the_memory_mapped_corpus_matches_the_loaded_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 40, 60)
    rows = {"user": np.repeat(np.arange(60), 12).tolist(),
            "item": ((starts[:, None] + np.arange(12)) % 40 + 1).ravel().tolist()}
    path = write_parquet(tmp_path / "walk.parquet", rows)
    common = [f"data.name={path}", "model.dim=16", "model.max_len=10", "train.batch_size=16", "train.epochs=2",
              "model.dropout=0.0", "eval.batch_size=32"]
    loaded = fit(load_config("sasrec", common), tmp_path / "loaded")
    mapped = fit(load_config("sasrec", [*common, "data.mmap=true"]), tmp_path / "mapped")
    assert mapped["test"] == loaded["test"]
