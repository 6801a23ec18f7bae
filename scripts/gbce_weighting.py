"""Why gBCE stalls here: one SASRec training with the loss swapped for a variant of gBCE (t = 0).

    python scripts/gbce_weighting.py VARIANT RUN_DIR [config overrides...]

VARIANT:
  gbce         longrec's `loss: gbce` unchanged (K negatives per sequence, mean over the 1 + K logits: 1:K)
  per-position K negatives drawn for every position, as gSASRec draws them; still 1:K
  balanced     K negatives per sequence (as gbce), positive term weighted 1:1 against the negatives' mean
Every other setting comes from the `sasrec` preset and the overrides (docs/RESULTS.md has the commands and
the measured curves). The two variants are registered here as the losses gbce-per-position and gbce-balanced
(with gbce's config rules), so the run's config names the loss it trained with; reopening such a run (longrec
eval) needs them registered again. An investigation script, not a supported loss.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.config import TrainConfig, load_config
from longrec.losses import _sampled_logits, gbce_beta, select
from longrec.train.loop import fit
from longrec.train.losses import LOSSES, ItemCounts, Loss, LossFn


def per_position(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    k, beta = train.negatives, gbce_beta(train.negatives, num_items, train.gbce_t)

    def loss(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        hs, ts = select(h, targets)
        neg_ids = torch.randint(1, num_items + 1, (len(ts), k), generator=gen, device=h.device)  # [M, K]
        pos = (hs * table[ts]).sum(-1).float()
        neg = torch.einsum("md,mkd->mk", hs, table[neg_ids]).float()
        neg_loss = F.softplus(neg).masked_fill(neg_ids == ts[:, None], 0.0).sum(-1)
        return ((beta * F.softplus(-pos) + neg_loss) / (k + 1)).mean()

    return loss


def balanced(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    k, beta = train.negatives, gbce_beta(train.negatives, num_items, train.gbce_t)

    def loss(h: Tensor, targets: Tensor, table: Tensor, gen: torch.Generator | None) -> Tensor:
        neg_ids = torch.randint(1, num_items + 1, (len(targets), k), generator=gen, device=h.device)  # [B, K]
        pos, neg, hit = _sampled_logits(h, targets, table, neg_ids)
        return beta * F.softplus(-pos).mean() + F.softplus(neg).masked_fill(hit, 0.0).mean()

    return loss


VARIANTS = {"gbce": "gbce", "per-position": "gbce-per-position", "balanced": "gbce-balanced"}


def main() -> None:
    variant, run_dir, *overrides = sys.argv[1:]
    if variant not in VARIANTS:
        raise SystemExit(f"unknown variant {variant!r}: {' | '.join(VARIANTS)}")
    gbce_rules = LOSSES.get("gbce").obj.check  # the variants share gbce's settings: uniform negatives, gbce_t
    LOSSES.register("gbce-per-position", Loss(per_position, gbce_rules))
    LOSSES.register("gbce-balanced", Loss(balanced, gbce_rules))
    fit(load_config("sasrec", [f"train.loss={VARIANTS[variant]}", *overrides]), Path(run_dir))


if __name__ == "__main__":
    main()
