"""Readers of logs inside downloaded archives (LastFM-1K, KuaiRand, MovieLens-20M), streamed member by member."""

from __future__ import annotations

import fnmatch
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

from longrec.data.readers import Columns, RawLog, integer, iso_seconds
from longrec.data.readers_columns import READ_ERRORS, IntLog, file_lines, numbered, seconds
from longrec.errors import DataError


def _tar(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    with tarfile.open(path, "r|*") as tar:  # stream mode: one pass, members in archive order, nothing on disk
        for m in tar:
            f = tar.extractfile(m) if m.isfile() else None
            if f is not None:
                yield m.name, f


def _zip(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            with z.open(name) as f:
                yield name, f


ARCHIVES: dict[str, Callable[[Path], Iterator[tuple[str, IO[bytes]]]]] = {
    ".tar.gz": _tar, ".tgz": _tar, ".tar": _tar, ".zip": _zip}


def _guarded(path: Path, entries: Iterator[tuple[str, IO[bytes]]]) -> Iterator[tuple[str, IO[bytes]]]:
    """The entries, with a broken archive (bad header, truncated, not an archive) turned into a DataError."""
    try:
        yield from entries
    except READ_ERRORS as e:
        raise DataError(f"{path}: cannot read the archive ({e})") from None


def members(path: Path, pattern: str) -> Iterator[tuple[str, Iterator[tuple[int, str]]]]:
    """(where, numbered lines) of each archive member whose base name matches the glob `pattern`, streamed; a
    file that is not an archive (say the member, extracted) is read as that one member."""
    opener = next((fn for ext, fn in ARCHIVES.items() if path.name.endswith(ext)), None)
    if opener is None:
        yield str(path), file_lines(path)
        return
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    seen: list[str] = []
    matched = False
    for name, f in _guarded(path, opener(path)):
        seen.append(name)
        if fnmatch.fnmatchcase(PurePosixPath(name).name, pattern):
            matched = True
            yield f"{path}[{name}]", numbered(f, f"{path}[{name}]")
    if not matched:
        raise DataError(f"{path}: no member named like '{pattern}' (members: {', '.join(seen[:10]) or 'none'})")


def _header(where: str, lines: Iterator[tuple[int, str]], sep: str, wanted: tuple[str, ...]) -> tuple[list[int], int]:
    """Positions of the columns `wanted` in the header line, and the number of columns."""
    header = next(lines, (1, ""))[1].split(sep)
    for name in wanted:
        if name not in header:
            raise DataError(f"{where}:1: missing column '{name}' (columns: {', '.join(header)[:200]})")
    return [header.index(name) for name in wanted], len(header)


def _rows(where: str, lines: Iterator[tuple[int, str]], sep: str, width: int) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-empty line, which must have `width` fields."""
    for lineno, line in lines:
        if not line:
            continue
        parts = line.split(sep)
        if len(parts) != width:
            raise DataError(f"{where}:{lineno}: expected {width} fields, got {len(parts)}: {line[:80]!r}")
        yield lineno, parts


def _names(codes: dict[str, int]) -> np.ndarray:
    """The keys of an interning table as an object array indexed by code: each string once, not one
    fixed-width copy per row."""
    names = np.empty(len(codes), dtype=object)
    names[list(codes.values())] = list(codes)
    return names


def read_movielens_csv(path: Path, cols: Columns) -> RawLog:
    """MovieLens 20M/25M/32M `ratings.csv` (`userId,movieId,rating,timestamp`), inside the GroupLens zip or
    extracted; every rating counts as an interaction, as for ml-1m."""
    log = IntLog(timed=True)
    where = str(path)
    for where, lines in members(path, "ratings.csv"):
        (iu, ii, it), width = _header(where, lines, ",", ("userId", "movieId", "timestamp"))
        for lineno, p in _rows(where, lines, ",", width):
            log.add(integer(p[iu], where, lineno, "userId"), integer(p[ii], where, lineno, "movieId"),
                    seconds(p[it], where, lineno, "timestamp"))
    return log.finish(where)


def read_kuairand(path: Path, cols: Columns) -> RawLog:
    """KuaiRand logs: the two standard-recommendation logs (`log_standard_*.csv`, 2022-04-08 to 05-08) inside
    the release's tar.gz, or one extracted log; only clicks (`is_click` = 1) count. The random-exposure log is
    left out: its videos were inserted at random into the feed, so they say little about what comes next."""
    log = IntLog(timed=True)
    where = str(path)
    for where, lines in members(path, "log_standard_*.csv"):
        (iu, ii, it, ic), width = _header(where, lines, ",", ("user_id", "video_id", "time_ms", "is_click"))
        for lineno, p in _rows(where, lines, ",", width):
            click = p[ic]
            if click not in ("0", "1"):
                raise DataError(f"{where}:{lineno}: field 'is_click' must be 0 or 1, got {click!r}")
            if click == "1":
                log.add(integer(p[iu], where, lineno, "user_id"), integer(p[ii], where, lineno, "video_id"),
                        seconds(p[it], where, lineno, "time_ms", scale=1e-3))
    return log.finish(where)


def _iso(token: str, where: str, lineno: int) -> float:
    t = iso_seconds(token)
    if t is None:
        raise DataError(f"{where}:{lineno}: field 'timestamp' must be an ISO date, got {token!r}")
    return t


def read_lastfm_1k(path: Path, cols: Columns) -> RawLog:
    """LastFM-1K `userid \\t timestamp(ISO) \\t artist-mbid \\t artist-name \\t track-mbid \\t track-name`, inside
    the tar.gz or extracted, each user's lines newest first (rows are reversed, as for Gowalla). The item is the
    track's MusicBrainz id; a scrobble without one is keyed by `artist-name \\t track-name` instead, so the same
    track seen with and without an id counts as two items."""
    user_codes: dict[str, int] = {}  # ids interned to codes: 19M rows hold two ints each, not two strings
    item_codes: dict[str, int] = {}
    log = IntLog(timed=True)
    where = str(path)
    for where, lines in members(path, "userid-timestamp-artid-artname-traid-traname.tsv"):
        for lineno, (user, ts, _, artist, mbid, track) in _rows(where, lines, "\t", 6):
            if not user:
                raise DataError(f"{where}:{lineno}: empty field 'userid'")
            if not mbid and not track:
                raise DataError(f"{where}:{lineno}: neither field 'musicbrainz-track-id' nor 'track-name' is set")
            log.add(user_codes.setdefault(user, len(user_codes)),
                    item_codes.setdefault(mbid or f"{artist}\t{track}", len(item_codes)), _iso(ts, where, lineno))
    raw = log.finish(where, newest_first=True)
    return RawLog(_names(user_codes)[raw.users], _names(item_codes)[raw.items], raw.times)
