"""Readers of logs whose columns are known by position (AKT ASSISTments, Gowalla, STAN NYC, JODIE CSV)."""

from __future__ import annotations

import gzip
import math
import tarfile
import zipfile
import zlib
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from longrec.data.readers import Columns, RawLog, integer, refuse_binary
from longrec.errors import DataError

# what a broken stream raises while it is read: gzip and zlib for .gz, tarfile and zipfile for archives
READ_ERRORS = (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile)


def numbered(stream: Iterable[bytes], where: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a binary stream, decoded as UTF-8 line by line, so a
    bad byte names its own line; `where` names the file (or archive member) in errors."""
    lineno = 0
    try:
        for lineno, raw in enumerate(stream, 1):
            yield lineno, raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}:{lineno}: not valid utf-8 text ({e.reason})") from None
    except READ_ERRORS as e:
        raise DataError(f"{where}: cannot read ({e})") from None


def file_lines(path: Path) -> Iterator[tuple[int, str]]:
    """`numbered` lines of a file, gunzipped when its name ends in .gz."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        f = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    with f:
        if path.suffix != ".gz":
            refuse_binary(path, f.peek(4)[:4])
        yield from numbered(f, str(path))


def seconds(token: str, where: str, lineno: int, field: str, scale: float = 1.0) -> float:
    """A finite number times `scale` (the unit's length in seconds)."""
    try:
        t = float(token) * scale
    except ValueError:
        raise DataError(f"{where}:{lineno}: field '{field}' must be a number, got {token!r}") from None
    if not math.isfinite(t):
        raise DataError(f"{where}:{lineno}: field '{field}' must be a finite number, got {token!r}")
    return t


class IntLog:
    """Growing (user, item, time) columns of integer ids, 8 bytes a value: long logs do not hold Python ints."""

    def __init__(self, timed: bool) -> None:
        self.users, self.items, self.times = array("q"), array("q"), array("d") if timed else None

    def add(self, user: int, item: int, time: float = 0.0) -> None:
        self.users.append(user)
        self.items.append(item)
        if self.times is not None:
            self.times.append(time)

    def finish(self, where: str, newest_first: bool = False) -> RawLog:
        """The RawLog; `newest_first` reverses the rows, so that the file's order of equal times is reversed too
        (the stable sort in build_corpus then keeps it), as reversing each user's block would."""
        if not self.users:
            raise DataError(f"{where}: no interactions found (empty file?)")
        step = -1 if newest_first else 1
        users = np.frombuffer(self.users, dtype=np.int64)[::step].copy()
        items = np.frombuffer(self.items, dtype=np.int64)[::step].copy()
        times = None if self.times is None else np.frombuffer(self.times, dtype=np.float64)[::step].copy()
        return RawLog(users, items, times)


def _rows(path: Path, sep: str | None, names: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line, which must have exactly the fields `names`."""
    for lineno, line in file_lines(path):
        if not line.strip():
            continue
        parts = line.split(sep)
        if len(parts) != len(names):
            raise DataError(f"{path}:{lineno}: expected {len(names)} fields '{' '.join(names)}', got {len(parts)}: "
                            f"{line[:80]!r}")
        yield lineno, parts


def read_user_problem_skill_correct(path: Path, cols: Columns) -> RawLog:
    """AKT ASSISTments conversion: `user problem skill correct` lines; the item is the problem; file order is time
    order (there are no timestamps). Every field must be an integer, so a shifted column is caught."""
    names = ("user", "problem", "skill", "correct")
    log, where = IntLog(timed=False), str(path)
    for lineno, parts in _rows(path, None, names):
        u, p, _, _ = (integer(tok, where, lineno, name) for tok, name in zip(parts, names, strict=True))
        log.add(u, p)
    return log.finish(where)


def read_gowalla_tsv(path: Path, cols: Columns) -> RawLog:
    """LBSNDatasets Gowalla: `user \\t poi \\t unix_seconds` (a float), each user's lines newest first. The rows
    are reversed, so check-ins with equal times come out in reverse file order (the source README's reading)."""
    log, where = IntLog(timed=True), str(path)
    for lineno, (u, p, t) in _rows(path, "\t", ("user", "poi", "unix_seconds")):
        log.add(integer(u, where, lineno, "user"), integer(p, where, lineno, "poi"),
                seconds(t, where, lineno, "unix_seconds"))
    return log.finish(where, newest_first=True)


def read_user_item_minute(path: Path, cols: Columns) -> RawLog:
    """STAN NYC conversion: `user poi minute` lines; times are stored in seconds (minute * 60), like every other
    log's, counted from the log's own origin (its first check-in), not from the unix epoch."""
    log, where = IntLog(timed=True), str(path)
    for lineno, (u, p, m) in _rows(path, None, ("user", "poi", "minute")):
        log.add(integer(u, where, lineno, "user"), integer(p, where, lineno, "poi"),
                integer(m, where, lineno, "minute") * 60.0)
    return log.finish(where)


def read_jodie(path: Path, cols: Columns) -> RawLog:
    """JODIE CSV: header `user_id,item_id,timestamp,state_label,comma_separated_list_of_features`, then
    `user,item,seconds,label,f1,...` rows (any number of features; JODIE's own loader also reads by position).
    Timestamps are seconds from the log's first event."""
    log, where = IntLog(timed=True), str(path)
    lines = file_lines(path)
    header = next(lines, (0, ""))[1].split(",")
    if len(header) < 4 or header[2] != "timestamp":
        raise DataError(f"{path}:1: expected the JODIE header 'user_id,item_id,timestamp,state_label,...', "
                        f"got {','.join(header)[:80]!r}")
    for lineno, line in lines:
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) < 4:
            raise DataError(f"{path}:{lineno}: expected at least 4 fields 'user,item,timestamp,state_label', "
                            f"got {len(parts)}: {line[:80]!r}")
        log.add(integer(parts[0], where, lineno, "user_id"), integer(parts[1], where, lineno, "item_id"),
                seconds(parts[2], where, lineno, "timestamp"))
    return log.finish(where)
