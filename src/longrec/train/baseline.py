"""Fit a non-neural baseline (longrec.baselines): count the training events, evaluate valid and test once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from longrec.baselines import build_baseline
from longrec.config import ExperimentConfig
from longrec.data.loader import train_item_counts, train_sequences
from longrec.data.split import Splits
from longrec.scoring import Scorer
from longrec.train.evaluate import check_data
from longrec.train.results import Finished, Progress, write_results
from longrec.train.rundir import load_data, prepare_run_dir
from longrec.train.runinfo import provenance, torch_threads


def fit_baseline(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """A non-neural baseline: count the training events, evaluate valid and test once, write the run directory."""
    with torch_threads(cfg.train.threads):  # the counting and the scoring run on torch: train.threads holds too
        return _fit_baseline(cfg, run_dir)


def _fit_baseline(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    wall0 = time.time()
    device = torch.device("cpu")
    origin = provenance(device, cfg.seed)
    splits = load_data(cfg)
    check_data(cfg, splits)
    scorer = baseline_scorer(cfg, splits)
    prepare_run_dir(cfg, run_dir, False, splits)
    prog = Progress(segments=[{"after_epoch": 0, "git_commit": origin["git_commit"], "device": origin["device"]}])
    return write_results(Finished(cfg, splits, prog, origin, wall=time.time() - wall0), run_dir, scorer)


def baseline_scorer(cfg: ExperimentConfig, splits: Splits) -> Scorer:
    """The config's counted baseline over the training part of `splits`."""
    counts = torch.from_numpy(train_item_counts(splits))
    return build_baseline(cfg.model.baseline, counts, cfg.model.max_len, cfg.model.baseline_args,
                          lambda: train_sequences(splits))
