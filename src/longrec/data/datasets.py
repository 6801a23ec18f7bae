"""Named datasets: official URL + sha256 (or trust on first use); resolved from a path, $LONGREC_DATA_DIR, the
cache, or downloaded (a converted dataset is rebuilt from its exact upstream files)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

from longrec.data.convert import CONVERTERS
from longrec.data.corpus import Corpus
from longrec.data.prepare import build_corpus
from longrec.data.readers import Columns, read_log
from longrec.errors import DataError
from longrec.registry import Registry

CACHE_VERSION = 1  # bump when the corpus layout or preparation changes


@dataclass(frozen=True)
class Upstream:
    """The exact upstream files that a converted dataset is rebuilt from (it has no upstream copy of its own)."""

    urls: tuple[str, ...]  # raw.githubusercontent.com at the commit its stored README names
    sha256s: tuple[str, ...]  # of each file's bytes
    convert: str  # a CONVERTERS name


@dataclass(frozen=True)
class NamedDataset:
    name: str
    relpath: str  # where it lives under a data dir or the cache; a .gz twin is accepted too
    url: str  # the official copy (uncompressed); "" for a converted file, which `upstream` rebuilds
    sha256: str  # of the uncompressed bytes; "" where the publisher gives none: recorded on first use
    format: str
    about: str
    upstream: Upstream | None = None
    md5: str = ""  # the publisher's MD5 of the download, where it gives one: checked before the sha256 is recorded


_AKT = "https://raw.githubusercontent.com/arghosh/AKT/01b7e8d7d7c862cabc9467108e3e7f2555653a88/data/assist2017_pid/"
_STAN = ("https://raw.githubusercontent.com/yingtaoluo/Spatial-Temporal-Attention-Network-for-POI-Recommendation/"
         "8b82f2840e7f435a25398e1d42a835fc4129a4e2/data/NYC.npy")
_LBSN = ("https://raw.githubusercontent.com/rahmanidashti/LBSNDatasets/b55cccad6ad49684705cabeed81472ce03ddb2df/"
         "Gowalla/Gowalla_3/Gowalla_checkins.txt")
DATASETS: Registry[NamedDataset] = Registry("dataset")
for _d in (
    NamedDataset("ml-1m", "ml-1m/ml-1m.txt",
                 "https://raw.githubusercontent.com/kang205/SASRec/master/data/ml-1m.txt",
                 "b725f3acb3986fe3130bffd1e77a74d182a1f51799567a236dbd60270f95b0a2", "pairs",
                 "MovieLens-1M, SASRec preprocessing (6,040 users, 3,416 items)"),
    NamedDataset("ml-100k", "ml-100k/ml-100k.inter",
                 "https://raw.githubusercontent.com/RUCAIBox/RecBole/master/dataset/ml-100k/ml-100k.inter",
                 "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff", "recbole",
                 "MovieLens-100K with timestamps, RecBole atomic file"),
    NamedDataset("beauty", "amazon-beauty/Beauty.txt",
                 "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/Beauty.txt",
                 "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8", "lines",
                 "Amazon Beauty, S3-Rec 5-core preprocessing"),
    NamedDataset("yelp", "yelp/Yelp.txt",
                 "https://raw.githubusercontent.com/salesforce/ICLRec/master/data/Yelp.txt",
                 "724b219106b81dd2349027da997334ddb6da9fe2f152ad6e0d97a93170f7caed", "lines",
                 "Yelp, S3-Rec preprocessing (has repeated user-item pairs)"),
    NamedDataset("assist2017-pid", "assist2017-pid/assist2017_pid.user_problem_skill_correct.txt", "",
                 "8cd877c9e2578fa0f79f6b7a13425df3c6ec1c3811faebed542c8b4b0574426b", "user-problem-skill-correct",
                 "ASSISTments 2017, AKT folds (1,705 students, median 442 events, no times). OFF-DOMAIN: maths-tutor "
                 "data, a long-sequence stress test, not evidence for recommendation",
                 Upstream(tuple(f"{_AKT}assist2017_pid_test{k}.csv" for k in range(1, 6)), (
                     "32d1580467edb4b87ec9773fada2e3439c820c0640d5e618a80f49b2a9bcd582",
                     "c40e2eb18e3079cedc92af1a0a9eeceebd3a5d43fc9da4df8f16009e96197857",
                     "504ce41c75545f2f43ea1a6c228ef032596a0d8bd3819fa013aab4c558d2c2a4",
                     "fe758a0e545eb51594e5ee8cee01ae1898d7f3a8ef5f87c86df4bacfa6ea8800",
                     "7659d973bf2517105070b573444d39e7899323fee28cf93bf3c921363eaedc5c"), "akt-folds")),
    NamedDataset("gowalla-vldb17-u1000", "gowalla-vldb17-u1000/Gowalla_checkins.txt", _LBSN,
                 "24fd30e965b5f155bf5c291c34382dfc533c8e29c07a373fc21fbc05a989455e", "gowalla-tsv",
                 "Gowalla check-ins, 1,000-user subset of Liu et al. VLDB 2017, unix times (not the LinRec Gowalla)"),
    NamedDataset("foursquare-nyc-stan", "foursquare-nyc-stan/nyc.user_item_minute.txt", "",
                 "e29dd263d0ca3cd4e4f9d93205dc44539cc7e2701b6640f5f6a9f70e1b07e0ab", "user-item-minute",
                 "Foursquare NYC check-ins, STAN filtering; times in seconds (minute * 60) from the first check-in",
                 Upstream((_STAN,), ("9e28b974a52d233e201ff9e82e1c076818c90b1e8f25f4ef93daaf1d7e8ddf55",), "stan-npy")),
    NamedDataset("lastfm-jodie", "lastfm-jodie/lastfm.csv", "http://snap.stanford.edu/jodie/lastfm.csv", "", "jodie",
                 "LastFM plays, JODIE version (1,000 users, 1,000 songs, 1.29M plays); seconds from the first play"),
    NamedDataset("lastfm-1k", "lastfm-1k/lastfm-dataset-1K.tar.gz",
                 "http://mtg.upf.edu/static/datasets/last.fm/lastfm-dataset-1K.tar.gz", "", "lastfm-1k",
                 "LastFM-1K scrobbles (992 users, 19M plays), unix times; item = track MBID, else artist + track name"),
    NamedDataset("kuairand-1k", "kuairand-1k/KuaiRand-1K.tar.gz",
                 "https://zenodo.org/records/10439422/files/KuaiRand-1K.tar.gz", "", "kuairand",
                 "KuaiRand-1K short videos (1,000 users): clicks in the two standard logs, unix times",
                 md5="6b0b9c8222d67fcd4c676218edca3f1f"),
    NamedDataset("ml-20m", "ml-20m/ml-20m.zip", "https://files.grouplens.org/datasets/movielens/ml-20m.zip", "",
                 "movielens-csv", "MovieLens-20M (138,493 users, every rating an interaction), unix times",
                 md5="cd245b17a1ae2cc31bb14903e1204af3"),
):
    DATASETS.register(_d.name, _d)


def cache_dir() -> Path:
    """$LONGREC_CACHE_DIR, else $XDG_CACHE_HOME/longrec, else ~/.cache/longrec."""
    if os.environ.get("LONGREC_CACHE_DIR"):
        return Path(os.environ["LONGREC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longrec"


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of the file's content, gunzipped first when it is a .gz twin of a plain file; an archive
    (.tar.gz) is hashed as downloaded."""
    h = hashlib.new(algorithm)
    opener = gzip.open if path.suffix == ".gz" and not path.name.endswith(".tar.gz") else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    """sha256 of the file's content (see `file_digest`)."""
    return file_digest(path)


def download(url: str, dest: Path, sha256: str, timeout: float = 60.0, md5: str = "") -> str:
    """Stream `url` to `dest` atomically and return its sha256, which must equal `sha256` unless that is ""
    (the caller records it), as its MD5 must equal `md5` when given; a failure leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    h, m = hashlib.sha256(), hashlib.md5(usedforsecurity=False) if md5 else None
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                if m is not None:
                    m.update(chunk)
                out.write(chunk)
        if m is not None and m.hexdigest() != md5:
            raise DataError(f"{url}: checksum mismatch (md5 {m.hexdigest()}, expected {md5}, the publisher's)")
        if sha256 and h.hexdigest() != sha256:
            raise DataError(f"{url}: checksum mismatch (sha256 {h.hexdigest()}, expected {sha256})")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DataError(f"{url}: download failed ({e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return h.hexdigest()


def record_path(ds: NamedDataset) -> Path:
    """Where the sha256 of a dataset whose publisher gives none is recorded on first use (in the cache, since a
    data dir may be read-only): one record per dataset, which every copy of it must match."""
    return cache_dir() / "raw" / (ds.relpath + ".sha256")


def _recorded(ds: NamedDataset) -> str:
    """The sha256 recorded for `ds` on first use, or "" before its first use."""
    record = record_path(ds)
    if not record.is_file():
        return ""
    words = record.read_text(encoding="ascii", errors="replace").split()
    if not words or not re.fullmatch("[0-9a-f]{64}", words[0]):
        raise DataError(f"{record}: not a sha256 record; delete it to record the dataset's file again")
    return words[0]


def _trust(ds: NamedDataset, path: Path, digest: str) -> NamedDataset:
    """Record `digest` as the sha256 of `ds` on this machine (trust on first use), atomically, and say so."""
    record = record_path(ds)
    record.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=record.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{digest}  {path.name}\n")
        os.replace(tmp, record)
    finally:
        Path(tmp).unlink(missing_ok=True)
    print(f"{ds.name}: no published sha256, so {digest} (of {path}) is recorded in {record} and every later use "
          "is checked against it (trust on first use)", file=sys.stderr)
    return replace(ds, sha256=digest)


def _trusted(ds: NamedDataset, path: Path) -> NamedDataset:
    """`ds` with the sha256 that `path` must have: the registry's, else the recorded one, else path's own
    (recorded now, after the publisher's MD5 is checked where there is one)."""
    if ds.sha256:
        return ds
    if recorded := _recorded(ds):
        return replace(ds, sha256=recorded)
    if ds.md5 and (got := file_digest(path, "md5")) != ds.md5:
        raise DataError(f"{path}: md5 {got} does not match the {ds.md5} that {ds.name}'s publisher gives")
    return _trust(ds, path, sha256_of(path))


def _rebuild(ds: NamedDataset, up: Upstream, dest: Path) -> Path:
    """Download the exact upstream files of a converted dataset (each checked), convert them, and move the
    result to `dest` only if it has the stored copy's sha256; the upstream files are deleted afterwards."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".upstream-") as tmp:
        sources: list[Path] = []
        for url, sha256 in zip(up.urls, up.sha256s, strict=True):
            print(f"downloading {ds.name} source {url}", file=sys.stderr)
            sources.append(Path(tmp) / f"{len(sources)}-{PurePosixPath(urllib.parse.urlparse(url).path).name}")
            download(url, sources[-1], sha256)
        out = Path(tmp) / "converted"
        with open(out, "wb") as f:
            CONVERTERS[up.convert](sources, f)
        if (digest := sha256_of(out)) != ds.sha256:
            raise DataError(f"{ds.name}: converting {', '.join(up.urls)} gave sha256 {digest}, not the stored "
                            f"copy's {ds.sha256}; nothing was written")
        os.replace(out, dest)
    return dest


def resolve(name: str, fetch: bool = True) -> tuple[Path, NamedDataset | None]:
    """A path to the raw log of `name`: an existing path, then $LONGREC_DATA_DIR, then the cache, then a download.
    The NamedDataset returned carries the sha256 the file must have (for one without a published sha256, the
    one recorded on its first use)."""
    if name not in DATASETS:
        path = Path(name)
        if path.exists():
            return path, None
        raise DataError(f"{name}: no such file, and not a named dataset (known: {', '.join(DATASETS.names())})")
    ds = DATASETS.get(name).obj
    roots = [Path(os.environ["LONGREC_DATA_DIR"])] if os.environ.get("LONGREC_DATA_DIR") else []
    roots.append(cache_dir() / "raw")
    for root in roots:
        for candidate in (root / ds.relpath, root / (ds.relpath + ".gz")):
            if candidate.is_file():
                return candidate, _trusted(ds, candidate)
    if not fetch:
        raise DataError(f"{name}: not found under {', '.join(map(str, roots))}")
    dest = cache_dir() / "raw" / ds.relpath
    if ds.upstream is not None:
        return _rebuild(ds, ds.upstream, dest), ds
    print(f"downloading {name} from {ds.url}", file=sys.stderr)
    expected = ds.sha256 or _recorded(ds)  # a dataset downloaded again must match its first download
    digest = download(ds.url, dest, expected, md5=ds.md5)
    return dest, (replace(ds, sha256=digest) if expected else _trust(ds, dest, digest))


def check_sha256(path: Path, ds: NamedDataset) -> None:
    """`path` must hold the bytes of `ds`: its published sha256, or the one recorded on its first use."""
    if (digest := sha256_of(path)) == ds.sha256:
        return
    record = record_path(ds)
    if not DATASETS.get(ds.name).obj.sha256:
        raise DataError(f"{path}: sha256 {digest} differs from {ds.sha256}, recorded for {ds.name} on first use "
                        f"in {record}; delete {path} to download it again, or delete {record} too to trust a new copy")
    raise DataError(f"{path}: sha256 {digest} does not match the {ds.name} dataset ({ds.sha256})")


def load_corpus(name: str, fmt: str = "auto", cols: Columns | None = None, dedup: bool = False,
                kcore: int = 0, use_cache: bool = True) -> Corpus:
    """Resolve, read and prepare a dataset; the Corpus is cached and rebuilt when source or options change."""
    path, ds = resolve(name)
    cols = cols or Columns()
    fmt = ds.format if (ds and fmt == "auto") else fmt
    st = path.stat()
    key = json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns, fmt, cols.user, cols.item, cols.time,
                      dedup, kcore, CACHE_VERSION])
    cached = cache_dir() / "corpus" / f"{path.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if use_cache and cached.is_file():
        return Corpus.load(cached)
    if ds is not None:
        check_sha256(path, ds)
    corpus = build_corpus(read_log(path, fmt, cols), dedup=dedup, kcore=kcore, source=str(path))
    if use_cache:
        corpus.save(cached)
    return corpus
