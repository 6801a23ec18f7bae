"""Named datasets: exact statistics of the stored copies, resolution order, checksummed downloads from a local
HTTP server, and the corpus cache (rebuilt when the source or the options change)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_data
from local_http import serve
from longrec import cli
from longrec.data import datasets
from longrec.data.corpus import Corpus
from longrec.data.datasets import NamedDataset, cache_dir, download, load_corpus, resolve
from longrec.data.prepare import build_corpus
from longrec.data.readers import Columns, RawLog, read_log
from longrec.errors import DataError
from longrec.registry import Registry
from tests_helpers import files_under

# ---------------------------------------------------------------- statistics of the stored datasets (README)


def info(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, str]:
    """Run `longrec data info ARGV` in-process; {first word of each line: the rest}."""
    assert cli.main(["data", "info", *argv]) == 0
    out = capsys.readouterr().out
    return dict(line.split(maxsplit=1) for line in out.strip().splitlines())


# users, items, interactions, density, "length" line (README figures, printed with 2 decimals like the README)
STATS = {
    "assist2017-pid": ("1,705", "3,162", "941,502", "0.17464", "mean 552.20  median 442  min 2  max 3057", "no"),
    "gowalla-vldb17-u1000": ("1,000", "24,209", "157,251", "0.00650", "mean 157.25  median 78  min 15  max 1624",
                             "yes"),
    "foursquare-nyc-stan": ("1,083", "5,135", "147,938", "0.02660", "mean 136.60  median 93  min 17  max 2515",
                            "yes"),
    "ml-1m": ("6,040", "3,416", "999,611", "0.04845", "mean 165.50  median 96  min 18  max 2277", "no"),
    "ml-100k": ("943", "1,682", "100,000", "0.06305", "mean 106.04  median 65  min 20  max 737", "yes"),
    "beauty": ("22,363", "12,101", "198,502", "0.00073", "mean 8.88  median 6  min 5  max 204", "no"),
    "yelp": ("30,431", "20,033", "316,354", "0.00052", "mean 10.40  median 7  min 5  max 350", "no"),
}


@needs_data
@pytest.mark.parametrize("name", sorted(STATS))
def test_stored_dataset_statistics_match_the_readme(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    users, items, inter, density, length, stamps = STATS[name]
    got = info(capsys, name)
    assert got["dataset"] == name
    assert (got["users"], got["items"], got["interactions"]) == (users, items, inter)
    assert got["density"] == density
    assert got["length"] == length
    assert got["timestamps"] == stamps


@needs_data
def test_ml100k_5core_matches_the_readme(capsys: pytest.CaptureFixture[str]) -> None:
    got = info(capsys, "ml-100k", "--kcore", "5")
    assert (got["users"], got["items"], got["interactions"]) == ("943", "1,349", "99,287")
    assert got["length"].startswith("mean 105.29  median 64  ")


@needs_data
@pytest.mark.parametrize("name", ["beauty", "yelp"])
def test_already_5core_datasets_are_unchanged_by_5core(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    got = info(capsys, name, "--kcore", "5")
    assert (got["users"], got["items"], got["interactions"]) == STATS[name][:3]


@needs_data
def test_yelp_dedup_removes_exactly_the_repeated_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    # README: 11,830 of Yelp's 316,354 interactions repeat a (user, item) pair; every user and item stays
    got = info(capsys, "yelp", "--dedup")
    assert (got["users"], got["items"], got["interactions"]) == ("30,431", "20,033", f"{316354 - 11830:,}")


# ---------------------------------------------------------------- a toy named dataset


TOY = b"1 10\n1 11\n2 10\n2 12\n2 11\n"
TOY_SHA = hashlib.sha256(TOY).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served directory): a local HTTP server on 127.0.0.1, port chosen by the OS."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as (url, _):
        yield url, root


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: tuple[str, Path]) -> NamedDataset:
    """A registry holding only 'toy', served at a local URL; private data and cache dirs (both empty)."""
    url, root = server
    (root / "toy.txt").write_bytes(TOY)
    ds = NamedDataset("toy", "toy/toy.txt", f"{url}/toy.txt", TOY_SHA, "pairs", "a toy")
    reg: Registry[NamedDataset] = Registry("dataset")
    reg.register("toy", ds)
    monkeypatch.setattr(datasets, "DATASETS", reg)
    monkeypatch.setenv("LONGREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    return ds



def put(root: Path, relpath: str, data: bytes) -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_resolution_order(toy: NamedDataset, tmp_path: Path) -> None:
    data_dir, raw_cache = tmp_path / "data", tmp_path / "cache" / "raw"
    in_cache = put(raw_cache, toy.relpath, TOY)
    assert resolve("toy") == (in_cache, toy)  # no data-dir copy yet: the cache
    in_data = put(data_dir, toy.relpath + ".gz", gzip.compress(TOY))
    assert resolve("toy") == (in_data, toy)  # $LONGREC_DATA_DIR beats the cache; a .gz twin is accepted
    explicit = put(tmp_path / "elsewhere", "mine.txt", TOY)
    assert resolve(str(explicit)) == (explicit, None)  # an explicit path beats everything, and is no named dataset
    in_data.unlink()
    in_cache.unlink()
    with pytest.raises(DataError, match="toy: not found under"):
        resolve("toy", fetch=False)
    path, ds = resolve("toy")  # nothing anywhere: downloaded into the cache
    assert (path, ds) == (raw_cache / toy.relpath, toy)
    assert path.read_bytes() == TOY


def test_unknown_name_lists_the_known_datasets(toy: NamedDataset) -> None:
    with pytest.raises(DataError, match=r"no-such-set: no such file, and not a named dataset \(known: toy\)"):
        resolve("no-such-set")


def test_download_verifies_the_checksum(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "log.txt").write_bytes(TOY)
    dest = tmp_path / "cache" / "raw" / "x" / "log.txt"
    assert download(f"{url}/log.txt", dest, TOY_SHA) == TOY_SHA
    assert dest.read_bytes() == TOY
    assert files_under(tmp_path / "cache") == [dest]  # no partial file left beside it


def test_download_with_a_wrong_checksum_leaves_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "log.txt").write_bytes(TOY)
    dest = tmp_path / "cache" / "raw" / "x" / "log.txt"
    with pytest.raises(DataError, match="checksum mismatch") as e:
        download(f"{url}/log.txt", dest, "0" * 64)
    assert f"{url}/log.txt" in str(e.value) and TOY_SHA in str(e.value)
    assert files_under(tmp_path / "cache") == []
    with pytest.raises(DataError, match="download failed"):
        download(f"{url}/missing.txt", dest, TOY_SHA)  # HTTP 404
    assert files_under(tmp_path / "cache") == []


@pytest.mark.parametrize(
    ("chunked", "words"),
    [(False, "checksum mismatch"), (True, "download failed")],
    ids=["content-length", "chunked"],
)
def test_download_cut_short_is_a_data_error(tmp_path: Path, chunked: bool, words: str) -> None:
    class Short(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            self.send_response(200)
            if chunked:  # one chunk, then the connection closes without the terminating chunk
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(TOY), TOY))
            else:  # half the announced bytes, then the connection closes
                self.send_header("Content-Length", str(len(TOY)))
                self.end_headers()
                self.wfile.write(TOY[: len(TOY) // 2])
            self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Short)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(DataError, match=words):
            download(f"http://127.0.0.1:{httpd.server_address[1]}/x", tmp_path / "raw" / "x.txt", TOY_SHA)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert files_under(tmp_path / "raw") == []


def test_named_dataset_is_downloaded_then_read_from_the_cache(
    toy: NamedDataset, tmp_path: Path, server: tuple[str, Path]
) -> None:
    corpus = load_corpus("toy")
    assert corpus.num_users == 2 and corpus.num_items == 3 and corpus.num_interactions == 5
    raw = tmp_path / "cache" / "raw" / toy.relpath
    assert raw.read_bytes() == TOY
    (server[1] / "toy.txt").unlink()  # the server loses the file: the cached copy is enough now
    assert load_corpus("toy", use_cache=False).num_interactions == 5


def test_local_copy_with_a_wrong_sha256_is_an_error(toy: NamedDataset, tmp_path: Path) -> None:
    bad = put(tmp_path / "data", toy.relpath, TOY + b"3 10\n")
    with pytest.raises(DataError) as e:
        load_corpus("toy")
    msg = str(e.value)
    assert str(bad) in msg and "does not match the toy dataset" in msg and TOY_SHA in msg
    assert files_under(tmp_path / "cache" / "corpus") == []


def test_local_copy_with_corrupt_gzip_is_an_error(toy: NamedDataset, tmp_path: Path) -> None:
    good = gzip.compress(TOY * 200)
    bad = put(tmp_path / "data", toy.relpath + ".gz", good[:10] + b"\xff" * 30 + good[40:])
    with pytest.raises(DataError, match="cannot read") as e:
        load_corpus("toy")
    assert str(bad) in str(e.value)


# ---------------------------------------------------------------- corpus cache


def test_corpus_cache_is_used_and_rebuilt_when_source_or_options_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    builds: list[tuple[bool, int]] = []
    real_build = datasets.build_corpus

    def counting_build(log: RawLog, dedup: bool = False, kcore: int = 0, source: str = "log") -> Corpus:
        builds.append((dedup, kcore))
        return real_build(log, dedup=dedup, kcore=kcore, source=source)

    monkeypatch.setattr(datasets, "build_corpus", counting_build)
    path = put(tmp_path, "log.txt", b"1 10\n1 10\n1 11\n2 10\n2 11\n")

    first = load_corpus(str(path))
    assert first.num_interactions == 5 and len(builds) == 1
    assert len(files_under(cache_dir() / "corpus")) == 1
    again = load_corpus(str(path))
    assert len(builds) == 1  # served from the cache
    assert again.items.tolist() == first.items.tolist() and again.item_ids.tolist() == first.item_ids.tolist()

    assert load_corpus(str(path), dedup=True).num_interactions == 4 and builds[-1] == (True, 0)
    assert load_corpus(str(path), kcore=2).num_interactions == 5 and builds[-1] == (False, 2)
    assert load_corpus(str(path), dedup=True, kcore=2).num_interactions == 4 and builds[-1] == (True, 2)
    assert len(builds) == 4
    assert load_corpus(str(path), dedup=True).num_interactions == 4 and len(builds) == 4  # cached too

    # same size, new content: the modification time changes the key
    st = path.stat()
    path.write_bytes(b"1 10\n1 10\n1 12\n2 10\n2 11\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed = load_corpus(str(path))
    assert len(builds) == 5 and changed.item_ids.tolist() == ["<pad>", "10", "11", "12"]
    # a longer file
    path.write_bytes(b"1 10\n3 13\n")
    assert load_corpus(str(path)).num_users == 2 and len(builds) == 6
    assert load_corpus(str(path), use_cache=False).num_users == 2 and len(builds) == 7


def test_corpus_save_is_atomic_and_roundtrips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = put(tmp_path, "log.csv", b"user,item,t\nu,a,2\nu,b,1\nv,a,3\n")
    corpus = build_corpus(read_log(path, cols=Columns(time="t")))
    out = tmp_path / "c" / "corpus.npz"
    corpus.save(out)
    back = Corpus.load(out)
    for field in ("items", "offsets", "times", "user_ids", "item_ids"):
        assert getattr(back, field).tolist() == getattr(corpus, field).tolist(), field
    assert files_under(tmp_path / "c") == [out]

    def broken_savez(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("numpy.savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        corpus.save(out)
    assert files_under(tmp_path / "c") == [out]  # the old file is intact and no temp file is left
    assert Corpus.load(out).items.tolist() == corpus.items.tolist()


def test_corrupt_corpus_cache_is_a_data_error(tmp_path: Path) -> None:
    bad = put(tmp_path, "corpus.npz", b"PK\x03\x04 truncated zip")
    with pytest.raises(DataError, match="not a readable corpus cache") as e:
        Corpus.load(bad)
    assert str(bad) in str(e.value)
