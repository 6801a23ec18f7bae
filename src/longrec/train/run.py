"""Reopen a finished run directory: config, id maps and best weights, then re-evaluate."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from longrec.config import ExperimentConfig, config_from_dict
from longrec.data.split import Splits
from longrec.errors import CheckpointError, ConfigError
from longrec.metrics import format_table
from longrec.model.encoder import SeqEncoder
from longrec.objectives import build_model, mask_token
from longrec.scoring import EncoderScorer, Scorer
from longrec.train.baseline import baseline_scorer
from longrec.train.checkpoint import load_model_weights, write_json
from longrec.train.evaluate import evaluate
from longrec.train.rundir import run_splits
from longrec.train.runfiles import read_run_json, same_item_ids
from longrec.train.runinfo import peak_memory_mib, pick_device, provenance


def _saved_config(run_dir: Path) -> tuple[dict[str, Any], ExperimentConfig]:
    """model.json's content and its config."""
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run directory")
    meta = read_run_json(run_dir / "model.json")
    try:
        return meta, config_from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{run_dir}/model.json: invalid saved config ({e})") from None


def load_run(run_dir: Path, device: torch.device | None = None) -> tuple[ExperimentConfig, SeqEncoder, Splits]:
    """The run's config, its best model (eval mode) and its data splits; the id maps must match the data."""
    meta, cfg = _saved_config(run_dir)
    if cfg.model.baseline:
        raise CheckpointError(f"{run_dir}: a {cfg.model.baseline} baseline run has no model (use load_scorer)")
    splits = run_splits(run_dir, cfg)
    if not same_item_ids(run_dir / "id_maps.json", splits.corpus.item_ids):
        raise CheckpointError(f"{run_dir}/id_maps.json: the run's item ids differ from dataset {cfg.data.name}")
    device = device or pick_device(cfg.train.device)
    model = build_model(int(meta["num_items"]), cfg.model, cfg.train)
    load_model_weights(model, run_dir / "best.safetensors")
    return cfg, model.to(device).eval(), splits


def load_scorer(run_dir: Path, device: torch.device | None = None) -> tuple[ExperimentConfig, Scorer, Splits]:
    """The run's config, a Scorer for it (its best model, or the counted baseline) and its data splits."""
    _, cfg = _saved_config(run_dir)
    if cfg.model.baseline:
        splits = run_splits(run_dir, cfg)
        return cfg, baseline_scorer(cfg, splits), splits
    cfg, model, splits = load_run(run_dir, device)
    return cfg, EncoderScorer(model, mask_token(model, cfg.train)), splits


def evaluate_run(run_dir: Path, split: str = "test", mask_history: bool = True, sampled: str = "none",
                 negatives: int = 100) -> dict[str, Any]:
    """Evaluate the best checkpoint; writes eval-<split>-<protocol>.json in the run directory."""
    t0 = time.time()
    cfg, scorer, splits = load_scorer(run_dir)
    ecfg = dataclasses.replace(cfg.eval, mask_history=mask_history, sampled=sampled, negatives=negatives)
    device = scorer.device
    rows = splits.test if split == "test" else splits.valid
    seed = cfg.seed + (1 if split == "test" else 0)
    res = evaluate(scorer, splits, rows, ecfg, seed=seed)
    tag = sampled if sampled != "none" else ("full" if mask_history else "full-unmasked")
    out = {"run": str(run_dir), "split": split, "protocol": res["protocol"], "users": res["users"],
           "metrics": res["metrics"], "by_length": res["by_length"], "wall_seconds": time.time() - t0,
           "peak_memory": peak_memory_mib(device), **provenance(device, cfg.seed)}
    write_json(run_dir / f"eval-{split}-{tag}.json", out)
    print(f"{cfg.name}: {split} ({res['protocol']}, {res['users']} users)")
    print(format_table(res["metrics"], cfg.eval.ks))
    print(f"mrr (full list) {res['metrics']['mrr']:.4f}")
    return out


__all__ = ["load_run", "load_scorer", "evaluate_run"]
