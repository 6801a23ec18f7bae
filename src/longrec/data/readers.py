"""Readers: raw interaction logs of every supported format -> RawLog (user, item, optional time) arrays. Here: the
registry (read_log), format detection, text opening and the plain-text formats; the others in readers_tables
(header-named columns), readers_columns (columns by position) and readers_archives (inside downloaded archives)."""

from __future__ import annotations

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


def bad_line(path: Path, encoding: str) -> int:
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


def text_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline); decoding and gzip errors name the file."""
    try:
        with open_text(path, encoding) as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}:{bad_line(path, encoding)}: not valid {encoding} text ({e.reason})") from None


def detect_format(path: Path) -> str:
    """Guess the format from the file name, sniffing .txt files (2 fields a line = pairs; 3 on every line is refused:
    ratings or times, not item lists)."""
    name = path.name.removesuffix(".gz")
    for ext, fmt in ((".inter", "recbole"), (".dat", "grouplens"), (".csv", "csv"), (".tsv", "tsv"),
                     (".parquet", "parquet")):
        if name.endswith(ext):
            return fmt
    widths: list[int] = []
    for lineno, line in text_lines(path):
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


def integer(token: str, where: str | Path, lineno: int, field: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataError(f"{where}:{lineno}: field '{field}' must be an integer, got {token!r}") from None


def iso_seconds(token: str) -> float | None:
    """Seconds since the epoch of an ISO date, None when token is not one; a date without a zone is read as UTC,
    so results do not depend on $TZ."""
    try:
        dt = datetime.fromisoformat(token)
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()


def parse_time(token: str, path: Path, lineno: int, field: str) -> float:
    """Seconds since the epoch: a number, or an ISO date (iso_seconds)."""
    try:
        t: float | None = float(token)
    except ValueError:
        t = iso_seconds(token)
    if t is None:
        raise DataError(f"{path}:{lineno}: field '{field}' must be a number or ISO date, got {token!r}")
    if not math.isfinite(t):
        raise DataError(f"{path}:{lineno}: field '{field}' must be a finite number, got {token!r}")
    return t


def raw_log(path: Path, users: list, items: list, times: list[float] | None) -> RawLog:
    if not users:
        raise DataError(f"{path}: no interactions found (empty file?)")
    u, i = np.asarray(users), np.asarray(items)
    return RawLog(u, i, None if times is None else np.asarray(times, dtype=np.float64))


def _id_lines(path: Path, widths: range, expected: str) -> RawLog:
    """`user item1 item2 ...` lines of integer ids with a number of fields in `widths` (empty lines skipped)."""
    users: list[int] = []
    items: list[int] = []
    for lineno, line in text_lines(path):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in widths:
            raise DataError(f"{path}:{lineno}: expected {expected}, got {len(parts)}: {line[:80]!r}")
        u = integer(parts[0], path, lineno, "user")
        items.extend(integer(tok, path, lineno, "item") for tok in parts[1:])
        users.extend([u] * (len(parts) - 1))
    return raw_log(path, users, items, None)


def read_pairs(path: Path) -> RawLog:
    """SASRec style: one `user item` line per interaction, integer ids, lines in time order."""
    return _id_lines(path, range(2, 3), "2 fields 'user item'")


def read_lines(path: Path) -> RawLog:
    """S3-Rec style: one `user item1 item2 ...` line per user, integer ids, items in time order."""
    return _id_lines(path, range(2, 2**62), "'user item1 item2 ...' (2 or more fields)")


def read_grouplens(path: Path) -> RawLog:
    """GroupLens ratings.dat: `UserID::MovieID::Rating::Timestamp`."""
    users: list[int] = []
    items: list[int] = []
    times: list[float] = []
    for lineno, line in text_lines(path, encoding="latin-1"):
        if not line.strip():
            continue
        parts = line.split("::")
        if len(parts) != 4:
            raise DataError(f"{path}:{lineno}: expected 'user::item::rating::timestamp', got {line[:80]!r}")
        users.append(integer(parts[0], path, lineno, "user"))
        items.append(integer(parts[1], path, lineno, "item"))
        times.append(parse_time(parts[3], path, lineno, "timestamp"))
    return raw_log(path, users, items, times)


def _sibling(module: str, name: str) -> Callable[[Path, Columns], RawLog]:
    """A reader from a sibling module, imported on first use: those modules import this one."""
    return lambda p, c: getattr(importlib.import_module(f"longrec.data.{module}"), name)(p, c)


READERS: dict[str, Callable[[Path, Columns], RawLog]] = {
    "pairs": lambda p, c: read_pairs(p),
    "lines": lambda p, c: read_lines(p),
    "grouplens": lambda p, c: read_grouplens(p),
    "recbole": _sibling("readers_tables", "read_recbole"),
    "csv": _sibling("readers_tables", "read_csv"),
    "tsv": _sibling("readers_tables", "read_tsv"),
    "parquet": _sibling("readers_tables", "read_parquet"),
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
