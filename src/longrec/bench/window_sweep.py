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

from longrec.argtypes import positive_int
from longrec.bench import harness
from longrec.config import load_config
from longrec.data.corpus import Corpus
from longrec.errors import ConfigError, LongrecError
from longrec.metrics import by_length, metrics_from_ranks, ndcg_per_row, paired_bootstrap
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


def parse_ref(text: str) -> tuple[int, str]:
    idx, _, win = text.partition(":")
    if not idx.isdigit() or not win:
        raise argparse.ArgumentTypeError(f"must look like 0:200 or 0:own, got {text!r}")
    return int(idx), win


def sweep(runs: list[Path], windows: list[str | int], split: str, long: int, batch: int) -> list[dict[str, Any]]:
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
        ecfg = dataclasses.replace(cfg.eval, batch_size=batch, sampled="none")  # the run's own history masking
        full = int(rows.ends.max())
        learned = isinstance(scorer, EncoderScorer) and scorer.model.pos_emb is not None
        for w in windows:
            n = scorer.max_len if w == "own" else full if w == "full" else int(w)
            t0 = time.perf_counter()
            res = evaluate(scorer, splits, rows, dataclasses.replace(ecfg, window=n), seed=cfg.seed + (split == "test"))
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
    """The sweep's tables, a row per cell: accuracy with the paired CIs against the reference; NDCG@10 by history
    length (the same users in every cell); NDCG@10 / Recall@10 on repeated and on new targets."""
    nan, c0, f4 = float("nan"), cells[0], ".4f"

    def ci(d: dict[str, float]) -> str:
        return f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"

    def both(m: dict[str, float]) -> str:
        return f"{m.get('ndcg@10', nan):.4f} / {m.get('recall@10', nan):.4f}"

    runs = [(f"{c['name']} ({c['trained_n']})", c) for c in cells]
    main = [{"run": r, "N": f"{c['window']}={c['n']}" + (" (pos clamped)" if c["pos_clamped"] else ""),
             "ndcg": c["metrics"]["ndcg@10"], "recall": c["metrics"]["recall@10"],
             "long": c["long"].get("ndcg@10", nan), "ci": ci(c["ci_all"]), "ci_long": ci(c["ci_long"]),
             "sec": c["sec_per_1k_users"]} for r, c in runs]
    head = ["run (trained N)", "eval N", "NDCG@10", "Recall@10", f"NDCG@10, users ≥ {long} ({ref['long_users']})",
            "Δ NDCG@10 vs ref [95% CI]", f"Δ on users ≥ {long} [95% CI]", "s / 1k users"]
    out = [harness.markdown(main, list(main[0]), head, {"ndcg": f4, "recall": f4, "long": f4, "sec": ".2f"})]
    buckets = list(c0["by_length"])
    by = [{"run": r, "N": c["n"], **{b: c["by_length"][b]["ndcg@10"] for b in buckets}} for r, c in runs]
    head = ["run (trained N)", "eval N", *(f"{b} ({c0['by_length'][b]['users']})" for b in buckets)]
    out += ["", "NDCG@10 by history length (users):", "",
            harness.markdown(by, list(by[0]), head, dict.fromkeys(buckets, f4))]
    if c0["repeat_users"]:
        rep = [{"run": r, "N": c["n"], "repeat": both(c["repeat"]), "new": both(c["new"])} for r, c in runs]
        out += ["", f"By target: {c0['repeat_users']} of {c0['users']} targets repeat an earlier item of the user "
                "(NDCG@10 / Recall@10):", "",
                harness.markdown(rep, list(rep[0]), ["run (trained N)", "eval N", "repeated targets", "new targets"])]
    out += ["", f"Reference: {ref['name']} at N = {ref['n']}; protocol: {c0['protocol']}; {c0['users']} users; "
            "paired bootstrap over users, 2,000 resamples."]
    return "\n".join(out)


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
    p.add_argument("--ref", type=parse_ref, default=(0, "own"), help="reference cell RUN_INDEX:WINDOW (default 0:own)")
    p.add_argument("--split", choices=["test", "valid"], default="test")
    p.add_argument("--long", type=positive_int, default=300,
                   help="the long-history group: users with >= LONG events")
    p.add_argument("--batch-size", type=positive_int, default=64,
                   help="evaluation batch (long windows need small ones)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/window-sweep"), help="directory for the outputs")
    args = p.parse_args(argv)
    try:
        runs = list(args.runs)
        if args.train:
            runs += train_windows(args.train, args.train_windows, args.runs_root, args.override)
        if not runs:
            p.error("give run directories, or --train CONFIG")
        cells = sweep(runs, args.windows, args.split, args.long, args.batch_size)
        ref = add_cis(cells, args.ref)
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
