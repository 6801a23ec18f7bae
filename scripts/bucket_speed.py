"""Length buckets (`train.bucket`) against random batches, side by side: padded cells and training time.

    python scripts/bucket_speed.py [CONFIG] [--bucket 50] [--batches 150] [--repeats 2] [--threads 1] [a.b=v ...]

CONFIG is a preset or YAML file (default linrec-sasrec on ml-1m). Prints, for random batches (bucket 0) and for
--bucket: the cells (rows x columns) of one whole epoch as the loader cuts them (the config's own cuts, 0 = every
prefix; no model is run), then the seconds of training steps on the first --batches batches of that epoch (the
buckets' batches are shuffled, so these are a fair sample), in alternating A/B pairs from the same seed, with the
ratio of each pair. Columns that are padding in every row are cut in both arms: what the buckets add is rows of
like length sharing a batch.
An investigation script (issue 4, the LinRec paper protocol's cost), not part of the library.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import time

import numpy as np
import torch

from longrec.config import ExperimentConfig, load_config
from longrec.data.loader import train_item_counts
from longrec.data.split import Splits
from longrec.objectives import build_model
from longrec.train.loop import Trainer, epoch_batches, load_data, make_optimizer, train_step
from longrec.train.losses import make_loss


def cells(cfg: ExperimentConfig, splits: Splits) -> tuple[int, int, int]:
    """(batches, rows, cells) of epoch 1 as the loader yields it."""
    nb = rows = total = 0
    for b in epoch_batches(cfg, splits, np.random.default_rng([cfg.seed, 1])):
        nb, rows, total = nb + 1, rows + b.items.shape[0], total + b.items.numel()
    return nb, rows, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", nargs="?", default="linrec-sasrec")
    ap.add_argument("overrides", nargs="*", help="a.b=v config overrides (default data.name=ml-1m)")
    ap.add_argument("--bucket", type=int, default=50)
    ap.add_argument("--batches", type=int, default=150, help="batches timed per arm")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cfg = load_config(args.config, ["data.name=ml-1m", *args.overrides])
    torch.set_num_threads(args.threads)
    splits = load_data(cfg)
    arms = {b: dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, bucket=b)) for b in (0, args.bucket)}
    print(f"{cfg.name} on {cfg.data.name}, max_len {cfg.model.max_len}, batch {cfg.train.batch_size}, "
          f"objective {cfg.train.objective} (cuts {cfg.train.cuts}), torch {torch.__version__}, "
          f"{args.threads} thread(s)")
    print("\n| bucket | batches | rows | cells | cells / rows x max_len |\n|---|---|---|---|---|")
    for b, c in arms.items():
        nb, rows, total = cells(c, splits)
        print(f"| {b} | {nb} | {rows} | {total} | {total / (rows * cfg.model.max_len):.3f} |")

    counts = torch.from_numpy(train_item_counts(splits))
    print(f"\ntraining steps (the trainer's train_step: forward, backward, clip, AdamW) on the first "
          f"{args.batches} batches of epoch 1, seconds, and cells of those batches:")
    print(f"\n| pair | bucket 0 | bucket {args.bucket} | ratio | cells ratio |\n|---|---|---|---|---|")
    for r in range(args.repeats):
        secs, used = {}, {}
        for b, c in arms.items():
            torch.manual_seed(c.seed)
            model = build_model(splits.corpus.num_items, c.model, c.train).train()
            opt = make_optimizer(model, c.train)
            loss_fn = make_loss(c.train, model.num_items, lambda: counts)
            it = epoch_batches(c, splits, np.random.default_rng([c.seed, 1]))
            batches = list(itertools.islice(it, args.batches))
            t0 = time.perf_counter()
            trainer = Trainer(c, splits, model, model, opt, loss_fn, torch.device("cpu"))
            for batch in batches:
                train_step(trainer, batch)
            secs[b], used[b] = time.perf_counter() - t0, sum(x.items.numel() for x in batches)
        print(f"| {r + 1} | {secs[0]:.1f} | {secs[args.bucket]:.1f} | {secs[0] / secs[args.bucket]:.2f} | "
              f"{used[args.bucket] / used[0]:.3f} |")

if __name__ == "__main__":
    main()
