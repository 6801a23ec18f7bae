"""Large logs: Parquet/CSV/TSV -> memory-mapped Corpus in bounded memory (two passes over the log, then a
bucketed CSR fill), giving the same Corpus as `build_corpus(read_log(...))`.

Pass 1 reads the id columns block by block (Parquet record batches, CSV blocks) and keeps only the distinct
user and item ids. Pass 2 maps each block to dense ids and appends (user, item, time) to flat temporary files.
The CSR arrays are then filled one range of users at a time (at most `part_events` events in memory), each
range sorted stably by (user, time), and appended to .npy files that `Corpus.load_dir` memory-maps. Peak memory
is O(distinct ids + block + part_events) plus the Parquet reader's buffers for one row group, not O(events):
the events live on disk and in the page cache (docs/BENCHMARKS.md, `python -m benchmarks.large_log`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from longrec.data.corpus import Corpus
from longrec.data.datasets import cache_dir, resolve, sha256_of
from longrec.data.prepare import build_corpus
from longrec.data.readers import Columns, detect_format, read_log
from longrec.data.readers_tables import check_columns, read_header
from longrec.errors import DataError

STREAMED = ("csv", "tsv", "parquet")
MMAP_CACHE_VERSION = 1  # bump when the .npy layout or the preparation changes


def _blocks(path: Path, fmt: str, cols: Columns, rows: int) -> Iterator[tuple[Any, Any, Any]]:
    """(users, items, times-or-None) pyarrow arrays, about `rows` rows at a time, ids as strings."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    names = [c for c in (cols.user, cols.item, cols.time) if c]
    try:
        if fmt == "parquet":
            f = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)  # buffered column reads: less memory
            missing = [c for c in names if c not in f.schema_arrow.names]
            if missing:
                raise DataError(f"{path}: missing column '{missing[0]}' (columns: {', '.join(f.schema_arrow.names)})")
            batches: Iterator[Any] = f.iter_batches(batch_size=rows, columns=names)
        else:
            check_columns(path, read_header(path, "," if fmt == "csv" else "\t"), cols)
            batches = pacsv.open_csv(
                path, read_options=pacsv.ReadOptions(block_size=max(rows * 32, 1 << 16)),
                parse_options=pacsv.ParseOptions(delimiter="," if fmt == "csv" else "\t"),
                convert_options=pacsv.ConvertOptions(include_columns=names, column_types={
                    cols.user: pa.string(), cols.item: pa.string(), **({cols.time: pa.string()} if cols.time else {})}))
        for b in batches:
            users, items = (b.column(c).cast(pa.string()) for c in (cols.user, cols.item))
            yield users, items, b.column(cols.time) if cols.time else None
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read {fmt} ({str(e).splitlines()[0]})") from None


def _check(path: Path, name: str, col: Any, row0: int) -> None:
    """No nulls, and no empty ids."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = pc.fill_null(pc.equal(col, ""), True) if col.type == pa.string() else pc.is_null(col)
    if pc.any(bad).as_py():
        row = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: column '{name}' has a missing value at row {row0 + row + 1}")


def _seconds(path: Path, name: str, col: Any) -> np.ndarray:
    """Numbers as they are; ISO dates (a zone offset, or none = UTC) as seconds since the epoch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(col.type):
        col = pc.cast(col, pa.timestamp("us", tz=col.type.tz))
    for target in (pa.float64(), pa.timestamp("us"), pa.timestamp("us", tz="UTC")):
        try:
            out = pc.cast(col, target) if col.type != target else col
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        values = out.cast(pa.int64()).to_numpy() / 1e6 if target != pa.float64() else out.to_numpy()
        if not np.isfinite(values).all():
            raise DataError(f"{path}: column '{name}' must hold finite numbers")
        return values.astype(np.float64)
    raise DataError(f"{path}: column '{name}' must be numbers or ISO dates")


def _dense_order(uniq: Any) -> tuple[Any, np.ndarray, np.ndarray]:
    """(the distinct ids, the dense id of each, the raw ids in dense order), ordered as `remap_ids` orders them:
    numerically when every id is a canonical integer of at most 18 digits, else as strings (UTF-8 byte order
    is code-point order, as numpy sorts). Computed in Arrow, without a Python object per id."""
    import pyarrow as pa
    import pyarrow.compute as pc

    numeric = pc.all(pc.match_substring_regex(uniq, r"^(0|[1-9][0-9]{0,17})$")).as_py()
    order = pc.sort_indices(pc.cast(uniq, pa.int64()) if numeric else uniq).to_numpy()  # dense id -> index
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    ordered = uniq.take(order)
    step = 1 << 16  # a numpy str array, converted a slice at a time
    raw = [np.asarray(ordered.slice(s, step).to_numpy(zero_copy_only=False)).astype(str)
           for s in range(0, len(ordered), step)]
    return uniq, rank, np.concatenate(raw)


def _write_npy(path: Path, dtype: str, n: int) -> IO[bytes]:
    """An open .npy file of shape (n,) with its header written; the caller appends the data."""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": (n,)})
    return f


def prepare_streaming(path: Path, fmt: str, cols: Columns, out: Path, rows: int = 1 << 19,
                      part_events: int = 1 << 20) -> Corpus:
    """Prepare a csv/tsv/parquet log into the .npy directory `out` and return it memory-mapped.
    rows: log rows read per block; part_events: events sorted in memory at once."""
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:
        hint = "pip install 'longrec[parquet]'"
        raise DataError(f"{path}: data.mmap reads csv/tsv/parquet with pyarrow ({hint})") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    users_u, items_u = pa.array([], pa.string()), pa.array([], pa.string())
    total = 0
    for u, i, t in _blocks(path, fmt, cols, rows):  # pass 1: the distinct ids
        for name, col in ((cols.user, u), (cols.item, i), (cols.time, t)):
            if col is not None:
                _check(path, name, col, total)
        users_u = pc.unique(pa.concat_arrays([users_u, pc.unique(u)]))
        items_u = pc.unique(pa.concat_arrays([items_u, pc.unique(i)]))
        total += len(u)
    if total == 0:
        raise DataError(f"{path}: no interactions found (empty table)")
    users_set, user_rank, user_ids = _dense_order(users_u)
    items_set, item_rank, item_ids = _dense_order(items_u)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=out.name, suffix=".tmp"))
    try:
        has_time = bool(cols.time)
        with open(tmp / "u.bin", "wb") as fu, open(tmp / "i.bin", "wb") as fi, open(tmp / "t.bin", "wb") as ft:
            for u, i, t in _blocks(path, fmt, cols, rows):  # pass 2: dense ids, appended in log order
                fu.write(user_rank[pc.index_in(u, value_set=users_set).to_numpy()].astype(np.int32).tobytes())
                fi.write(item_rank[pc.index_in(i, value_set=items_set).to_numpy()].astype(np.int32).tobytes())
                if has_time:
                    ft.write(_seconds(path, cols.time, t).tobytes())
        offsets = _fill_csr(tmp, total, len(user_ids), has_time, part_events)
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "user_ids.npy", user_ids)
        np.save(tmp / "item_ids.npy", np.concatenate([np.array(["<pad>"]), item_ids]))
        for name in ("u.bin", "i.bin", "t.bin"):
            (tmp / name).unlink()
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Corpus.load_dir(out)


def _chunks(tmp: Path, total: int, has_time: bool,
            step: int = 1 << 20) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """(users, items, times-or-None) of the flat event files, `step` events at a time."""
    for s in range(0, total, step):
        n = min(step, total - s)
        u = np.fromfile(tmp / "u.bin", dtype=np.int32, count=n, offset=4 * s)
        i = np.fromfile(tmp / "i.bin", dtype=np.int32, count=n, offset=4 * s)
        t = np.fromfile(tmp / "t.bin", dtype=np.float64, count=n, offset=8 * s) if has_time else None
        yield u, i, t


def _fill_csr(tmp: Path, total: int, n_users: int, has_time: bool, part_events: int) -> np.ndarray:
    """Write items.npy (and times.npy): each user's events in time order (file order breaks ties); returns offsets."""
    counts = np.zeros(n_users, dtype=np.int64)
    for u, _, _ in _chunks(tmp, total, False):
        counts += np.bincount(u, minlength=n_users)
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    fi = _write_npy(tmp / "items.npy", "<i4", total)
    ft = _write_npy(tmp / "times.npy", "<f8", total) if has_time else None
    try:
        a = 0
        while a < n_users:  # users a..b-1 hold at most part_events events (or are one user)
            b = max(int(np.searchsorted(offsets, offsets[a] + part_events, side="right")) - 1, a + 1)
            us, its, ts = [], [], []
            for u, i, t in _chunks(tmp, total, has_time):
                sel = (u >= a) & (u < b)
                us.append(u[sel])
                its.append(i[sel])
                if t is not None:
                    ts.append(t[sel])
            uu, ii = np.concatenate(us), np.concatenate(its)
            tt = np.concatenate(ts) if has_time else None
            order = np.lexsort((tt, uu)) if tt is not None else np.argsort(uu, kind="stable")
            fi.write((ii[order] + 1).astype(np.int32).tobytes())
            if ft is not None and tt is not None:
                ft.write(tt[order].tobytes())
            a = b
    finally:
        fi.close()
        if ft is not None:
            ft.close()
    return offsets


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished directory into place; a concurrent twin that got there first wins."""
    try:
        os.replace(tmp, out)
    except OSError:
        if not (out / "items.npy").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def load_large_corpus(name: str, fmt: str = "auto", cols: Columns | None = None, dedup: bool = False,
                      kcore: int = 0) -> Corpus:
    """A memory-mapped Corpus cached as .npy files: csv/tsv/parquet logs prepared in bounded memory, other
    formats read whole once. The cache is keyed like `load_corpus`'s."""
    path, ds = resolve(name)
    cols = cols or Columns()
    fmt = ds.format if (ds and fmt == "auto") else (detect_format(path) if fmt == "auto" else fmt)
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, fmt, cols.user, cols.item, cols.time,
                      dedup, kcore, MMAP_CACHE_VERSION])
    out = cache_dir() / "corpus" / f"{path.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npydir"
    if (out / "items.npy").is_file():
        return Corpus.load_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if ds is not None and (digest := sha256_of(path)) != ds.sha256:
        raise DataError(f"{path}: sha256 {digest} does not match the {ds.name} dataset ({ds.sha256})")
    if fmt in STREAMED:
        if dedup or kcore:
            raise DataError(f"{path}: data.dedup and data.kcore are not supported with data.mmap (filter the log "
                            "first, or prepare it in memory with data.mmap=false)")
        print(f"data: streaming {path} into {out}", file=sys.stderr)
        return prepare_streaming(path, fmt, cols, out)
    corpus = build_corpus(read_log(path, fmt, cols), dedup=dedup, kcore=kcore, source=str(path))
    corpus.save_dir(out)
    return Corpus.load_dir(out)
