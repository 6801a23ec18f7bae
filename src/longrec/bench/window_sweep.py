"""Does a longer history pay? Evaluate runs at several history windows N on the same users, with paired CIs.

Each run (a trained model or a counted baseline) ranks the same split's users with its input cut to the newest N
events, for every N in --windows ('full' = every event; 'own' = the run's model.max_len). Per cell: NDCG@10 and
Recall@10 overall, on the users with at least --long history events, by history-length bucket, and on targets
that repeat an earlier item of the user against new ones; the paired
bootstrap 95% CI of the per-user NDCG@10 difference against the reference cell (--ref RUN_INDEX:N; default the
first run at its own window); evaluation time per 1,000 users (the cost of N). With --train CONFIG --train-windows
the config is first trained at model.max_len = N for each N (a finished run is reused, an unfinished one resumed),
and those runs join the sweep: the control "trained at 200, evaluated at longer N" is the first run's row.

    longrec bench window-sweep --train configs/ml-1m-lrurec.yaml --train-windows 200 800 --windows own 50 200 800 full
    longrec bench window-sweep runs/a runs/b --windows 50 200 800 full --ref 0:200 --long 300 --out runs/sweep

Learned positions (SASRec) past model.max_len reuse the last one: such cells are marked '(pos clamped)'.
Writes OUT/window-sweep.json (cells, CIs, per-user NDCG@10), OUT/window-sweep.md and OUT/window-sweep.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longrec.argtypes import non_negative_int, positive_int
from longrec.config import load_config
from longrec.data.corpus import Corpus
from longrec.errors import ConfigError, LongrecError
from longrec.metrics import BUCKETS, by_length, metrics_from_ranks, ndcg_per_row, paired_bootstrap
from longrec.plots import pyplot, save
from longrec.scoring import EncoderScorer
from longrec.train.evaluate import evaluate, protocol
from longrec.train.loop import fit
from longrec.train.run import load_scorer


def train_windows(config: str, windows: list[int], root: Path, overrides: list[str]) -> list[Path]:
    """Train `config` at model.max_len = N for each N into root/<name>-n<N>; finished runs are kept as they are."""
    out = []
    for n in windows:
        cfg = load_config(config, [*overrides, f"model.max_len={n}"])
        cfg = dataclasses.replace(cfg, name=f"{cfg.name}-n{n}")
        run = root / cfg.name
        if not (run / "results.json").exists():
            fit(cfg, run, resume=(run / "trainer.json").exists())
        out.append(run)
    return out


def parse_window(text: str) -> str | int:
    if text in ("own", "full"):
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a window is a positive integer, 'own' or 'full', got {text!r}")
    return int(text)


def sweep(runs: list[Path], windows: list[str | int], split: str, long: int, batch: int,
          mask_history: bool | None) -> list[dict[str, Any]]:
    """One cell per (run, window): metrics, per-user NDCG@10 and seconds; raises when the runs' users differ."""
    cells: list[dict[str, Any]] = []
    users_key: tuple[list[str], list[int]] | None = None
    for i, run in enumerate(runs):
        cfg, scorer, splits = load_scorer(run)
        rows = splits.test if split == "test" else splits.valid
        key = (splits.corpus.user_ids[rows.users].astype(str).tolist(), rows.ends.tolist())
        if users_key is not None and key != users_key:
            raise LongrecError(f"{run}: its {split} users differ from {runs[0]}'s; a paired sweep needs the same rows")
        if users_key is None:  # the same rows in every run (checked above): computed once
            repeat = repeats(splits.corpus, rows.users, rows.ends)
        users_key = key
        ecfg = dataclasses.replace(cfg.eval, batch_size=batch, sampled="none",
                                   mask_history=cfg.eval.mask_history if mask_history is None else mask_history)
        device = next(scorer.model.parameters()).device if isinstance(scorer, EncoderScorer) else torch.device("cpu")
        full = int(rows.ends.max())
        learned = isinstance(scorer, EncoderScorer) and scorer.model.pos_emb is not None
        for w in windows:
            n = scorer.max_len if w == "own" else full if w == "full" else int(w)
            t0 = time.perf_counter()
            res = evaluate(scorer, splits, rows, ecfg, device, seed=cfg.seed + (split == "test"), window=n)
            sec = time.perf_counter() - t0
            ranks = res["ranks"]
            sel = rows.ends >= long
            cells.append({
                "run": str(run), "run_index": i, "name": cfg.name, "trained_n": cfg.model.max_len, "window": str(w),
                "n": n, "pos_clamped": bool(learned and n > scorer.max_len), "protocol": protocol(ecfg),
                "users": len(rows), "long_users": int(sel.sum()), "metrics": res["metrics"],
                "long": metrics_from_ranks(ranks[sel], ecfg.ks) if sel.any() else {},
                "by_length": by_length(ranks, rows.ends, ecfg.ks), "seconds": sec,
                "sec_per_1k_users": 1000 * sec / max(len(rows), 1), "ndcg10": ndcg_per_row(ranks, 10).tolist(),
                "long_mask": sel.tolist(), "repeat_users": int(repeat.sum()),
                "repeat": metrics_from_ranks(ranks[repeat], ecfg.ks) if repeat.any() else {},
                "new": metrics_from_ranks(ranks[~repeat], ecfg.ks) if (~repeat).any() else {},
            })
    return cells


def repeats(corpus: Corpus, users: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """[R] bool: the row's target is an item the user had before it (anywhere in seq[:end])."""
    return np.array([corpus.items[corpus.offsets[u] + e] in set(corpus.seq(u)[:e].tolist())
                     for u, e in zip(users.tolist(), ends.tolist(), strict=True)], dtype=bool)


def add_cis(cells: list[dict[str, Any]], ref: tuple[int, str], seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap CIs of every cell's per-user NDCG@10 minus the reference cell's (all users, long users)."""
    match = [c for c in cells if c["run_index"] == ref[0] and c["window"] == ref[1]]
    if not match:
        raise ConfigError(f"--ref {ref[0]}:{ref[1]}: no such cell (run index and a window from --windows)")
    r = match[0]
    rv, long = np.asarray(r["ndcg10"]), np.asarray(r["long_mask"])
    for c in cells:
        v = np.asarray(c["ndcg10"])
        c["ci_all"] = paired_bootstrap(v, rv, seed=seed)
        c["ci_long"] = paired_bootstrap(v[long], rv[long], seed=seed)
    return r


def markdown(cells: list[dict[str, Any]], ref: dict[str, Any], long: int) -> str:
    """The sweep table: one row per cell, the CI columns against the reference."""
    lo_hi = [f"{a + 1}-{b}" for a, b in zip((0, *BUCKETS), BUCKETS, strict=False)]
    head = (f"| run (trained N) | eval N | NDCG@10 | Recall@10 | NDCG@10, users ≥ {long} ({ref['long_users']}) | "
            f"Δ NDCG@10 vs ref [95% CI] | Δ on users ≥ {long} [95% CI] | s / 1k users |")
    lines = [head, "|" + "---|" * 8]
    for c in cells:
        a, lg = c["ci_all"], c["ci_long"]
        mark = " (pos clamped)" if c["pos_clamped"] else ""
        lines.append(
            f"| {c['name']} ({c['trained_n']}) | {c['window']}={c['n']}{mark} | {c['metrics']['ndcg@10']:.4f} | "
            f"{c['metrics']['recall@10']:.4f} | {c['long'].get('ndcg@10', float('nan')):.4f} | "
            f"{a['diff']:+.4f} [{a['lo']:+.4f}, {a['hi']:+.4f}] | {lg['diff']:+.4f} [{lg['lo']:+.4f}, {lg['hi']:+.4f}] "
            f"| {c['sec_per_1k_users']:.2f} |")
    buckets = [b for b in [*lo_hi, f">{BUCKETS[-1]}"] if any(b in c["by_length"] for c in cells)]
    lines += ["", "NDCG@10 by history length (users):", "",
              "| run (trained N) | eval N | " + " | ".join(
                  f"{b} ({cells[0]['by_length'].get(b, {}).get('users', 0)})" for b in buckets) + " |",
              "|" + "---|" * (2 + len(buckets))]
    for c in cells:
        vals = " | ".join(f"{c['by_length'][b]['ndcg@10']:.4f}" if b in c["by_length"] else "" for b in buckets)
        lines.append(f"| {c['name']} ({c['trained_n']}) | {c['n']} | {vals} |")
    if cells[0]["repeat_users"]:
        head = f"By target: {cells[0]['repeat_users']} of {cells[0]['users']} targets repeat an earlier item"
        lines += ["", head + " of the user (NDCG@10 / Recall@10):", "",
                  "| run (trained N) | eval N | repeated targets | new targets |", "|---|---|---|---|"]
        for c in cells:
            r, nw = c["repeat"], c["new"]
            lines.append(f"| {c['name']} ({c['trained_n']}) | {c['n']} | {r.get('ndcg@10', float('nan')):.4f} / "
                         f"{r.get('recall@10', float('nan')):.4f} | {nw.get('ndcg@10', float('nan')):.4f} / "
                         f"{nw.get('recall@10', float('nan')):.4f} |")
    lines += ["", f"Reference: {ref['name']} at N = {ref['n']}; protocol: {cells[0]['protocol']}; "
              f"{cells[0]['users']} users; paired bootstrap over users, 2,000 resamples."]
    return "\n".join(lines)


def plot(cells: list[dict[str, Any]], out: Path, long: int) -> Path | None:
    """Accuracy against N with the CIs (all users and long users), and evaluation cost against N."""
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i in sorted({c["run_index"] for c in cells}):
        mine = sorted((c for c in cells if c["run_index"] == i), key=lambda c: c["n"])
        label = f"{mine[0]['name']} (trained {mine[0]['trained_n']})"
        x = [c["n"] for c in mine]
        for ax, key, ci in ((axes[0], "metrics", "ci_all"), (axes[1], "long", "ci_long")):
            y = [c[key].get("ndcg@10", np.nan) for c in mine]
            err = np.array([[c[ci]["diff"] - c[ci]["lo"], c[ci]["hi"] - c[ci]["diff"]] for c in mine]).T
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        axes[2].plot(x, [c["sec_per_1k_users"] for c in mine], marker="o", label=label)
    axes[0].set_title("NDCG@10, all users\n(bars: paired 95% CI of the difference to the reference)", fontsize=9)
    axes[1].set_title(f"NDCG@10, the {cells[0]['long_users']} users with ≥ {long} events", fontsize=9)
    axes[2].set_title("evaluation seconds per 1,000 users")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("history window N (events)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return save(fig, out / "window-sweep.png")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="longrec bench window-sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, help="finished run directories (models or baselines)")
    p.add_argument("--train", default="", help="a preset or YAML config to train at each --train-windows N first")
    p.add_argument("--train-windows", type=positive_int, nargs="+", default=[200],
                   help="model.max_len values for --train")
    p.add_argument("--override", nargs="*", default=[], help="config overrides for --train (key=value)")
    p.add_argument("--runs-root", type=Path, default=Path("runs/sweep"), help="where --train writes its runs")
    p.add_argument("--windows", type=parse_window, nargs="+", default=["own", 50, 200, 800, "full"],
                   help="evaluation windows: integers, 'own' (the run's max_len) and 'full' (every event)")
    p.add_argument("--ref", default="0:own", help="reference cell RUN_INDEX:WINDOW (default 0:own)")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--long", type=non_negative_int, default=300,
                   help="the long-history group: users with >= LONG events")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="evaluation batch (long windows need small ones)")
    p.add_argument("--mask-history", choices=["run", "yes", "no"], default="run",
                   help="history masking: each run's eval.mask_history (run), or forced")
    p.add_argument("--out", type=Path, default=Path("runs/bench/window-sweep"), help="directory for the outputs")
    args = p.parse_args(argv)
    idx, _, win = args.ref.partition(":")
    if not idx.isdigit() or not win:
        p.error(f"--ref must look like 0:200 or 0:own, got {args.ref!r}")
    if args.long < 1 or args.batch_size < 1:
        p.error("--long and --batch-size must be positive")
    try:
        runs = list(args.runs)
        if args.train:
            runs += train_windows(args.train, args.train_windows, args.runs_root, args.override)
        if not runs:
            p.error("give run directories, or --train CONFIG")
        forced = None if args.mask_history == "run" else args.mask_history == "yes"
        cells = sweep(runs, args.windows, args.split, args.long, args.batch_size, forced)
        ref = add_cis(cells, (int(idx), win))
    except LongrecError as e:
        p.error(str(e))
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(cells, ref, args.long)
    (args.out / "window-sweep.md").write_text(table + "\n")
    record = {"argv": argv if argv is not None else sys.argv[1:], "cells": cells}
    (args.out / "window-sweep.json").write_text(json.dumps(record) + "\n")
    png = plot(cells, args.out, args.long)
    print(table)
    print(f"\nwrote {args.out}/window-sweep.json, .md" + (", .png" if png else ""))


if __name__ == "__main__":
    main()
