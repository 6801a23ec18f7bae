"""Where trained attention looks: the share of each layer's attention at the newest position by lag.

    python scripts/attention_recency.py RUN_DIR [RUN_DIR ...] [--users 512] [--seed 0]

For the test input of up to --users users (seeded choice among those with a full max_len window), takes each
layer's attention matrix (softmax: the probabilities; LinRec: B' = Q^ K^^T, whose entries may be negative) at
the newest query position, normalises its absolute values to shares p, and prints per run and layer (mean over
users and heads): the share on lag 0 (the newest event itself), on lags 1-4, 5-19 and >= 20, the largest single
share, and the effective number of events attended, 1 / sum p^2. An investigation script (issue 4's gap,
docs/RESULTS.md), not part of the library.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from longrec.plots import attention_maps
from longrec.train.run import load_run

BANDS = ((0, 1), (1, 5), (5, 20), (20, None))


def recency(run_dir: Path, users: int, seed: int) -> list[dict[str, float]]:
    """Per layer: mean share by lag band, mean largest share, mean effective number of events."""
    _, model, splits = load_run(run_dir, torch.device("cpu"))
    n = model.max_len
    corpus, test = splits.corpus, splits.test
    full = [(int(u), int(end)) for u, end in zip(test.users, test.ends, strict=True) if end >= n]
    pick = np.random.default_rng(seed).choice(len(full), size=min(users, len(full)), replace=False)
    seqs = np.stack([corpus.seq(full[i][0])[: full[i][1]][-n:] for i in pick])  # the test inputs' newest n
    items = torch.from_numpy(seqs.astype(np.int64))
    rows = []
    for w in attention_maps(model, items, items > 0):  # [B, H, N, N] per layer
        p = w[:, :, -1, :].abs().flip(-1).double()  # [B, H, N]: the newest query's row, index = lag
        p = p / p.sum(-1, keepdim=True)
        row = {f"lag {lo}" + (f"-{hi - 1}" if hi and hi - lo > 1 else "" if hi else "+"): p[..., lo:hi].sum(-1).mean()
               for lo, hi in BANDS}
        row |= {"max share": p.max(-1).values.mean(), "effective events": (1 / p.square().sum(-1)).mean()}
        rows.append({k: float(v) for k, v in row.items()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    opts = ap.parse_args()
    torch.set_num_threads(1)
    header = None
    for run in opts.runs:
        for layer, row in enumerate(recency(run, opts.users, opts.seed), start=1):
            if header is None:
                header = ["run", "layer", *row]
                print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
            print(f"| {run.name} | {layer} | " + " | ".join(f"{v:.3f}" if v < 10 else f"{v:.1f}" for v in row.values())
                  + " |")


if __name__ == "__main__":
    main()
