"""Markdown tables from finished runs' results.json, for docs/RESULTS.md."""

from __future__ import annotations

import json
from itertools import accumulate
from pathlib import Path
from typing import Any

from longrec.config import ModelConfig
from longrec.errors import CheckpointError
from longrec.train.runfiles import read_run_json

COLUMNS = ("run", "dataset", "model", "NDCG@10", "Recall@10", "MRR@10", "NDCG@20", "epochs (best)",
           "s/epoch", "min to best", "wall min", "peak MiB (RSS, CUDA)", "device", "commit")


def training_objective(train: dict[str, Any]) -> str:
    """e.g. "next_item ce" or "next_item sampled popularity x256": what the model was trained on."""
    loss = train["loss"]
    if loss == "sampled":
        loss += f" {train.get('sampler', 'uniform')} x{train['negatives']}"
    elif loss in ("bce", "gbce"):
        loss += f" x{train['negatives']}"
    return f"{train['objective']} {loss}"


def split_of(res: dict[str, Any], path: Path) -> str:
    """"test", or "valid" for a run trained with eval.test=false (a longrec tune trial): the split a row shows."""
    if "test" in res:
        return "test"
    if "valid" in res:
        return "valid"
    raise CheckpointError(f"{path}: field test is missing")


def row(res: dict[str, Any], run: str, split: str = "test") -> list[str]:
    t, tr, cfg = res[split], res["training"], res["config"]
    m = cfg["model"]
    if m.get("baseline"):  # counted, not trained: no objective
        model = f"{m['baseline']} (baseline, window {m['max_len']})" + "".join(
            f" {k}={v}" for k, v in m.get("baseline_args", {}).items())
    else:
        model = m["mixer"] + "".join(f" {k}={v}" for k, v in m["mixer_args"].items())
        decays = "/".join(f"{g:g}" for g in m.get("repeat_decays", ()))
        model += " + repeat head" * bool(m.get("repeat")) + f" (decays {decays})" * bool(decays)
        model += " + time gaps" * (m.get("time", "none") != "none")
        dropout = m.get("dropout", ModelConfig.dropout)
        model += f" dropout={dropout:g}" * (dropout != ModelConfig.dropout)  # named where not the default
        model += f"; {training_objective(cfg['train'])}"
    return [
        run, cfg["data"]["name"], model, f"{t['ndcg@10']:.4f}", f"{t['recall@10']:.4f}", f"{t['mrr@10']:.4f}",
        f"{t['ndcg@20']:.4f}", f"{tr['epochs']} ({tr['best_epoch']})", f"{tr['seconds_per_epoch']:.1f}",
        f"{tr['seconds_to_best'] / 60:.1f}", f"{res['wall_seconds'] / 60:.1f}",
        peak_mib(res["peak_memory"]), res["device"], commits(res),
    ]


def commits(res: dict[str, Any]) -> str:
    """The commit that finished the run, and those of earlier starts when a --resume ran other code."""
    last = res["git_commit"][:12]
    earlier = [c for c in dict.fromkeys(s["git_commit"][:12] for s in res.get("segments", [])[:-1]) if c != last]
    return last + (f" (resumed; earlier {', '.join(earlier)})" if earlier else "")


def peak_mib(peak: dict[str, float]) -> str:
    """"1309" on CPU; "1466, 273" when the run also has a CUDA peak (max_memory_allocated)."""
    rss = f"{peak['cpu_rss_mib']:.0f}"
    return f"{rss}, {peak['cuda_mib']:.0f}" if "cuda_mib" in peak else rss


def time_to(epochs: list[dict[str, Any]], target: float, metric: str = "ndcg@10") -> float | None:
    """Cumulative seconds (training + validation) until the valid `metric` first reaches `target`; None if never.
    epochs: metrics.jsonl records ({"seconds": s, "valid": {metric: value}, ...}) in order."""
    done = zip(accumulate(e["seconds"] for e in epochs), epochs, strict=True)
    return next((t for t, e in done if e["valid"][metric] >= target), None)


def read_epochs(run_dir: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl records, in order; a missing file or a line that is not a JSON object names itself."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a run writes one record per epoch there)")
    epochs = []
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}:{no}: not JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise CheckpointError(f"{path}:{no}: expected a JSON object per line")
        epochs.append(record)
    return epochs


def _minutes_to(run_dir: Path, res: dict[str, Any], target: float) -> str:
    reached = time_to(read_epochs(run_dir), target, res["config"]["eval"]["metric"])
    return "not reached" if reached is None else f"{reached / 60:.1f}"


def table(run_dirs: list[Path], target: float | None = None) -> str:
    """One markdown row per run (a run trained with eval.test=false shows its validation figures, marked); the
    protocol of every run is listed under the table. With a target, a last column: minutes of training + validation
    until the valid metric (the runs' eval.metric) first reached it."""
    columns = COLUMNS + ((f"min to valid ≥ {target:g}",) if target is not None else ())
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    protocols: set[str] = set()
    valid_only = False
    for d in run_dirs:
        path = d / "results.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (is the run finished?)")
        res = read_run_json(path)
        split = split_of(res, path)
        valid_only |= split == "valid"
        cells = row(res, d.name + " (valid)" * (split == "valid"), split)
        lines.append("| " + " | ".join(cells + ([_minutes_to(d, res, target)] if target is not None else [])) + " |")
        protocols.add(res["protocol"])
    lines.append("")
    split = "Test split" + " (runs marked (valid): the validation split, trained with eval.test=false)" * valid_only
    lines.append(f"{split}; protocol: " + "; ".join(sorted(protocols)) + ".")
    return "\n".join(lines)
