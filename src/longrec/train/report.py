"""Markdown tables from finished runs' results.json, for docs/RESULTS.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrec.errors import CheckpointError
from longrec.train.checkpoint import read_json

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


def row(res: dict[str, Any], run: str) -> list[str]:
    t, tr, cfg = res["test"], res["training"], res["config"]
    model = cfg["model"]["mixer"] + "".join(f" {k}={v}" for k, v in cfg["model"]["mixer_args"].items())
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
    earlier = [s["git_commit"][:12] for s in res.get("segments", [])[:-1]]
    earlier = [c for i, c in enumerate(earlier) if c != last and c not in earlier[:i]]
    return last + (f" (resumed; earlier {', '.join(earlier)})" if earlier else "")


def peak_mib(peak: dict[str, float]) -> str:
    """"1309" on CPU; "1466, 273" when the run also has a CUDA peak (max_memory_allocated)."""
    rss = f"{peak['cpu_rss_mib']:.0f}"
    return f"{rss}, {peak['cuda_mib']:.0f}" if "cuda_mib" in peak else rss


def table(run_dirs: list[Path]) -> str:
    """One markdown row per run; the protocol of every run is listed under the table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    protocols = set()
    for d in run_dirs:
        path = d / "results.json"
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (is the run finished?)")
        res = read_json(path)
        lines.append("| " + " | ".join(row(res, d.name)) + " |")
        protocols.add(res["protocol"])
    lines.append("")
    lines.append("Test split; protocol: " + "; ".join(sorted(protocols)) + ".")
    return "\n".join(lines)
