"""Readers of the named datasets' own formats on small hand-written files and archives: fields, time units,
chronological order (newest-first files reversed, ties included), the KuaiRand and LastFM-1K rules, and every
kind of bad input turned into one DataError line naming the file (or archive member), line and field."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from longrec.data.prepare import build_corpus
from longrec.data.readers import read_log
from longrec.errors import DataError


def write(path: Path, content: str | bytes) -> Path:
    """Write `content` to `path`, gzip-compressed when the name ends in .gz."""
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def tar_gz(path: Path, files: dict[str, str | bytes]) -> Path:
    """A .tar.gz holding `files` ({member name: content}) in this order."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def zip_file(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, content in files.items():
            z.writestr(name, content)
    return path


def seqs(corpus) -> dict[str, list[tuple[str, float]]]:
    """{raw user id: [(raw item id, time), oldest first]}."""
    assert corpus.times is not None
    return {str(u): [(str(corpus.item_ids[i]), float(t)) for i, t in
                     zip(corpus.seq(k), corpus.times[corpus.offsets[k]:corpus.offsets[k + 1]], strict=True)]
            for k, u in enumerate(corpus.user_ids)}


def data_error(path: Path, fmt: str) -> str:
    """The one-line message of the DataError that reading `path` as `fmt` raises; it names the file."""
    with pytest.raises(DataError) as e:
        read_log(path, fmt)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


# ---------------------------------------------------------------- the stored datasets' formats


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_user_problem_skill_correct_keeps_file_order(tmp_path: Path, name: str) -> None:
    log = read_log(write(tmp_path / name, "2 7 1 0\n1 5 1 1\n\n1 3 2 0\n1 5 1 1\n"), "user-problem-skill-correct")
    assert log.users.tolist() == [2, 1, 1, 1] and log.items.tolist() == [7, 5, 3, 5] and log.times is None
    corpus = build_corpus(log)
    assert [corpus.item_ids[i] for i in corpus.seq(0)] == ["5", "3", "5"]  # user 1 in file order; skill ignored


def test_gowalla_newest_first_is_reversed_and_ties_keep_the_reverse_file_order(tmp_path: Path) -> None:
    text = "0\t20\t300.0\n0\t21\t200.0\n0\t22\t200.0\n0\t23\t100.0\n1\t20\t50.0\n1\t24\t60.0"  # no final newline
    corpus = build_corpus(read_log(write(tmp_path / "g.txt", text), "gowalla-tsv"))
    # user 0: 23 (t=100), then the tie at t=200 reversed (22 before 21), then 20; user 1's block is not sorted
    # newest first in this file: the stable sort by time still makes it chronological
    assert seqs(corpus) == {"0": [("23", 100.0), ("22", 200.0), ("21", 200.0), ("20", 300.0)],
                            "1": [("20", 50.0), ("24", 60.0)]}


def test_user_item_minute_stores_seconds(tmp_path: Path) -> None:
    corpus = build_corpus(read_log(write(tmp_path / "n.txt.gz", "1 9 5\n1 8 5\n1 9 7\n2 8 1\n"), "user-item-minute"))
    assert seqs(corpus) == {"1": [("9", 300.0), ("8", 300.0), ("9", 420.0)], "2": [("8", 60.0)]}


def test_jodie_reads_by_position_with_any_number_of_features(tmp_path: Path) -> None:
    text = ("user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
            "0,5,10.0,0,0.0\n1,5,3.5,0,0.1,0.2,0.3\n0,6,2.0,1,0.0\n")
    corpus = build_corpus(read_log(write(tmp_path / "lastfm.csv", text), "jodie"))
    assert seqs(corpus) == {"0": [("6", 2.0), ("5", 10.0)], "1": [("5", 3.5)]}


# ---------------------------------------------------------------- the long datasets' archives

LASTFM = "userid-timestamp-artid-artname-traid-traname.tsv"
LASTFM_ROWS = (
    "user_000002\t2009-05-01T10:00:00Z\tA1\tAbba\tT1\tWaterloo\n"
    "user_000001\t2009-05-04T23:08:57Z\tA1\tAbba\t\tSOS\n"  # no track MBID: keyed by artist and track name
    "user_000001\t2009-05-04T23:08:57Z\tA2\tBeck\tT2\tLoser\n"  # same second as the line above: reversed
    "user_000001\t2008-01-01T00:00:00Z\t\tCake\tT3\tDistance\n"
)
LASTFM_SEQS = {
    "user_000001": [("T3", utc(2008, 1, 1)), ("T2", utc(2009, 5, 4, 23, 8, 57)),
                    ("Abba\tSOS", utc(2009, 5, 4, 23, 8, 57))],
    "user_000002": [("T1", utc(2009, 5, 1, 10))],
}


@pytest.mark.parametrize("packed", ["tar.gz", "extracted"])
def test_lastfm_1k(tmp_path: Path, packed: str) -> None:
    if packed == "tar.gz":
        path = tar_gz(tmp_path / "lastfm-dataset-1K.tar.gz", {"lastfm-dataset-1K/README.txt": "readme",
                                                             f"lastfm-dataset-1K/{LASTFM}": LASTFM_ROWS,
                                                             "lastfm-dataset-1K/userid-profile.tsv": "x\ty\n"})
    else:
        path = write(tmp_path / LASTFM, LASTFM_ROWS)
    log = read_log(path, "lastfm-1k")
    assert log.items.dtype == object  # one string object per distinct id, not a fixed-width copy per row
    assert seqs(build_corpus(log)) == LASTFM_SEQS


KUAI_HEADER = ("user_id,video_id,date,hourmin,time_ms,is_click,is_like,is_follow,is_comment,is_forward,is_hate,"
               "long_view,play_time_ms,duration_ms,profile_stay_time,comment_stay_time,is_profile_enter,is_rand,tab\n")


def kuai(user: int, video: int, ms: int, click: int) -> str:
    return f"{user},{video},20220421,400,{ms},{click},0,0,0,0,0,1,151024,104400,0,0,0,0,1\n"


def test_kuairand_keeps_clicks_of_the_standard_logs(tmp_path: Path) -> None:
    path = tar_gz(tmp_path / "KuaiRand-1K.tar.gz", {
        "KuaiRand-1K/data/log_random_4_22_to_5_08_1k.csv": KUAI_HEADER + kuai(1, 99, 1650000000500, 1),
        "KuaiRand-1K/data/log_standard_4_22_to_5_08_1k.csv": KUAI_HEADER + kuai(1, 11, 1650600000000, 1),
        "KuaiRand-1K/data/log_standard_4_08_to_4_21_1k.csv": KUAI_HEADER + kuai(1, 10, 1650000000000, 1)
        + kuai(1, 12, 1650000001000, 0) + kuai(2, 10, 1650000002500, 1),
        "KuaiRand-1K/data/user_features_1k.csv": "user_id,user_active_degree\n1,high_active\n",
    })
    corpus = build_corpus(read_log(path, "kuairand"))
    # the random log's video 99 and the unclicked video 12 are gone; milliseconds become seconds; the newer
    # log came first in the archive, and the sort by time puts it last
    assert seqs(corpus) == {"1": [("10", 1650000000.0), ("11", 1650600000.0)], "2": [("10", 1650000002.5)]}


@pytest.mark.parametrize("packed", ["zip", "extracted"])
def test_movielens_csv(tmp_path: Path, packed: str) -> None:
    rows = "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,3.5,1112484676\n2,32,4.0,974820889\n"
    if packed == "zip":
        path = zip_file(tmp_path / "ml-20m.zip", {"ml-20m/movies.csv": "movieId,title\n", "ml-20m/ratings.csv": rows})
    else:
        path = write(tmp_path / "ratings.csv", rows)
    corpus = build_corpus(read_log(path, "movielens-csv"))
    assert seqs(corpus) == {"1": [("29", 1112484676.0), ("2", 1112486027.0)], "2": [("32", 974820889.0)]}


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("name", "fmt", "text", "where", "words"),
    [
        ("a.txt", "user-problem-skill-correct", "1 2 3 1\n1 2 3\n", ":2:", "expected 4 fields"),
        ("a.txt", "user-problem-skill-correct", "1 2 3 1\n1 2 x 1\n", ":2:", "'skill'"),
        ("a.txt", "user-problem-skill-correct", "1 2 3 1\n1 p9 3 1\n", ":2:", "'problem'"),
        ("g.txt", "gowalla-tsv", "0\t1\t2.0\n0 1 2.0\n", ":2:", "expected 3 fields"),
        ("g.txt", "gowalla-tsv", "0\t1\tyesterday\n", ":1:", "'unix_seconds'"),
        ("g.txt", "gowalla-tsv", "0\t1\tnan\n", ":1:", "finite"),
        ("g.txt", "gowalla-tsv", "0\tpoi\t2.0\n", ":1:", "'poi'"),
        ("n.txt", "user-item-minute", "1 2 3\n1 2 3.5\n", ":2:", "'minute'"),
        ("n.txt", "user-item-minute", "1 2 3\nu 2 3\n", ":2:", "'user'"),
        ("j.csv", "jodie", "user,item,time,label\n", ":1:", "JODIE header"),
        ("j.csv", "jodie", "user_id,item_id,timestamp,state_label,f\n0,1,2.0\n", ":2:", "at least 4 fields"),
        ("j.csv", "jodie", "user_id,item_id,timestamp,state_label,f\n0,1,soon,0,0\n", ":2:", "'timestamp'"),
        (LASTFM, "lastfm-1k", "u\t2009-05-04T23:08:57Z\tA\tB\tT\n", ":1:", "expected 6 fields"),
        (LASTFM, "lastfm-1k", "u\t2009-13-04\tA\tB\tT\tC\n", ":1:", "'timestamp'"),
        (LASTFM, "lastfm-1k", "u\t2009-05-04T23:08:57Z\tA\tB\t\t\n", ":1:", "'track-name'"),
        (LASTFM, "lastfm-1k", "\t2009-05-04T23:08:57Z\tA\tB\tT\tC\n", ":1:", "'userid'"),
        ("log.csv", "kuairand", "user_id,video_id,time_ms\n", ":1:", "missing column 'is_click'"),
        ("log.csv", "kuairand", KUAI_HEADER + kuai(1, 2, 3, 1).replace(",1\n", ",1,9\n"), ":2:", "expected 19 fields"),
        ("log.csv", "kuairand", KUAI_HEADER + kuai(1, 2, 3, 2), ":2:", "'is_click'"),
        ("log.csv", "kuairand", KUAI_HEADER + kuai(1, 2, 3, 1).replace(",3,", ",3.x,"), ":2:", "'time_ms'"),
        ("ratings.csv", "movielens-csv", "userId,itemId,rating,timestamp\n", ":1:", "missing column 'movieId'"),
        ("ratings.csv", "movielens-csv", "userId,movieId,rating,timestamp\n1,2,3\n", ":2:", "expected 4 fields"),
        ("ratings.csv", "movielens-csv", "userId,movieId,rating,timestamp\n1,m2,3,4\n", ":2:", "'movieId'"),
    ],
)
def test_malformed_line_names_file_line_and_field(
    tmp_path: Path, name: str, fmt: str, text: str, where: str, words: str
) -> None:
    path = write(tmp_path / name, text)
    msg = data_error(path, fmt)
    assert f"{path}{where}" in msg and words in msg, msg


def test_bad_line_inside_an_archive_names_the_member(tmp_path: Path) -> None:
    path = zip_file(tmp_path / "ml-20m.zip", {"ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n1,2,3,x\n"})
    assert f"{path}[ml-20m/ratings.csv]:2: field 'timestamp'" in data_error(path, "movielens-csv")
    lines = [f"user_{i}\t2009-05-04T23:08:57Z\tA\tB\tT\tC\n".encode() for i in range(5000)]
    lines[4321] = b"user_x\t2009-05-04T23:08:57Z\tA\t\xff\tT\tC\n"
    bad = tar_gz(tmp_path / "lastfm-dataset-1K.tar.gz", {f"lastfm-dataset-1K/{LASTFM}": b"".join(lines)})
    assert f"{bad}[lastfm-dataset-1K/{LASTFM}]:4322: not valid utf-8" in data_error(bad, "lastfm-1k")


@pytest.mark.parametrize(("name", "fmt"), [("KuaiRand-1K.tar.gz", "kuairand"), ("ml-20m.zip", "movielens-csv")])
@pytest.mark.parametrize("kind", ["truncated", "not-an-archive", "wrong-member", "missing"])
def test_broken_archive(tmp_path: Path, name: str, fmt: str, kind: str) -> None:
    member = "KuaiRand-1K/data/log_standard_4_08_to_4_21_1k.csv" if fmt == "kuairand" else "ml-20m/ratings.csv"
    content = KUAI_HEADER + kuai(1, 2, 3, 1) * 3000 if fmt == "kuairand" else "userId,movieId,rating,timestamp\n"
    build = tar_gz if name.endswith(".tar.gz") else zip_file
    path = build(tmp_path / name, {("other.csv" if kind == "wrong-member" else member): content})
    good = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "not-an-archive":
        path.write_bytes(b"this is not an archive\n" * 10)
    elif kind == "missing":
        path.unlink()
    msg = data_error(path, fmt)
    words = {"truncated": "cannot read", "not-an-archive": "cannot read", "wrong-member": "no member named like",
             "missing": "no such file"}[kind]
    assert words in msg, msg


@pytest.mark.parametrize(("fmt", "text"), [("user-problem-skill-correct", "\n\n"), ("gowalla-tsv", ""),
                                           ("jodie", "user_id,item_id,timestamp,state_label,f\n"),
                                           ("kuairand", KUAI_HEADER + kuai(1, 2, 3, 0))])
def test_no_interactions(tmp_path: Path, fmt: str, text: str) -> None:
    assert "no interactions" in data_error(write(tmp_path / "log.csv", text), fmt)


def test_readers_are_in_the_format_table(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown format 'lastfm'.*lastfm-1k.*movielens-csv"):
        read_log(write(tmp_path / "x.txt", "1 2\n"), "lastfm")
    assert np.asarray(read_log(write(tmp_path / "y.txt", "1 2 3\n"), "user-item-minute").times).tolist() == [180.0]
