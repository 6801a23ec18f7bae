"""The stored datasets against their READMEs: repeat shares and time spans as `data info` prints them, times
carried through the corpus cache and chronological within every user, first and last events of a known user
(read off the raw files), and the two converted files rebuilt byte for byte from their exact upstream files."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, needs_data
from local_http import serve
from longrec import cli
from longrec.data import datasets
from longrec.data.datasets import NamedDataset, Upstream, load_corpus, resolve
from longrec.errors import DataError
from longrec.registry import Registry
from tests_helpers import files_under

pytestmark = needs_data


def info(capsys: pytest.CaptureFixture[str], name: str) -> dict[str, str]:
    assert cli.main(["data", "info", name]) == 0
    return dict(line.split(maxsplit=1) for line in capsys.readouterr().out.strip().splitlines())


# README: share of events repeating an earlier item of the user, and the previous one, to the README's precision
REPEATS = {
    "assist2017-pid": ("58.6", "52.4", 1),
    "gowalla-vldb17-u1000": ("40.96", "5.06", 2),
    "foursquare-nyc-stan": ("75.57", "11.65", 2),
    "ml-1m": ("0.0", "0.0", 1),  # "no repeated user-item pairs"
    "ml-100k": ("0.0", "0.0", 1),
}


@pytest.mark.parametrize("name", sorted(REPEATS))
def test_repeat_shares_match_the_readme(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    any_, prev, digits = REPEATS[name]
    s = load_corpus(name).stats()
    assert (f"{100 * s['repeat_any']:.{digits}f}", f"{100 * s['repeat_prev']:.{digits}f}") == (any_, prev)
    got = info(capsys, name)["repeats"]
    assert got == (f"{100 * s['repeat_any']:.2f}% of events repeat an earlier item of the user, "
                   f"{100 * s['repeat_prev']:.2f}% the previous one")


def test_yelp_repeats_are_the_readme_repeated_pairs() -> None:
    s = load_corpus("yelp").stats()
    assert round(s["repeat_any"] * s["interactions"]) == 11830


@pytest.mark.parametrize(
    ("name", "span"),
    [
        ("ml-100k", "1997-09-20T03:05:10Z .. 1998-04-22T23:10:38Z (214.8 days)"),
        ("gowalla-vldb17-u1000", "2009-02-03T21:17:38Z .. 2010-10-22T03:24:05Z (625.3 days)"),
        ("foursquare-nyc-stan", "60 s .. 27,506,100 s (318.4 days)"),  # minute 1 .. 458,435, in seconds
    ],
)
def test_time_span_matches_the_readme(name: str, span: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert info(capsys, name)["span"] == span


def test_no_span_without_timestamps(capsys: pytest.CaptureFixture[str]) -> None:
    got = info(capsys, "assist2017-pid")
    assert got["timestamps"] == "no" and "span" not in got


@pytest.mark.parametrize("name", ["ml-100k", "gowalla-vldb17-u1000", "foursquare-nyc-stan"])
def test_times_survive_the_cache_and_are_chronological_within_every_user(name: str) -> None:
    built = load_corpus(name, use_cache=False)
    load_corpus(name)  # writes the corpus cache
    cached = load_corpus(name)
    assert built.times is not None and cached.times is not None
    assert cached.times.dtype == np.float64 and cached.times.tolist() == built.times.tolist()
    step = np.diff(cached.times)
    same_user = np.ones(len(step), dtype=bool)
    same_user[cached.offsets[1:-1] - 1] = False  # the step from one user's last event to the next user's first
    assert (step[same_user] >= 0).all()


# (user, number of events, first (item, time), last (item, time)) from the raw files: assist2017 user 1 is
# lines 1..1056; Gowalla user 0's block is newest first (its first line is the newest check-in); NYC user 1 is
# lines 1..45 (minutes, times 60)
KNOWN = {
    "assist2017-pid": ("1", 1056, ("1", None), ("310", None)),
    "gowalla-vldb17-u1000": ("0", 202, ("79", 1274467744.0), ("2049", 1287503727.0)),
    "foursquare-nyc-stan": ("1", 45, ("3601", 5743 * 60.0), ("1476", 367574 * 60.0)),
}


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_first_and_last_event_of_a_known_user(name: str) -> None:
    user, length, first, last = KNOWN[name]
    corpus = load_corpus(name)
    u = corpus.user_ids.tolist().index(user)
    lo, hi = corpus.offsets[u], corpus.offsets[u + 1]
    assert hi - lo == length
    for pos, (item, t) in ((lo, first), (hi - 1, last)):
        assert corpus.item_ids[corpus.items[pos]] == item
        assert (corpus.times is None) if t is None else (corpus.times is not None and corpus.times[pos] == t)


# ---------------------------------------------------------------- converted files, rebuilt from upstream


def upstream_copies(name: str, www: Path) -> list[str]:
    """Write the exact upstream files of `name` (kept beside the stored file) into `www`; their names."""
    if name == "assist2017-pid":
        originals = [SHARED_DATA / f"assist2017-pid/original/assist2017_pid_test{k}.csv.gz" for k in range(1, 6)]
    else:
        originals = [SHARED_DATA / "foursquare-nyc-stan/NYC.npy.gz"]
    for gz in originals:
        (www / gz.name.removesuffix(".gz")).write_bytes(gzip.decompress(gz.read_bytes()))
    return [gz.name.removesuffix(".gz") for gz in originals]


def local_upstream(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, url: str,
                   files: list[str], **changes: str) -> NamedDataset:
    """Register the real entry `name` with its upstream URLs pointed at `url`; empty data and cache dirs."""
    real = datasets.DATASETS.get(name).obj
    assert real.upstream is not None and real.url == ""
    up = replace(real.upstream, urls=tuple(f"{url}/{f}" for f in files))
    ds = replace(real, upstream=up, **changes)
    reg: Registry[NamedDataset] = Registry("dataset")
    reg.register(name, ds)
    monkeypatch.setattr(datasets, "DATASETS", reg)
    monkeypatch.setenv("LONGREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    return ds



@pytest.mark.parametrize("name", ["assist2017-pid", "foursquare-nyc-stan"])
def test_converted_file_is_rebuilt_byte_for_byte_from_upstream(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "www").mkdir()
    files = upstream_copies(name, tmp_path / "www")
    real = datasets.DATASETS.get(name).obj
    stored = gzip.decompress((SHARED_DATA / (real.relpath + ".gz")).read_bytes())
    with serve(tmp_path / "www") as (url, hits):
        ds = local_upstream(monkeypatch, tmp_path, name, url, files)
        path, got = resolve(name)
        assert sorted(hits) == sorted(f"/{f}" for f in files)
    assert path == tmp_path / "cache" / "raw" / ds.relpath and got == ds
    assert path.read_bytes() == stored and hashlib.sha256(stored).hexdigest() == ds.sha256
    assert files_under(tmp_path / "cache") == [path]  # the upstream files are gone


@pytest.mark.parametrize("what", ["a tampered source", "a wrong result"])
def test_failed_rebuild_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str) -> None:
    (tmp_path / "www").mkdir()
    files = upstream_copies("assist2017-pid", tmp_path / "www")
    if what == "a tampered source":
        last = tmp_path / "www" / files[-1]
        last.write_bytes(last.read_bytes().replace(b",1,", b",0,", 1))
    with serve(tmp_path / "www") as (url, _):
        changes = {"sha256": "0" * 64} if what == "a wrong result" else {}
        local_upstream(monkeypatch, tmp_path, "assist2017-pid", url, files, **changes)
        with pytest.raises(DataError) as e:
            resolve("assist2017-pid")
    words = "checksum mismatch" if what == "a tampered source" else "nothing was written"
    assert words in str(e.value) and "\n" not in str(e.value)
    assert files_under(tmp_path / "cache") == []


@pytest.mark.parametrize("name", ["assist2017-pid", "gowalla-vldb17-u1000", "foursquare-nyc-stan"])
def test_upstream_urls_are_pinned_to_the_readme_commit(name: str) -> None:
    ds = datasets.DATASETS.get(name).obj
    up = ds.upstream or Upstream((), (), "")
    assert bool(ds.url) != bool(up.urls)  # a direct copy or a rebuild, never both
    readme = (SHARED_DATA / name / "README.md").read_text()
    for url in (ds.url, *up.urls) if ds.url else up.urls:
        commit = url.split("/")[5]
        assert url.startswith("https://raw.githubusercontent.com/") and len(commit) == 40 and commit in readme, url
