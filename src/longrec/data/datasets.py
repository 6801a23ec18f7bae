"""Named datasets: official URL + sha256; resolved from a path, $LONGREC_DATA_DIR, the cache, or downloaded."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from longrec.data.corpus import Corpus
from longrec.data.prepare import build_corpus
from longrec.data.readers import Columns, read_log
from longrec.errors import DataError
from longrec.registry import Registry

CACHE_VERSION = 1  # bump when the corpus layout or preparation changes


@dataclass(frozen=True)
class NamedDataset:
    name: str
    relpath: str  # where it lives under a data dir or the cache; a .gz twin is accepted too
    url: str  # the official copy (uncompressed)
    sha256: str  # of the uncompressed bytes
    format: str
    about: str


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
):
    DATASETS.register(_d.name, _d)


def cache_dir() -> Path:
    """$LONGREC_CACHE_DIR, else $XDG_CACHE_HOME/longrec, else ~/.cache/longrec."""
    if os.environ.get("LONGREC_CACHE_DIR"):
        return Path(os.environ["LONGREC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "longrec"


def sha256_of(path: Path) -> str:
    """sha256 of the file's content, gunzipped first when it ends in .gz."""
    h = hashlib.sha256()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str, timeout: float = 60.0) -> Path:
    """Stream `url` to `dest` atomically, verifying the sha256; a mismatch leaves nothing behind."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise DataError(f"{url}: checksum mismatch (sha256 {h.hexdigest()}, expected {sha256})")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DataError(f"{url}: download failed ({e})") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def resolve(name: str, fetch: bool = True) -> tuple[Path, NamedDataset | None]:
    """A path to the raw log of `name`: an existing path, then $LONGREC_DATA_DIR, then the cache, then a download."""
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
                return candidate, ds
    if not fetch:
        raise DataError(f"{name}: not found under {', '.join(map(str, roots))}")
    print(f"downloading {name} from {ds.url}", file=sys.stderr)
    return download(ds.url, cache_dir() / "raw" / ds.relpath, ds.sha256), ds


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
    if ds is not None and (digest := sha256_of(path)) != ds.sha256:
        raise DataError(f"{path}: sha256 {digest} does not match the {ds.name} dataset ({ds.sha256})")
    corpus = build_corpus(read_log(path, fmt, cols), dedup=dedup, kcore=kcore, source=str(path))
    if use_cache:
        corpus.save(cached)
    return corpus
