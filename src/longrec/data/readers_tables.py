"""Readers of logs whose header names the columns (RecBole .inter, CSV/TSV, Parquet); ids are read as strings."""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from longrec.data.readers import Columns, RawLog, bad_line, open_text, parse_time, raw_log, text_lines
from longrec.errors import DataError


def check_columns(path: Path, header: Sequence[str], cols: Columns) -> None:
    """The header of a log holds the user, item and (if named) time columns, each once."""
    for c in (cols.user, cols.item, cols.time):
        if c and c not in header:
            raise DataError(f"{path}:1: missing column '{c}' (columns: {', '.join(header)})")
        if c and header.count(c) > 1:
            raise DataError(f"{path}:1: column '{c}' appears {header.count(c)} times in the header")


def _collect(path: Path, header: list[str], cols: Columns, rows: Iterator[tuple[int, list[str]]]) -> RawLog:
    """The user, item and time columns of (line number, fields) rows, each of the header's width."""
    check_columns(path, header, cols)
    iu, ii = header.index(cols.user), header.index(cols.item)
    it = header.index(cols.time) if cols.time else -1
    users: list[str] = []
    items: list[str] = []
    times: list[float] | None = [] if cols.time else None
    for lineno, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
        if not row[iu] or not row[ii]:
            raise DataError(f"{path}:{lineno}: empty '{cols.user}' or '{cols.item}' field")
        users.append(row[iu])
        items.append(row[ii])
        if times is not None:
            times.append(parse_time(row[it], path, lineno, cols.time))
    return raw_log(path, users, items, times)


def read_recbole(path: Path, cols: Columns) -> RawLog:
    """RecBole atomic .inter file: a `name:type` tab-separated header, then one row per interaction."""
    lines = text_lines(path)
    head = next((line.split("\t") for _, line in lines), None)
    if head is None:
        raise DataError(f"{path}: empty file")
    header = [h.split(":")[0] for h in head]
    types = dict(h.split(":", 1) for h in head if ":" in h)
    time = cols.time or ("timestamp" if "timestamp" in header else "")
    named = Columns(cols.user if cols.user != "user" else "user_id", cols.item if cols.item != "item" else "item_id",
                    time)
    if time and time in header and types.get(time) != "float":
        raise DataError(f"{path}:1: field '{time}' must be declared float, got '{types.get(time, '')}'")
    rows = ((lineno, line.split("\t")) for lineno, line in lines if line.strip())
    return _collect(path, header, named, rows)


def _csv_rows(path: Path, sep: str) -> Iterator[list[str]]:
    """The rows of a csv/tsv file (a BOM dropped, a binary file refused by name); read errors name the file."""
    try:
        with open_text(path) as f:
            yield from csv.reader(f, delimiter=sep)
    except (OSError, EOFError, zlib.error, csv.Error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{bad_line(path, 'utf-8')}: not valid utf-8 text ({e.reason})") from None


def read_header(path: Path, sep: str) -> list[str]:
    """The first row of a csv/tsv log."""
    header = next(_csv_rows(path, sep), None)
    if header is None:
        raise DataError(f"{path}: empty file")
    return header


def read_delimited(path: Path, cols: Columns, sep: str) -> RawLog:
    """CSV/TSV with a header row; ids are tokens (strings), the time column a number or ISO date."""
    rows = _csv_rows(path, sep)
    header = next(rows, None)
    if header is None:
        raise DataError(f"{path}: empty file")
    return _collect(path, header, cols, ((lineno, row) for lineno, row in enumerate(rows, 2) if row))


def read_csv(path: Path, cols: Columns) -> RawLog:
    return read_delimited(path, cols, ",")


def read_tsv(path: Path, cols: Columns) -> RawLog:
    return read_delimited(path, cols, "\t")


def read_parquet(path: Path, cols: Columns) -> RawLog:
    """Parquet log (needs pyarrow); ids are read as strings."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 'longrec[parquet]')") from None
    try:
        schema = pq.read_schema(path)
        names = [c for c in (cols.user, cols.item, cols.time) if c]
        for c in names:
            if c not in schema.names:
                raise DataError(f"{path}: missing column '{c}' (columns: {', '.join(schema.names)})")
        table = pq.read_table(path, columns=names)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Parquet ({e})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: no interactions found (empty table)")
    for c in names:
        if table.column(c).null_count:
            row = int(np.flatnonzero(table.column(c).is_null().to_numpy())[0])
            raise DataError(f"{path}: column '{c}' has a missing value at row {row + 1}")
    users = np.asarray(table.column(cols.user).cast("string").to_pylist())
    items = np.asarray(table.column(cols.item).cast("string").to_pylist())
    times = None
    if cols.time:
        try:
            times = np.asarray(table.column(cols.time).cast("float64").to_pylist(), dtype=np.float64)
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for casts
            raise DataError(f"{path}: column '{cols.time}' is not numeric ({e})") from None
    return RawLog(users, items, times)
