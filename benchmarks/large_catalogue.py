"""Large-catalogue benchmark: peak memory and time of one loss forward+backward over a 1M-item catalogue.

A synthetic log of --events events over --items items (Zipf popularity, users of --seq-len events) gives the
targets of a batch of B sequences x N positions and the training counts of the popularity sampler. Each cell
runs one loss on encoder outputs h [B,N,D] (random, as the encoder's memory does not depend on the catalogue)
and the item table [I+1,D], in a fresh interpreter: memory is the growth of its peak resident set (VmHWM, see
longrec.bench.harness) over a baseline taken after the inputs exist and a small warm-up of the same loss has run
(library pages and thread pools resident). Every loss that touches the table has a dense [I+1,D] fp32 gradient
((I+1)*D*4 bytes, 244 MiB at 1M x 64): that floor is part of the growth.

The naive full cross-entropy materialises [M, I+1] logits; M = positions with a target. It runs only where
its predicted peak (`predicted_full_ce_mib`, checked against the measured cells) is under --cap-gib;
elsewhere the table reports the prediction ("would need").

    python -m benchmarks.large_catalogue --threads 1   # from the repository root
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from longrec.bench.harness import CellFailed, markdown, peak_rss_mib, rss_mib, run_cell, write_csv
from longrec.config import TrainConfig
from longrec.data.synthetic import zipf_ranks
from longrec.losses import full_ce, select
from longrec.train.losses import make_loss

LOSSES = {  # name -> TrainConfig of the loss; "full_ce" is the naive reference
    "full_ce": None,
    "chunked_ce": TrainConfig(loss="ce"),
    "sampled_popularity": TrainConfig(loss="sampled", sampler="popularity", negatives=256),
    "sampled_in_batch": TrainConfig(loss="sampled", sampler="in_batch", negatives=256),
    "gbce": TrainConfig(loss="gbce", negatives=256),
}
COLUMNS = ("loss", "B", "N", "positions", "items", "dim", "status", "peak_growth_mib", "predicted_mib", "seconds")


def predicted_full_ce_mib(positions: int, items: int, dim: int) -> float:
    """max(3 L, L + T): logits L = M (I+1) 4 bytes held with log-softmax and a gradient buffer in the backward,
    then the logits' gradient with the table gradient T = (I+1) D 4 bytes."""
    logits, table_grad = positions * (items + 1) * 4, (items + 1) * dim * 4
    return max(3 * logits, logits + table_grad) / 2**20


def synthetic_log(items: int, events: int, seq_len: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """([U, seq_len] item ids 1..I of U = events // seq_len users, [I+1] counts); Zipf(1) item popularity."""
    rng = np.random.default_rng(seed)
    seqs = np.empty((events // seq_len, seq_len), dtype=np.int32)
    for s in range(0, len(seqs), 10_000):  # bounded temporaries
        block = seqs[s : s + 10_000]
        block[:] = zipf_ranks(rng, items, 1.0, block.shape) + 1
    counts = np.bincount(seqs.ravel(), minlength=items + 1).astype(np.float64)
    return seqs, counts


def run_loss(name: str, h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, counts: torch.Tensor) -> float:
    gen = torch.Generator().manual_seed(0)
    train = LOSSES[name]
    if train is None:
        loss = full_ce(*select(h, targets), table)
    else:
        loss = make_loss(train, table.shape[0] - 1, lambda: counts)(h, targets, table, gen)
    loss.backward()
    return float(loss.item())


def cell(args: dict[str, Any]) -> dict[str, Any]:
    """One measurement, in this (fresh) process: inputs, warm-up, baseline, then the loss."""
    torch.set_num_threads(args["threads"])
    z = np.load(args["data"])
    b, n, items, dim = args["B"], args["N"], args["items"], args["dim"]
    counts = torch.from_numpy(z["counts"])
    targets = torch.from_numpy(z["targets"][:b, :n].astype(np.int64))  # [B, N]: the items the positions predict
    warm_table = torch.randn(1001, dim, requires_grad=True)
    run_loss(args["loss"], torch.randn(2, 8, dim, requires_grad=True), torch.randint(1, 1001, (2, 8)), warm_table,
             counts[:1001])
    del warm_table
    table = torch.randn(items + 1, dim).mul_(0.05).requires_grad_()  # in place: no freed temporary below the peak
    h = torch.randn(b, n, dim).mul_(0.5).requires_grad_()
    gc.collect()
    base = peak_rss_mib()
    slack = base - rss_mib()  # freed memory under the high-water mark would hide growth: keep it ~0
    t0 = time.perf_counter()
    value = run_loss(args["loss"], h, targets, table, counts)
    return {"loss_value": value, "seconds": time.perf_counter() - t0, "baseline_mib": base,
            "baseline_slack_mib": slack, "peak_growth_mib": peak_rss_mib() - base}


def measure(loss: str, b: int, n: int, opts: argparse.Namespace, data: Path) -> dict[str, Any]:
    row: dict[str, Any] = {"loss": loss, "B": b, "N": n, "positions": b * n, "items": opts.items, "dim": opts.dim,
                           "predicted_mib": "", "peak_growth_mib": "", "seconds": ""}
    if loss == "full_ce":
        row["predicted_mib"] = round(predicted_full_ce_mib(b * n, opts.items, opts.dim))
        if row["predicted_mib"] > opts.cap_gib * 1024:
            return {**row, "status": f"would need {row['predicted_mib'] / 1024:.1f} GiB"}
    spec = {"loss": loss, "B": b, "N": n, "items": opts.items, "dim": opts.dim, "threads": opts.threads,
            "data": str(data)}
    try:
        out = run_cell("benchmarks.large_catalogue", spec, opts.time_limit)
    except CellFailed as e:
        return {**row, "status": f"{e.status}: {e.note[:80]}"}
    if out["baseline_slack_mib"] > 16:
        print(f"warning: {out['baseline_slack_mib']:.0f} MiB freed under the baseline peak; growth may read low",
              file=sys.stderr)
    return {**row, "status": "ok", "peak_growth_mib": round(out["peak_growth_mib"]),
            "seconds": round(out["seconds"], 2)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.large_catalogue", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--seq-len", type=int, default=200, help="events per synthetic user; N <= seq-len - 1")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--naive", type=int, nargs="*", default=[32, 64, 128, 3200, 25600],
                   help="positions B*N of the full_ce cells (N = min(positions, 200))")
    p.add_argument("--chunked", type=int, nargs="*", default=[32, 128, 800, 3200], help="positions of chunked_ce")
    p.add_argument("--sampled", type=int, nargs="*", default=[3200, 25600], help="positions of the sampled losses")
    p.add_argument("--cap-gib", type=float, default=3.0, help="never run a full_ce cell predicted above this")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per cell")
    p.add_argument("--out", default="runs/bench/large_catalogue")
    p.add_argument("--cell", default="", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.cell:
        print(json.dumps(cell(json.loads(opts.cell))))
        return
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seqs, counts = synthetic_log(opts.items, opts.events, opts.seq_len)
    max_b = -(-max(opts.naive + opts.chunked + opts.sampled) // 200)
    print(f"synthetic log: {seqs.size:,} events, {opts.items:,} items, {len(seqs):,} users "
          f"({time.time() - t0:.1f}s)", file=sys.stderr)
    plan = [("full_ce", m) for m in opts.naive] + [("chunked_ce", m) for m in opts.chunked]
    plan += [(loss, m) for m in opts.sampled for loss in ("sampled_popularity", "sampled_in_batch", "gbce")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="large-catalogue-") as tmp:
        data = Path(tmp) / "batch.npz"  # what the cells need of the log: a batch of targets and the counts
        np.savez(data, targets=seqs[:max_b], counts=counts)
        del seqs
        for loss, m in plan:
            n = min(m, 200)
            rows.append(measure(loss, -(-m // n), n, opts, data))
            print(" | ".join(str(rows[-1][c]) for c in COLUMNS), file=sys.stderr)
    path = write_csv(out / "large-catalogue.csv", rows, COLUMNS)
    print(markdown(rows, COLUMNS))
    print(f"\nwritten {path}; {opts.threads} thread(s); peak growth: of the peak RSS (VmHWM) in a fresh process")


if __name__ == "__main__":
    main()
