"""What a finished run records: its progress through training (trainer.json) and its results.json."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longrec.config import ExperimentConfig, to_dict
from longrec.data.split import Splits
from longrec.metrics import format_table
from longrec.scoring import Scorer
from longrec.train.checkpoint import write_json
from longrec.train.distributed import SINGLE, Dist
from longrec.train.evaluate import evaluate
from longrec.train.runinfo import peak_memory_mib


@dataclass
class Progress:
    """What --resume needs besides weights and optimizer state (saved as trainer.json)."""

    epoch: int = 0
    best: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0  # training + validation wall time over all finished epochs
    seconds_to_best: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0  # wall time of the run's starts up to the last finished epoch, summed
    # one entry per start (the first and each --resume): the epoch it started after, its code and device
    segments: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Finished:
    """A run at its end, as results.json records it beside the metrics: config, data, progress, provenance
    (runinfo.provenance), parameter count, wall seconds over every start, and the processes."""

    cfg: ExperimentConfig
    splits: Splits
    prog: Progress
    origin: dict[str, Any]
    params: int = 0
    wall: float = 0.0  # seconds before the final evaluation, every start summed
    d: Dist = SINGLE


def write_results(run: Finished, run_dir: Path, scorer: Scorer) -> dict[str, Any]:
    """Evaluate `scorer` on valid and test (valid only when eval.test is false), write results.json (rank 0) and
    print the test table (the valid one without test)."""
    cfg, splits, prog, d = run.cfg, run.splits, run.prog, run.d
    t0 = time.time()
    valid = evaluate(scorer, splits, splits.valid, cfg.eval, seed=cfg.seed, dist=d)
    test = evaluate(scorer, splits, splits.test, cfg.eval, seed=cfg.seed + 1, dist=d) if cfg.eval.test else {}
    n = len(prog.epoch_seconds)
    results = {
        "name": cfg.name,
        "protocol": valid["protocol"],
        "valid": valid["metrics"],
        **({"test": test["metrics"], "test_by_length": test["by_length"]} if test else {}),  # eval.test=false: none
        "users": {"valid": valid["users"], **({"test": test["users"]} if test else {}), "dropped": splits.dropped},
        "training": {"epochs": prog.epoch, "best_epoch": prog.best_epoch,
                     "seconds_per_epoch": sum(prog.epoch_seconds) / n if n else 0.0,
                     "seconds_to_best": prog.seconds_to_best, "train_seconds": prog.train_seconds,
                     "params": run.params, "processes": d.world},
        # every start of the run, summed, this final evaluation included (time between a stop and its --resume not)
        "wall_seconds": run.wall + time.time() - t0,
        "segments": prog.segments,
        "peak_memory": peak_memory_mib(scorer.device),
        **run.origin,
        "config": to_dict(cfg),
    }
    if d.main:
        write_json(run_dir / "results.json", results)
        shown, split = (test, "test") if test else (valid, "valid (eval.test=false: the test split not evaluated)")
        print(f"\n{cfg.name}: {split} ({shown['protocol']}, {shown['users']} users)")
        print(format_table(shown["metrics"], cfg.eval.ks))
    return results


