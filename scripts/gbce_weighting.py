"""Why gBCE stalls here: one SASRec training with the loss swapped for a variant of gBCE (t = 0).

    python scripts/gbce_weighting.py VARIANT RUN_DIR [config overrides...]

VARIANT:
  gbce         longrec's `loss: gbce` unchanged (K negatives per sequence, mean over the 1 + K logits: 1:K)
  per-position K negatives drawn for every position, as gSASRec draws them; still 1:K
  balanced     K negatives per sequence (as gbce), positive term weighted 1:1 against the negatives' mean
Every other setting comes from the `sasrec` preset and the overrides (docs/RESULTS.md has the commands and
the measured curves). An investigation script, not a supported loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import longrec.train.loop as loop
from longrec.config import TrainConfig, load_config
from longrec.losses import _sampled_logits, gbce_beta, select
from longrec.train.objective import LossFn


def variant_loss(variant: str, train: TrainConfig, num_items: int) -> LossFn:
    k, beta = train.negatives, gbce_beta(train.negatives, num_items, train.gbce_t)

    def per_position(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        hs, ts = select(h, targets)
        neg_ids = torch.randint(1, num_items + 1, (len(ts), k), generator=gen, device=h.device)  # [M, K]
        pos = (hs * table[ts]).sum(-1).float()
        neg = torch.einsum("md,mkd->mk", hs, table[neg_ids]).float()
        neg_loss = F.softplus(neg).masked_fill(neg_ids == ts[:, None], 0.0).sum(-1)
        return ((beta * F.softplus(-pos) + neg_loss) / (k + 1)).mean()

    def balanced(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        neg_ids = torch.randint(1, num_items + 1, (len(targets), k), generator=gen, device=h.device)  # [B, K]
        pos, neg, hit = _sampled_logits(h, targets, table, neg_ids)
        return beta * F.softplus(-pos).mean() + F.softplus(neg).masked_fill(hit, 0.0).mean()

    return {"per-position": per_position, "balanced": balanced}[variant]


def main() -> None:
    variant, run_dir, *overrides = sys.argv[1:]
    if variant not in ("gbce", "per-position", "balanced"):
        raise SystemExit(f"unknown variant {variant!r}: gbce | per-position | balanced")
    cfg = load_config("sasrec", ["train.loss=gbce", *overrides])
    if variant != "gbce":
        loop.make_loss = lambda train, n, counts: variant_loss(variant, train, n)  # type: ignore[assignment]
    loop.fit(cfg, Path(run_dir))


if __name__ == "__main__":
    main()
