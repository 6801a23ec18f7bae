"""Long datasets without a published sha256, downloaded from a local HTTP server in their real formats: trust on
first use (the sha256 recorded, announced once, checked on every later build), no second download, tampered
files and records refused in one line that says how to reset, publisher MD5s, and failures that leave nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import pytest

from local_http import serve
from longrec.data import datasets
from longrec.data.datasets import NamedDataset, load_corpus, record_path, resolve
from longrec.data.mmap_corpus import load_large_corpus
from longrec.errors import DataError
from longrec.registry import Registry
from test_dataset_formats import KUAI_HEADER, LASTFM, LASTFM_ROWS, LASTFM_SEQS, kuai, seqs, tar_gz, zip_file
from tests_helpers import files_under


@dataclass
class Site:
    root: Path  # the served directory
    url: str
    hits: list[str]  # paths requested so far


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    """A local HTTP server, and empty private data and cache dirs."""
    (tmp_path / "www").mkdir()
    monkeypatch.setenv("LONGREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    with serve(tmp_path / "www") as (url, hits):
        yield Site(tmp_path / "www", url, hits)


def payloads(tmp: Path) -> dict[str, tuple[bytes, dict[str, list[tuple[str, float]]]]]:
    """{dataset: (a tiny download in its real format, the sequences it must give)}."""
    jodie = (b"user_id,item_id,timestamp,state_label,comma_separated_list_of_features\n"
             b"0,3,20.0,0,0.0\n1,4,1.0,0,0.0\n0,4,7.5,0,0.0\n")
    lastfm = tar_gz(tmp / "l.tar.gz", {f"lastfm-dataset-1K/{LASTFM}": LASTFM_ROWS})
    kuairand = tar_gz(tmp / "k.tar.gz", {"KuaiRand-1K/data/log_standard_4_08_to_4_21_1k.csv":
                                         KUAI_HEADER + kuai(7, 1, 2000, 1) + kuai(7, 2, 1000, 1) + kuai(8, 1, 500, 0)})
    ml = zip_file(tmp / "m.zip", {"ml-20m/ratings.csv": "userId,movieId,rating,timestamp\n1,5,4.0,9\n1,6,2.0,8\n"})
    return {
        "lastfm-jodie": (jodie, {"0": [("4", 7.5), ("3", 20.0)], "1": [("4", 1.0)]}),
        "lastfm-1k": (lastfm.read_bytes(), LASTFM_SEQS),
        "kuairand-1k": (kuairand.read_bytes(), {"7": [("2", 1.0), ("1", 2.0)]}),
        "ml-20m": (ml.read_bytes(), {"1": [("6", 8.0), ("5", 9.0)]}),
    }


def publish(site: Site, monkeypatch: pytest.MonkeyPatch, name: str, content: bytes, **changes: str) -> NamedDataset:
    """Serve `content` as the download of the real registry entry `name`, whose URL is pointed at the server."""
    real = datasets.DATASETS.get(name).obj
    assert real.sha256 == "" and real.url
    filename = PurePosixPath(urlparse(real.url).path).name
    (site.root / filename).write_bytes(content)
    ds = replace(real, url=f"{site.url}/{filename}", **changes)
    reg: Registry[NamedDataset] = Registry("dataset")
    reg.register(name, ds)
    monkeypatch.setattr(datasets, "DATASETS", reg)
    return ds



def one_line_error(name: str) -> str:
    with pytest.raises(DataError) as e:
        load_corpus(name, use_cache=False)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("name", ["lastfm-jodie", "lastfm-1k", "kuairand-1k", "ml-20m"])
def test_first_download_records_the_sha256_and_later_uses_check_it(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str
) -> None:
    content, expected = payloads(tmp_path)[name]
    ds = publish(site, monkeypatch, name, content, md5=hashlib.md5(content).hexdigest())  # the publisher's MD5
    assert seqs(load_corpus(name)) == expected  # users, items and times, chronological
    digest = hashlib.sha256(content).hexdigest()
    raw, record = tmp_path / "cache" / "raw" / ds.relpath, record_path(ds)
    assert raw.read_bytes() == content and record.read_text() == f"{digest}  {raw.name}\n"
    notices = [line for line in capsys.readouterr().err.splitlines() if "trust on first use" in line]
    assert len(notices) == 1 and digest in notices[0] and str(record) in notices[0]
    assert len(site.hits) == 1

    assert resolve(name) == (raw, replace(ds, sha256=digest))  # the recorded sha256 travels with the dataset
    assert seqs(load_corpus(name, use_cache=False)) == expected  # read again and checked: no second download
    assert len(site.hits) == 1 and "trust on first use" not in capsys.readouterr().err

    raw.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # tampered in the cache
    msg = one_line_error(name)
    assert str(raw) in msg and digest in msg and f"delete {raw}" in msg and str(record) in msg
    with pytest.raises(DataError, match="recorded for .* on first use"):
        load_corpus(name)  # through the corpus cache too: the changed file is a new cache key, so it is checked
    assert len(site.hits) == 1


def test_mmap_preparation_checks_the_recorded_sha256(
    site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content, expected = payloads(tmp_path)["lastfm-jodie"]
    ds = publish(site, monkeypatch, "lastfm-jodie", content)
    assert seqs(load_large_corpus("lastfm-jodie")) == expected
    raw = tmp_path / "cache" / "raw" / ds.relpath
    raw.write_bytes(content + b"2,5,30.0,0,0.0\n")
    with pytest.raises(DataError, match="does not match"):
        load_large_corpus("lastfm-jodie")


def test_failed_downloads_leave_nothing_behind(site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    content, _ = payloads(tmp_path)["kuairand-1k"]
    ds = publish(site, monkeypatch, "kuairand-1k", content)  # the real entry's MD5: not this tiny archive's
    msg = one_line_error("kuairand-1k")
    assert "checksum mismatch (md5" in msg and datasets.DATASETS.get("kuairand-1k").obj.md5 in msg
    assert files_under(tmp_path / "cache") == []
    (site.root / PurePosixPath(urlparse(ds.url).path).name).unlink()  # HTTP 404
    assert "download failed" in one_line_error("kuairand-1k")
    assert files_under(tmp_path / "cache") == []


def test_a_second_download_must_match_the_first(site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    content, expected = payloads(tmp_path)["lastfm-jodie"]
    ds = publish(site, monkeypatch, "lastfm-jodie", content)
    load_corpus("lastfm-jodie")
    raw, record = tmp_path / "cache" / "raw" / ds.relpath, record_path(ds)
    raw.unlink()  # deleted to download it again, but the publisher's copy has changed meanwhile
    (site.root / "lastfm.csv").write_bytes(content + b"2,5,30.0,0,0.0\n")
    assert "checksum mismatch" in one_line_error("lastfm-jodie")
    assert files_under(tmp_path / "cache" / "raw") == [record]
    record.unlink()  # the reset the error messages name: trust the new copy
    assert load_corpus("lastfm-jodie", use_cache=False).num_users == 3
    assert record.read_text().split()[0] == hashlib.sha256(content + b"2,5,30.0,0,0.0\n").hexdigest()


def test_a_copy_in_the_data_dir_is_trusted_on_first_use_after_its_md5(
    site: Site, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    content, expected = payloads(tmp_path)["ml-20m"]
    ds = publish(site, monkeypatch, "ml-20m", content)
    mine = tmp_path / "data" / ds.relpath
    mine.parent.mkdir(parents=True)
    mine.write_bytes(content)
    with pytest.raises(DataError, match=f"{mine}: md5 .* does not match the {ds.md5}"):
        resolve("ml-20m")  # the real entry's MD5 is not this tiny archive's
    assert not record_path(ds).exists()
    publish(site, monkeypatch, "ml-20m", content, md5=hashlib.md5(content).hexdigest())
    assert seqs(load_corpus("ml-20m")) == expected
    assert record_path(ds).read_text().split()[0] == hashlib.sha256(content).hexdigest()
    assert "trust on first use" in capsys.readouterr().err and site.hits == []  # nothing downloaded


def test_a_corrupt_record_is_refused(site: Site, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    content, _ = payloads(tmp_path)["lastfm-jodie"]
    ds = publish(site, monkeypatch, "lastfm-jodie", content)
    load_corpus("lastfm-jodie")
    record_path(ds).write_text("not a digest\n")
    msg = one_line_error("lastfm-jodie")
    assert f"{record_path(ds)}: not a sha256 record; delete it" in msg
