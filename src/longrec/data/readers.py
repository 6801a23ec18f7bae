"""Readers: raw interaction logs of every supported format -> RawLog (user, item, optional time) arrays."""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

from longrec.errors import DataError


@dataclass(frozen=True)
class RawLog:
    """One row per interaction, in file order. users/items: [M] str or int64; times: [M] float64 or None."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray | None


@dataclass(frozen=True)
class Columns:
    """Column names for tabular logs (csv, tsv, parquet); time is optional."""

    user: str = "user"
    item: str = "item"
    time: str = ""


BINARY_MAGIC = {b"PAR1": "a Parquet file (read it with --format parquet)", b"PK\x03\x04": "a zip archive",
                b"\x1f\x8b": "gzip-compressed (name it .gz)"}


def refuse_binary(path: Path, head: bytes) -> None:
    """A DataError naming what the file is when its first bytes are a known binary format's magic."""
    for magic, what in BINARY_MAGIC.items():
        if head.startswith(magic):
            raise DataError(f"{path}: not a text log: it is {what}")


def open_text(path: Path, encoding: str = "utf-8") -> TextIO:
    """Open a text file, gunzipping transparently when it ends in .gz; a UTF-8 byte-order mark (Excel's CSV) is
    dropped, and a binary file (Parquet, zip) is refused by name."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    encoding = "utf-8-sig" if encoding == "utf-8" else encoding
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="strict", newline="")
    with open(path, "rb") as f:
        refuse_binary(path, f.read(4))
    return open(path, encoding=encoding, newline="")


def _bad_line(path: Path, encoding: str) -> int:
    """1-based number of the first line that does not decode. Text files decode in 8 KiB blocks, so the
    line being read when the error is raised can be hundreds of lines before the bad byte."""
    lineno = 0
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError:
                return lineno
    return lineno + 1


def _lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); decoding and gzip errors name the file."""
    try:
        with open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{_bad_line(path, encoding)}: not valid {encoding} text ({e.reason})") from None


def detect_format(path: Path) -> str:
    """Guess the format from the file name, sniffing .txt files (2 fields a line = pairs; 3 on every line is refused:
    ratings or times, not item lists)."""
    name = path.name.removesuffix(".gz")
    for ext, fmt in ((".inter", "recbole"), (".dat", "grouplens"), (".csv", "csv"), (".tsv", "tsv"),
                     (".parquet", "parquet")):
        if name.endswith(ext):
            return fmt
    widths: list[int] = []
    for lineno, line in _lines(path):
        if line.strip():
            widths.append(len(line.split()))
        if lineno >= 200:
            break
    if not widths:
        raise DataError(f"{path}: empty file")
    if set(widths) == {3}:  # 'user item rating' or 'user item time' rows, not lists of 2 items: refuse to guess
        raise DataError(f"{path}: every line has 3 fields (user item rating? user item time?): give --format "
                        "(data.format): lines for 'user item1 item2' lists, or csv/tsv with a header")
    # mostly two fields: pairs (a stray malformed line then fails loudly instead of flipping the format)
    return "pairs" if widths.count(2) >= 0.9 * len(widths) else "lines"


def _int(token: str, path: Path, lineno: int, field: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(f"{path}:{lineno}: field '{field}' must be an integer id, got {token!r}") from None


def _time(token: str, path: Path, lineno: int, field: str) -> float:
    """Seconds since the epoch; an ISO date without a zone is read as UTC, so results do not depend on $TZ."""
    try:
        t = float(token)
    except ValueError:
        try:
            dt = datetime.fromisoformat(token)
        except ValueError:
            raise DataError(f"{path}:{lineno}: field '{field}' must be a number or ISO date, got {token!r}") from None
        t = (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    if not math.isfinite(t):
        raise DataError(f"{path}:{lineno}: field '{field}' must be a finite number, got {token!r}")
    return t


def _finish(path: Path, users: list, items: list, times: list[float] | None) -> RawLog:
    if not users:
        raise DataError(f"{path}: no interactions found (empty file?)")
    u, i = np.asarray(users), np.asarray(items)
    return RawLog(u, i, None if times is None else np.asarray(times, dtype=np.float64))


def read_pairs(path: Path) -> RawLog:
    """SASRec style: one `user item` line per interaction, integer ids, lines in time order."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{path}:{lineno}: expected 2 fields 'user item', got {len(parts)}: {line[:80]!r}")
        users.append(_int(parts[0], path, lineno, "user"))
        items.append(_int(parts[1], path, lineno, "item"))
    return _finish(path, users, items, None)


def read_lines(path: Path) -> RawLog:
    """S3-Rec style: one `user item1 item2 ...` line per user, integer ids, items in time order."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in _lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2:
            raise DataError(f"{path}:{lineno}: expected 'user item1 item2 ...', got only {line[:80]!r}")
        u = _int(parts[0], path, lineno, "user")
        for tok in parts[1:]:
            items.append(_int(tok, path, lineno, "item"))
        users.extend([u] * (len(parts) - 1))
    return _finish(path, users, items, None)


def read_grouplens(path: Path) -> RawLog:
    """GroupLens ratings.dat: `UserID::MovieID::Rating::Timestamp`."""
    users: list[int] = []
    items: list[int] = []
    times: list[float] = []
    for lineno, line in _lines(path, encoding="latin-1"):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 'user::item::rating::timestamp', got {line[:80]!r}")
        users.append(_int(parts[0], path, lineno, "user"))
        items.append(_int(parts[1], path, lineno, "item"))
        times.append(_time(parts[3], path, lineno, "timestamp"))
    return _finish(path, users, items, times)


def read_recbole(path: Path, cols: Columns) -> RawLog:
    """RecBole atomic .inter file: a `name:type` tab-separated header, then one row per interaction."""
    rows = _lines(path)
    header = next((line for _, line in rows), None)
    if header is None:
        raise DataError(f"{path}: empty file")
    fields = [h.split(":")[0] for h in header.split("\t")]
    types = [h.split(":")[1] if ":" in h else "" for h in header.split("\t")]
    user_col = cols.user if cols.user != "user" else "user_id"
    item_col = cols.item if cols.item != "item" else "item_id"
    time_col = cols.time or ("timestamp" if "timestamp" in fields else "")
    for name in (user_col, item_col, time_col):
        if name and name not in fields:
            raise DataError(f"{path}:1: header has no field '{name}' (fields: {', '.join(fields)})")
        if fields.count(name) > 1:
            raise DataError(f"{path}:1: field '{name}' appears {fields.count(name)} times in the header")
    iu, ii = fields.index(user_col), fields.index(item_col)
    it = fields.index(time_col) if time_col else -1
    if it >= 0 and types[it] != "float":
        raise DataError(f"{path}:1: field '{time_col}' must be declared float, got '{types[it]}'")
    users: list[str] = []
    items: list[str] = []
    times: list[float] | None = [] if it >= 0 else None
    for lineno, line in rows:
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(fields):
            raise DataError(f"{path}:{lineno}: expected {len(fields)} tab-separated fields, got {len(parts)}")
        if not parts[iu] or not parts[ii]:
            raise DataError(f"{path}:{lineno}: empty '{user_col}' or '{item_col}' field")
        users.append(parts[iu])
        items.append(parts[ii])
        if times is not None:
            times.append(_time(parts[it], path, lineno, time_col))
    return _finish(path, users, items, times)


def read_delimited(path: Path, cols: Columns, sep: str) -> RawLog:
    """CSV/TSV with a header row; ids are tokens (strings), the time column a number or ISO date."""
    def rows() -> Iterator[list[str]]:
        with open_text(path) as f:
            yield from csv.reader(f, delimiter=sep)

    it = iter(_guard(path, rows()))
    header = next(it, None)
    if header is None:
        raise DataError(f"{path}: empty file")
    check_columns(path, header, cols)
    iu, ii = header.index(cols.user), header.index(cols.item)
    itime = header.index(cols.time) if cols.time else -1
    users: list[str] = []
    items: list[str] = []
    times: list[float] | None = [] if cols.time else None
    for lineno, row in enumerate(it, 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: expected {len(header)} fields, got {len(row)}")
        if not row[iu] or not row[ii]:
            raise DataError(f"{path}:{lineno}: empty '{cols.user}' or '{cols.item}' field")
        users.append(row[iu])
        items.append(row[ii])
        if times is not None:
            times.append(_time(row[itime], path, lineno, cols.time))
    return _finish(path, users, items, times)


def check_columns(path: Path, header: list[str], cols: Columns) -> None:
    """The header of a csv/tsv log holds the user, item and (if named) time columns, each once."""
    for c in (cols.user, cols.item, cols.time):
        if c and c not in header:
            raise DataError(f"{path}:1: missing column '{c}' (columns: {', '.join(header)})")
        if c and header.count(c) > 1:
            raise DataError(f"{path}:1: column '{c}' appears {header.count(c)} times in the header")


def read_header(path: Path, sep: str) -> list[str]:
    """The first row of a csv/tsv log (a BOM dropped, a binary file refused by name)."""
    def rows() -> Iterator[list[str]]:
        with open_text(path) as f:
            yield from csv.reader(f, delimiter=sep)

    header = next(iter(_guard(path, rows())), None)
    if header is None:
        raise DataError(f"{path}: empty file")
    return header


def _guard(path: Path, rows: Iterator[list[str]]) -> Iterator[list[str]]:
    try:
        yield from rows
    except (OSError, EOFError, zlib.error, csv.Error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{_bad_line(path, 'utf-8')}: not valid utf-8 text ({e.reason})") from None


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


def _sibling(module: str, name: str) -> Callable[[Path, Columns], RawLog]:
    """A reader from a sibling module, imported on first use: those modules import this one."""
    return lambda p, c: getattr(importlib.import_module(f"longrec.data.{module}"), name)(p, c)


READERS: dict[str, Callable[[Path, Columns], RawLog]] = {
    "pairs": lambda p, c: read_pairs(p),
    "lines": lambda p, c: read_lines(p),
    "grouplens": lambda p, c: read_grouplens(p),
    "recbole": read_recbole,
    "csv": lambda p, c: read_delimited(p, c, ","),
    "tsv": lambda p, c: read_delimited(p, c, "\t"),
    "parquet": read_parquet,
    "user-problem-skill-correct": _sibling("readers_columns", "read_user_problem_skill_correct"),
    "gowalla-tsv": _sibling("readers_columns", "read_gowalla_tsv"),
    "user-item-minute": _sibling("readers_columns", "read_user_item_minute"),
    "jodie": _sibling("readers_columns", "read_jodie"),
    "lastfm-1k": _sibling("readers_archives", "read_lastfm_1k"),
    "kuairand": _sibling("readers_archives", "read_kuairand"),
    "movielens-csv": _sibling("readers_archives", "read_movielens_csv"),
}
FORMATS = tuple(READERS)


def read_log(path: Path, fmt: str = "auto", cols: Columns | None = None) -> RawLog:
    """Read any supported log; `fmt='auto'` guesses from the file name and content."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in READERS:
        raise DataError(f"{path}: unknown format '{fmt}' (known: auto, {', '.join(FORMATS)})")
    return READERS[fmt](path, cols or Columns())
