"""A run's data and directory: the splits a config names, the files laid out at the start (the prepared corpus
among them, so that the directory stands alone), the resume check."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from longrec.config import ExperimentConfig, config_from_dict, to_dict
from longrec.data.corpus import Corpus
from longrec.data.datasets import load_corpus, resolve, sha256_of
from longrec.data.mmap_corpus import load_large_corpus
from longrec.data.readers import Columns
from longrec.data.split import Splits, make_splits
from longrec.errors import CheckpointError, ConfigError, DataError
from longrec.train.checkpoint import write_json
from longrec.train.evaluate import check_users
from longrec.train.runfiles import read_run_json


def load_data(cfg: ExperimentConfig, quiet: bool = False) -> Splits:
    d = cfg.data
    cols = Columns(d.user_col, d.item_col, d.time_col)
    if d.mmap:
        corpus = load_large_corpus(d.name, d.format, cols, d.dedup, d.kcore)
    else:
        corpus = load_corpus(d.name, d.format, cols, d.dedup, d.kcore)
    splits = make_splits(corpus, d.split, d.temporal_valid, d.temporal_test)
    check_users(cfg, splits)  # before the counts below: with no user left, the error (which counts them) is all
    for reason, n in splits.dropped.items():
        if n and not quiet:
            print(f"data: {n} users dropped ({reason})", file=sys.stderr)
    return splits


# A resumed run may be extended, and may run on more or fewer CPU threads: like its device, where it computes,
# recorded per start (results.json "segments"), not what it computes.
RESUMABLE_CHANGES = ("epochs", "patience", "time_budget_min", "threads")


def _changed_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (a key missing on one side included)."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return [] if a == b else [prefix or "(root)"]
    return [k for key in sorted(set(a) | set(b), key=str)
            for k in _changed_keys(a.get(key, "<unset>"), b.get(key, "<unset>"), f"{prefix}{key}" if not prefix
                                   else f"{prefix}.{key}")]


def prepare_run_dir(cfg: ExperimentConfig, run_dir: Path, resume: bool, splits: Splits, write: bool = True) -> None:
    """Check that the run may start (every rank checks, so all fail alike); the writing rank lays out the files."""
    if resume:
        if not (run_dir / "model.json").is_file():
            raise CheckpointError(f"{run_dir}: no run to resume there (no model.json); drop --resume to start one")
        saved = read_run_json(run_dir / "model.json")["config"]
        try:  # through the config class, so that a field added since the run started takes its default
            saved = to_dict(config_from_dict(saved))
        except ConfigError as e:
            raise CheckpointError(f"{run_dir}/model.json: invalid saved config ({e})") from None
        now = to_dict(cfg)
        for key in RESUMABLE_CHANGES:
            saved["train"].pop(key, None), now["train"].pop(key, None)
        if changed := _changed_keys(saved, now):
            raise CheckpointError(f"{run_dir}/model.json: the run was started with another config ({', '.join(changed)}"
                                  f" differ); resume with it (only train.{', train.'.join(RESUMABLE_CHANGES)} may "
                                  "change)")
        return
    if (run_dir / "trainer.json").exists():
        raise CheckpointError(f"{run_dir}: a run already exists there; pass --resume or choose another --run-dir")
    if not write:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    c = splits.corpus
    (run_dir / "metrics.jsonl").write_text("")
    write_json(run_dir / "model.json", {"format": 1, "num_items": c.num_items, "config": to_dict(cfg)})
    write_json(run_dir / "id_maps.json", {"items": c.item_ids.tolist(), "users": c.user_ids.tolist()})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    if not cfg.data.mmap:  # a memory-mapped corpus may not fit twice on disk: such runs read their log
        save_run_corpus(run_dir, cfg, c)


RUN_CORPUS = "corpus.npz"


def save_run_corpus(run_dir: Path, cfg: ExperimentConfig, corpus: Corpus) -> None:
    """The prepared corpus (.npz, no pickle) and data.json: the source log's path and sha256, the copy's sha256.
    eval, serve, plot and recommend read this copy, so the run directory works without the log."""
    corpus.save(run_dir / RUN_CORPUS)
    try:
        source, _ = resolve(cfg.data.name, fetch=False)
        where, digest = str(source.resolve()), sha256_of(source) if source.is_file() else ""
    except DataError:  # read from the corpus cache, its log since removed: nothing to hash
        where, digest = cfg.data.name, ""
    write_json(run_dir / "data.json", {"format": 1, "source": where, "source_sha256": digest, "corpus": RUN_CORPUS,
                                       "corpus_sha256": sha256_of(run_dir / RUN_CORPUS)})


def _log_splits(run_dir: Path, cfg: ExperimentConfig, quiet: bool) -> Splits:
    """The splits of a run that holds no corpus copy, from its log; a log that is gone (or now unreadable) is one
    error that says why the run needs it."""
    try:
        return load_data(cfg, quiet)
    except DataError as e:
        why = ("a data.mmap run keeps no copy of its corpus" if cfg.data.mmap else
               "this run holds no copy of its corpus (written before runs kept one)")
        raise CheckpointError(f"{run_dir}: {why} and needs its log {cfg.data.name}: {e}") from None


def train_splits(cfg: ExperimentConfig, run_dir: Path, resume: bool, quiet: bool = False) -> Splits:
    """A fresh run's splits from the log its config names; a resumed run's from its own corpus copy, so that it
    resumes without the log too (the log, where present, checked against the sha256 recorded at the start)."""
    if not resume:
        return load_data(cfg, quiet)
    if not (run_dir / "data.json").is_file():
        return _log_splits(run_dir, cfg, quiet)
    splits = run_splits(run_dir, cfg)
    meta = read_run_json(run_dir / "data.json")
    source = Path(meta["source"])
    if not quiet and meta["source_sha256"] and source.is_file() and sha256_of(source) != meta["source_sha256"]:
        print(f"data: {source} changed since the run started (sha256 differs from {run_dir}/data.json); resuming on "
              "the run's own copy of the corpus", file=sys.stderr)
    return splits


def run_splits(run_dir: Path, cfg: ExperimentConfig) -> Splits:
    """The run's splits from its own corpus copy (data.json), or, for a run written before runs held one (or a
    data.mmap run), from the log its config names."""
    if not (run_dir / "data.json").is_file():
        return _log_splits(run_dir, cfg, quiet=True)
    meta = read_run_json(run_dir / "data.json")
    path = run_dir / meta["corpus"]
    if Path(meta["corpus"]).name != meta["corpus"]:
        raise CheckpointError(f"{run_dir}/data.json: field corpus must name a file in the run directory")
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (named by {run_dir}/data.json)")
    if sha256_of(path) != meta["corpus_sha256"]:
        raise CheckpointError(f"{path}: sha256 differs from data.json's corpus_sha256 (a damaged copy)")
    d = cfg.data
    return make_splits(Corpus.load(path), d.split, d.temporal_valid, d.temporal_test)


