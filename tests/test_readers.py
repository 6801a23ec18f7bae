"""Readers and build_corpus: every format on small hand-written files, ordering, dedup, k-core, id remapping,
and every kind of bad input turned into one DataError line naming the file and line (or field)."""

from __future__ import annotations

import gzip
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from longrec.data.prepare import build_corpus, kcore_mask
from longrec.data.readers import Columns, RawLog, read_log
from longrec.errors import DataError


def write(path: Path, content: str | bytes) -> Path:
    """Write `content` to `path`, gzip-compressed when the name ends in .gz."""
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def data_error(path: Path, fmt: str = "auto", cols: Columns | None = None) -> str:
    """The message of the DataError that reading `path` raises; it must be one line naming the file."""
    with pytest.raises(DataError) as e:
        read_log(path, fmt, cols)
    msg = str(e.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def seqs(corpus) -> dict[str, list[str]]:
    """{raw user id: [raw item ids, oldest first]} of a corpus."""
    return {str(u): [str(corpus.item_ids[i]) for i in corpus.seq(k)] for k, u in enumerate(corpus.user_ids)}


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("name", ["log.txt", "log.txt.gz"])
def test_pairs(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "1 10\n1 11\n\n2 10\r\n")
    for fmt in ("pairs", "auto"):
        log = read_log(path, fmt)
        assert log.users.tolist() == [1, 1, 2]
        assert log.items.tolist() == [10, 11, 10]
        assert log.times is None


@pytest.mark.parametrize("name", ["log.txt", "log.txt.gz"])
def test_lines(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, "1 5 6 7\n\n2 8 5\n")
    for fmt in ("lines", "auto"):  # auto: lines of 4 and 3 fields are not pairs
        log = read_log(path, fmt)
        assert log.users.tolist() == [1, 1, 1, 2, 2]
        assert log.items.tolist() == [5, 6, 7, 8, 5]
        assert log.times is None


@pytest.mark.parametrize("name", ["toy.inter", "toy.inter.gz"])
def test_recbole_typed_header(tmp_path: Path, name: str) -> None:
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n"
        "186\t302\t3\t891717742\n"
        "\n"
        "196\t51\t2\t881250950.5\n"
    )
    log = read_log(write(tmp_path / name, text))
    assert log.users.tolist() == ["196", "186", "196"]
    assert log.items.tolist() == ["242", "302", "51"]
    assert log.times is not None and log.times.tolist() == [881250949.0, 891717742.0, 881250950.5]


def test_recbole_custom_columns_and_no_timestamp(tmp_path: Path) -> None:
    path = write(tmp_path / "x.inter", "session:token\tproduct:token\nu1\tp1\nu1\tp2\n")
    log = read_log(path, cols=Columns(user="session", item="product"))
    assert log.users.tolist() == ["u1", "u1"]
    assert log.items.tolist() == ["p1", "p2"]
    assert log.times is None


@pytest.mark.parametrize("name", ["ratings.dat", "ratings.dat.gz"])
def test_grouplens(tmp_path: Path, name: str) -> None:
    log = read_log(write(tmp_path / name, "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"))
    assert log.users.tolist() == [1, 1, 2]
    assert log.items.tolist() == [1193, 661, 1193]
    assert log.times is not None and log.times.tolist() == [978300760.0, 978302109.0, 978298413.0]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("name", "sep"), [("log.csv", ","), ("log.csv.gz", ","), ("log.tsv", "\t"), ("log.tsv.gz", "\t")]
)
def test_delimited_column_mapping_and_iso_dates(tmp_path: Path, name: str, sep: str) -> None:
    rows = [
        ["rating", "when", "item_code", "uid"],
        ["5", "2020-01-02T03:04:05", "B0001", "alice"],
        ["3", "2020-01-02", "B0002", "bob"],
        ["4", "2020-01-02T03:04:05+02:00", "B0003", "alice"],
        ["1", "1577934245", "B0001", "bob"],
    ]
    path = write(tmp_path / name, "".join(sep.join(r) + "\n" for r in rows))
    log = read_log(path, cols=Columns(user="uid", item="item_code", time="when"))
    assert log.users.tolist() == ["alice", "bob", "alice", "bob"]
    assert log.items.tolist() == ["B0001", "B0002", "B0003", "B0001"]
    assert log.times is not None
    assert log.times.tolist() == [utc(2020, 1, 2, 3, 4, 5), utc(2020, 1, 2), utc(2020, 1, 2, 1, 4, 5), 1577934245.0]


def test_iso_dates_without_zone_do_not_depend_on_local_timezone(tmp_path: Path) -> None:
    path = write(tmp_path / "log.csv", "user,item,t\na,x,2021-06-01T12:00:00\n")
    cols = Columns(time="t")
    before = os.environ.get("TZ")
    try:
        stamps = []
        for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
            os.environ["TZ"] = tz
            time.tzset()
            log = read_log(path, cols=cols)
            assert log.times is not None
            stamps.append(log.times[0])
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
    assert stamps == [utc(2021, 6, 1, 12)] * 3


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"u": [10, 9, 10], "i": ["a", "b", "c"], "ts": [3.0, 1.0, 2.0], "extra": [0, 0, 0]})
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    log = read_log(path, cols=Columns(user="u", item="i", time="ts"))
    assert log.users.tolist() == ["10", "9", "10"]  # ids are read as strings
    assert log.items.tolist() == ["a", "b", "c"]
    assert log.times is not None and log.times.tolist() == [3.0, 1.0, 2.0]
    corpus = build_corpus(log)
    assert seqs(corpus) == {"9": ["b"], "10": ["c", "a"]}  # numeric user order; sorted by time


def test_parquet_errors(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user": [1], "product": [2]}), path)
    assert "missing column 'item'" in data_error(path)
    bad = write(tmp_path / "bad.parquet", b"PAR1 this is not a parquet file")
    data_error(bad)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"user": [1, 2, 3], "item": ["a", None, "c"]}), nulls)
    assert "column 'item' has a missing value at row 2" in data_error(nulls)
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64())}), empty)
    assert "no interactions" in data_error(empty)


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path / "log.txt", "1 2\n")
    msg = data_error(path, fmt="jsonl")
    assert "unknown format 'jsonl'" in msg and "pairs" in msg
    assert "no such file" in data_error(tmp_path / "absent.txt")


# ---------------------------------------------------------------- build_corpus


def test_chronological_order_is_stable_for_equal_timestamps(tmp_path: Path) -> None:
    text = "user,item,t\nu,a,5\nv,p,2\nu,b,3\nu,c,3\nv,q,1\nu,d,1\nu,e,3\n"
    corpus = build_corpus(read_log(write(tmp_path / "log.csv", text), cols=Columns(time="t")))
    assert seqs(corpus) == {"u": ["d", "b", "c", "e", "a"], "v": ["q", "p"]}
    assert corpus.times is not None
    assert corpus.times.tolist() == [1, 3, 3, 3, 5, 1, 2]


def test_file_order_is_kept_without_timestamps() -> None:
    log = RawLog(np.array([2, 1, 2, 1, 2]), np.array([30, 20, 10, 40, 30]), None)
    corpus = build_corpus(log)
    assert seqs(corpus) == {"1": ["20", "40"], "2": ["30", "10", "30"]}
    assert corpus.times is None


def test_dedup_keeps_the_chronologically_first_occurrence() -> None:
    # user 1 consumes x at t=5 and again at t=1 (earlier, but later in the file): the t=1 event is kept
    log = RawLog(np.array([1, 1, 1, 1, 2, 2]), np.array([7, 8, 7, 9, 7, 7]), np.array([5.0, 2, 1, 3, 1, 2]))
    plain = build_corpus(log)
    assert seqs(plain) == {"1": ["7", "8", "9", "7"], "2": ["7", "7"]}
    dedup = build_corpus(log, dedup=True)
    assert seqs(dedup) == {"1": ["7", "8", "9"], "2": ["7"]}
    assert dedup.times is not None and dedup.times.tolist() == [1, 2, 3, 1]


def test_kcore_iterates_until_nothing_changes() -> None:
    # k = 2. Round 1 drops (c, z): item z has 1 interaction. Then user c has 1 left and goes in round 2,
    # which leaves item y with 1 interaction (from b), dropped in round 3. Round 4 changes nothing.
    users = np.array(["a", "a", "b", "b", "c", "c", "b", "d", "d"])
    items = np.array(["x", "w", "x", "w", "y", "z", "y", "x", "w"])
    log = RawLog(users, items, None)
    one_pass = {
        (u, i) for u, i in zip(users, items, strict=True) if (users == u).sum() >= 2 and (items == i).sum() >= 2
    }
    assert ("c", "y") in one_pass  # a single filtering pass would keep user c: the case needs iteration
    corpus = build_corpus(log, kcore=2)
    assert seqs(corpus) == {"a": ["x", "w"], "b": ["x", "w"], "d": ["x", "w"]}
    # the result is a fixed point: every kept user and item has >= k kept interactions
    ucode = np.unique(users, return_inverse=True)[1]
    icode = np.unique(items, return_inverse=True)[1]
    keep = kcore_mask(ucode, icode, 2)
    assert keep.tolist() == [True, True, True, True, False, False, False, True, True]
    with pytest.raises(DataError, match="no interactions left"):
        build_corpus(log, kcore=4)


def test_remap_pad_and_numeric_order_of_integer_like_ids() -> None:
    log = RawLog(np.array(["10", "9", "100", "10"]), np.array(["20", "3", "100", "3"]), None)
    corpus = build_corpus(log)
    assert corpus.user_ids.tolist() == ["9", "10", "100"]  # numeric, not "10" < "100" < "9"
    assert corpus.item_ids.tolist() == ["<pad>", "3", "20", "100"]  # 0 = PAD, items are 1..num_items
    assert corpus.num_items == 3 and corpus.items.min() == 1 and corpus.items.dtype == np.int32
    assert corpus.seq(0).tolist() == [1]  # user 9: item 3
    assert corpus.seq(1).tolist() == [2, 1]  # user 10: items 20, 3 in file order
    assert corpus.offsets.tolist() == [0, 1, 3, 4]


def test_remap_non_numeric_ids_sort_as_strings_and_keep_leading_zeros() -> None:
    log = RawLog(np.array(["b", "a", "10"]), np.array(["007", "7", "10"]), None)
    corpus = build_corpus(log)
    assert corpus.user_ids.tolist() == ["10", "a", "b"]
    # "007" and "7" are different tokens: they must stay two items and keep their spelling
    assert corpus.num_items == 3
    assert set(corpus.item_ids.tolist()) == {"<pad>", "007", "7", "10"}


def test_remap_ids_too_long_for_int64_do_not_crash() -> None:
    users = np.array(["1"] * 1500 + ["123456789012345678901234"])
    log = RawLog(users, np.array(["5"] * 1501), None)
    corpus = build_corpus(log)
    assert corpus.num_users == 2
    assert corpus.user_ids.tolist() == ["1", "123456789012345678901234"]


def test_ints_from_pairs_are_remapped_in_numeric_order(tmp_path: Path) -> None:
    corpus = build_corpus(read_log(write(tmp_path / "log.txt", "5 100\n5 20\n12 5\n")))
    assert corpus.user_ids.tolist() == ["5", "12"]
    assert corpus.item_ids.tolist() == ["<pad>", "5", "20", "100"]
    assert corpus.seq(0).tolist() == [3, 2] and corpus.seq(1).tolist() == [1]


def test_non_finite_timestamps_are_rejected() -> None:
    log = RawLog(np.array([1, 1]), np.array([1, 2]), np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="finite"):
        build_corpus(log, source="mylog.parquet")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "text", "fmt", "where", "words"),
    [
        ("p.txt", "1 2\n1 2 3\n", "pairs", ":2:", "expected 2 fields"),
        ("p.txt", "1 2\n\n3\n", "pairs", ":3:", "expected 2 fields"),
        ("p.txt", "1 2\nx 3\n", "pairs", ":2:", "'user'"),
        ("p.txt", "1 2\n1 b\n", "pairs", ":2:", "'item'"),
        ("p.txt.gz", "1 2\n1 2\n1 2.5\n", "pairs", ":3:", "'item'"),
        ("l.txt", "1 2 3\n2 4 z\n", "lines", ":2:", "'item'"),
        ("l.txt", "1 2 3\nu 4 5\n", "lines", ":2:", "'user'"),
        ("l.txt", "1 2 3\n7\n", "lines", ":2:", "expected 'user item1"),
        ("r.dat", "1::2::5::978300760\n1::2::3\n", "grouplens", ":2:", "user::item::rating::timestamp"),
        ("r.dat", "1::2::5::yesterday\n", "grouplens", ":1:", "'timestamp'"),
        ("r.dat", "1::two::5::978300760\n", "grouplens", ":1:", "'item'"),
        ("x.inter", "user_id:token\trating:float\n1\t2\n", "recbole", ":1:", "'item_id'"),
        ("x.inter", "user_id:token\titem_id:token\ttimestamp:token\n1\t2\t3\n", "recbole", ":1:", "declared float"),
        ("x.inter", "user_id:token\titem_id:token\n1\t2\n1\t2\t3\n", "recbole", ":3:", "expected 2"),
        ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tsoon\n", "recbole", ":2:", "'timestamp'"),
        ("x.inter", "user_id:token\titem_id:token\n1\t2\n\t2\n", "recbole", ":3:", "empty 'user_id'"),
        ("x.csv", "user,item\n1,2\n1,2,3\n", "csv", ":3:", "expected 2 fields"),
        ("x.csv", "user,item\n1,2\n,2\n", "csv", ":3:", "empty"),
        ("x.tsv", "user\titem\n1\t2\n1\n", "tsv", ":3:", "expected 2 fields"),
    ],
)
def test_malformed_line_names_file_and_line(
    tmp_path: Path, name: str, text: str, fmt: str, where: str, words: str
) -> None:
    path = write(tmp_path / name, text)
    # auto: detected from the extension; .txt files are sniffed, so a malformed one may read as another format
    for f in (fmt,) if ".txt" in name else (fmt, "auto"):
        msg = data_error(path, f)
        assert f"{path}{where}" in msg, msg
        assert words in msg, msg


@pytest.mark.parametrize(
    ("value", "words"), [("2020-13-45", "ISO date"), ("nan", "finite"), ("inf", "finite"), ("", "ISO date")]
)
def test_bad_timestamp_names_file_line_and_column(tmp_path: Path, value: str, words: str) -> None:
    path = write(tmp_path / "log.csv", f"user,item,when\na,b,2020-01-01\na,c,{value}\n")
    msg = data_error(path, cols=Columns(time="when"))
    assert f"{path}:3:" in msg and "'when'" in msg and words in msg


@pytest.mark.parametrize(("name", "cols"), [("log.csv", Columns(time="when")), ("log.tsv", Columns(item="product"))])
def test_missing_column_names_the_column(tmp_path: Path, name: str, cols: Columns) -> None:
    sep = "," if name.endswith("csv") else "\t"
    path = write(tmp_path / name, f"user{sep}item\n1{sep}2\n")
    missing = cols.time or cols.item
    msg = data_error(path, cols=cols)
    assert f"{path}:1:" in msg and f"missing column '{missing}'" in msg and "user, item" in msg


@pytest.mark.parametrize(
    ("name", "fmt", "content"),
    [
        ("e.txt", "auto", ""),
        ("e.txt", "pairs", ""),
        ("e.txt", "lines", "\n\n  \n"),
        ("e.txt.gz", "auto", ""),
        ("e.dat", "grouplens", ""),
        ("e.inter", "recbole", ""),
        ("e.inter", "recbole", "user_id:token\titem_id:token\n"),
        ("e.csv", "csv", ""),
        ("e.csv", "csv", "user,item\n"),
        ("e.tsv.gz", "tsv", "user\titem\n\n"),
    ],
)
def test_empty_file(tmp_path: Path, name: str, fmt: str, content: str) -> None:
    msg = data_error(write(tmp_path / name, content), fmt)
    assert "empty" in msg or "no interactions" in msg


GZIP_KINDS = ("truncated", "bad-block", "bad-crc", "not-gzip")


def gzip_variant(kind: str, sep: bytes) -> bytes:
    """Broken gzip bytes of a valid log (header `user item` for csv) with `sep` between fields."""
    head = b"user,item\n" if sep == b"," else b""
    good = gzip.compress(head + b"".join(b"%d%s%d\n" % (i % 50, sep, i) for i in range(5000)))
    return {
        "truncated": good[: len(good) // 2],
        "bad-block": good[:10] + b"\xff" * 40 + good[50:],
        "bad-crc": good[:-8] + b"\0\0\0\0" + good[-4:],
        "not-gzip": head + b"1 2\n",
    }[kind]


@pytest.mark.parametrize("kind", GZIP_KINDS)
@pytest.mark.parametrize(("name", "fmt"), [("log.txt.gz", "pairs"), ("log.txt.gz", "auto"), ("log.csv.gz", "csv")])
def test_corrupt_gzip(tmp_path: Path, kind: str, name: str, fmt: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip_variant(kind, b"," if fmt == "csv" else b" "))
    assert "cannot read" in data_error(path, fmt)


@pytest.mark.parametrize(
    ("name", "fmt", "text"),
    [
        ("log.txt", "pairs", b"1 2\n1 3\n2 \xff\n1 4\n"),
        ("log.txt.gz", "pairs", b"1 2\n1 3\n2 \xc3\x28\n"),
        ("log.txt", "lines", b"1 2 3\n2 4 5\n2 \xe9 5\n"),
        ("log.csv", "csv", b"user,item\n1,2\n1,\xff\n"),
        ("log.inter", "recbole", b"user_id:token\titem_id:token\n1\t2\n1\t\xfe\n"),
    ],
)
def test_undecodable_bytes_name_the_line(tmp_path: Path, name: str, fmt: str, text: bytes) -> None:
    path = write(tmp_path / name, text)
    msg = data_error(path, fmt)
    assert f"{path}:3:" in msg and "utf-8" in msg


def test_undecodable_bytes_far_into_a_file_name_their_own_line(tmp_path: Path) -> None:
    # bigger than any decoder buffer: the line number must be the line of the bad byte, not of the block
    lines = [b"%d %d\n" % (i, i) for i in range(20000)]
    lines[15000] = b"7 \x80\n"
    path = write(tmp_path / "big.txt.gz", b"".join(lines))
    assert f"{path}:15001:" in data_error(path, "pairs")


def test_grouplens_is_latin1(tmp_path: Path) -> None:
    # GroupLens .dat files are Latin-1: a byte that is invalid UTF-8 is not an error there
    path = write(tmp_path / "r.dat", b"1::2::5::978300760\xe9\n")
    with pytest.raises(DataError, match=r":1: field 'timestamp'"):
        read_log(path)


def test_auto_format_keeps_pairs_when_one_line_is_malformed(tmp_path: Path) -> None:
    lines = [f"{u} {i}" for u in range(1, 6) for i in range(1, 6)]
    lines[7] = "2 3 4"
    p = tmp_path / "log.txt"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"log\.txt:8: expected 2 fields"):
        read_log(p)


def test_a_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    for name in ("bom.csv", "bom.csv.gz"):
        log = read_log(write(tmp_path / name, "\ufeffuser,item\nu1,a\nu1,b\n".encode()))
        assert log.users.tolist() == ["u1", "u1"] and log.items.tolist() == ["a", "b"]
    assert read_log(write(tmp_path / "bom.txt", "\ufeff1 2\n1 3\n".encode())).items.tolist() == [2, 3]


def test_three_fields_a_line_are_not_guessed_as_item_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "ratings.txt", "1 10 5\n1 11 3\n2 10 4\n")
    with pytest.raises(DataError, match="every line has 3 fields"):
        read_log(path)
    assert read_log(path, "lines").items.tolist() == [10, 5, 11, 3, 10, 4]  # asked for explicitly


@pytest.mark.parametrize("header", ["user,item,item", "user,user,item"])
def test_a_duplicate_header_column_is_refused_by_name(tmp_path: Path, header: str) -> None:
    dup = "item" if header.endswith("item,item") else "user"
    with pytest.raises(DataError, match=f":1: column '{dup}' appears 2 times"):
        read_log(write(tmp_path / "dup.csv", f"{header}\n1,2,3\n"))


@pytest.mark.parametrize("fmt", ["csv", "tsv", "pairs", "auto", "gowalla-tsv"])
def test_a_parquet_file_read_as_text_is_named(tmp_path: Path, fmt: str) -> None:
    path = write(tmp_path / "log.csv", b"PAR1\x15\x04\x15\x10\x00\xff\xfe")
    with pytest.raises(DataError, match="it is a Parquet file"):
        read_log(path, fmt)


def test_the_streaming_reader_checks_the_header_alike(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from longrec.data.mmap_corpus import prepare_streaming

    bad = [("dup.csv", "user,item,item\n1,2,3\n", "column 'item' appears 2 times"),
           ("p.csv", b"PAR1\x15\x04", "it is a Parquet file")]
    for name, content, words in bad:
        with pytest.raises(DataError, match=words):
            prepare_streaming(write(tmp_path / name, content), "csv", Columns(), tmp_path / "out")
    corpus = prepare_streaming(write(tmp_path / "bom.csv", "\ufeffuser,item\n1,2\n1,3\n".encode()), "csv", Columns(),
                               tmp_path / "out")
    assert corpus.num_interactions == 2
