"""Training losses: pure functions of (h, targets, item table). Rows with target 0 (PAD) are ignored."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def select(h: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Flatten to the M positions that have a target: h [B,N,D], targets [B,N] -> ([M,D], [M])."""
    keep = targets > 0
    return h[keep], targets[keep]


def _no_rows(h: Tensor, table: Tensor) -> Tensor:
    """A zero loss still connected to h and table (every parameter gets a zero gradient, as DDP needs)."""
    return (h.sum() + table.sum()) * 0.0


def full_ce(h: Tensor, targets: Tensor, table: Tensor) -> Tensor:
    """Softmax cross-entropy over the whole catalogue, materialising all logits (the reference).
    h [M,D], targets [M] in 1..I, table [I+1,D] (row 0 = PAD, never a candidate)."""
    logits = h @ table.T  # [M, I+1]
    logits[:, 0] = float("-inf")
    return F.cross_entropy(logits.float(), targets)


class _ChunkedCE(torch.autograd.Function):
    """Mean CE of h @ table.T computed `chunk` rows at a time; gradients are formed in the forward pass, so
    memory is O(chunk * I) instead of O(M * I) and the logits never exist whole. Peak extra memory: the table
    gradient [I+1, D] plus one chunk of logits [chunk, I+1], whatever M (measured: docs/BENCHMARKS.md)."""

    @staticmethod
    def forward(ctx: Any, h: Tensor, targets: Tensor, table: Tensor, chunk: int, slot_rows: Tensor,
                slot_items: Tensor, slot_bias: Tensor) -> Tensor:
        M = h.shape[0]
        grad_h = torch.empty_like(h, dtype=torch.float32)
        grad_t = torch.zeros_like(table, dtype=torch.float32)
        grad_b = torch.empty_like(slot_bias, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        w = table.float()
        bounds = torch.searchsorted(slot_rows, torch.arange(0, M + chunk, chunk, device=h.device)).tolist()
        for i, s in enumerate(range(0, M, chunk)):
            hc, tc = h[s : s + chunk].float(), targets[s : s + chunk]
            p = hc @ w.T  # [C, I+1] logits, turned into d(CE)/d(logits) in place below
            b0, b1 = bounds[i], bounds[i + 1]  # this chunk's slots: a bonus on (row, item) logits (repeat head)
            sr, si = slot_rows[b0:b1] - s, slot_items[b0:b1]
            if b1 > b0:
                p.index_put_((sr, si), slot_bias[b0:b1].float(), accumulate=True)
            p[:, 0] = float("-inf")
            target_logit = p.gather(1, tc[:, None])[:, 0]  # [C]
            top = p.max(dim=-1, keepdim=True).values  # [C, 1]
            z = p.sub_(top).exp_().sum(dim=-1, keepdim=True)  # in place: no second [C, I+1] buffer
            total += (top[:, 0] + z[:, 0].log() - target_logit).sum()
            p.div_(z)  # softmax
            p[torch.arange(len(tc), device=h.device), tc] -= 1.0  # d(CE)/d(logits) = softmax - onehot
            grad_b[b0:b1] = p[sr, si]  # d(CE)/d(bonus) = d(CE)/d(its logit)
            grad_h[s : s + chunk] = p @ w
            grad_t.addmm_(p.T, hc)
            del p  # before the next chunk's logits exist
        ctx.save_for_backward(grad_h, grad_b)
        ctx.grad_t = grad_t  # not saved: backward hands this very buffer to autograd instead of a scaled copy
        ctx.dtypes = (h.dtype, table.dtype, slot_bias.dtype)
        return total / max(M, 1)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        grad_h, grad_b = ctx.saved_tensors
        grad_t = getattr(ctx, "grad_t", None)
        if grad_t is None:
            raise RuntimeError("chunked_ce: backward can run only once (its table gradient is handed over)")
        del ctx.grad_t
        scale = grad_out / max(grad_h.shape[0], 1)
        return ((grad_h * scale).to(ctx.dtypes[0]), None, grad_t.mul_(scale).to(ctx.dtypes[1]), None, None, None,
                (grad_b * scale).to(ctx.dtypes[2]))


def chunked_ce(h: Tensor, targets: Tensor, table: Tensor, chunk: int = 0,
               slots: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """Same value and gradients as `full_ce`, without materialising the [M, I+1] logits.
    chunk = rows per step; 0 picks about 2^20 logits per chunk (cache-sized: ~3x faster than full_ce on CPU).
    slots = (rows [S] sorted, items [S], bonus [S]): bonus added to logit (row, item) (distinct pairs; the repeat
    head's), with its gradient."""
    chunk = chunk or max(32, (1 << 20) // table.shape[0])
    if h.shape[0] == 0:
        return _no_rows(h, table)
    if slots is None:
        empty = torch.zeros(0, dtype=torch.long, device=h.device)
        slots = (empty, empty, torch.zeros(0, device=h.device))
    with torch.autocast(h.device.type, enabled=False):  # fp32 logits and softmax also under a bf16 autocast
        return _ChunkedCE.apply(h, targets, table, chunk, *slots)  # type: ignore[no-any-return]


def repeat_ce(h: Tensor, targets: Tensor, table: Tensor, slot_item: Tensor, slot_bias: Tensor) -> Tensor:
    """Full CE with the repeat head's bonus: logits_{t,i} = h_t . table_i + bias_{t,m} for the window items
    slot_item[b,t,m] = i (0 = no slot). h [B,N,D], targets [B,N] (0 = no target), slot_item/slot_bias [B,N,N]."""
    keep = targets > 0
    row_of = keep.flatten().long().cumsum(0).view_as(keep) - 1  # (B, N): row of each kept position
    pick = keep[:, :, None] & (slot_item > 0)  # (B, N, N)
    b, t, _ = pick.nonzero(as_tuple=True)  # lexicographic: rows come out sorted
    rows = row_of[b, t]
    return chunked_ce(h[keep], targets[keep], table, slots=(rows, slot_item[pick], slot_bias[pick]))


def sampled_bce(h: Tensor, targets: Tensor, table: Tensor, negatives: Tensor) -> Tensor:
    """Binary cross-entropy of the target against sampled negatives (original SASRec).
    h [M,D], targets [M], negatives [M,K] item ids, table [I+1,D]."""
    if len(targets) == 0:
        return _no_rows(h, table)
    pos = (h * table[targets]).sum(-1).float()  # [M]
    neg = torch.einsum("md,mkd->mk", h, table[negatives]).float()  # [M, K]
    return F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos)) + F.binary_cross_entropy_with_logits(
        neg, torch.zeros_like(neg)
    )


def _sampled_logits(h: Tensor, targets: Tensor, table: Tensor, negatives: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Scores at the positions that have a target: positive [M], negatives [M,K], accidental hits [M,K] (a
    negative equal to the position's target). Each sequence's K negatives serve all its positions, so memory
    is O(B*K*D + B*N*K), independent of the catalogue size, and no [M,K,D] gather is formed."""
    B, N, D = h.shape
    keep = targets > 0
    rows = table[torch.cat([targets.reshape(-1), negatives.reshape(-1)])]  # one gather: one [I+1,D] gradient
    pos = (h * rows[: B * N].view(B, N, D)).sum(-1)[keep].float()  # [M]
    neg = torch.bmm(h, rows[B * N :].view(B, -1, D).transpose(1, 2))[keep].float()  # [B,N,K] -> [M,K]
    hit = (negatives[:, None, :] == targets[:, :, None])[keep]  # [M, K]
    return pos, neg, hit


def sampled_softmax(h: Tensor, targets: Tensor, table: Tensor, negatives: Tensor, log_q: Tensor) -> Tensor:
    """Softmax CE over {target} and the K sampled negatives of the position's sequence, with the logQ correction.

    A negative's logit is s_j - log(K q_j), so that Σ_samples exp(s_j) / (K q_j) estimates the full partition
    function Σ_{j != target} exp(s_j) without bias (Bengio & Senécal 2008; Yi et al. 2019 for in-batch
    negatives); the target's logit is not corrected. Accidental hits (a negative equal to the target) are
    masked out. h [B,N,D], targets [B,N] (0 = no target), table [I+1,D], negatives [B,K] item ids, log_q [B,K]
    log-probability of drawing each negative. Mean over the M positions that have a target.
    """
    if not (targets > 0).any():
        return _no_rows(h, table)
    pos, neg, hit = _sampled_logits(h, targets, table, negatives)
    K = negatives.shape[1]
    correction = (log_q.float() + math.log(K))[:, None, :].expand(-1, targets.shape[1], -1)[targets > 0]  # [M, K]
    logits = torch.cat([pos[:, None], (neg - correction).masked_fill(hit, float("-inf"))], dim=1)  # [M, 1+K]
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long, device=h.device))


def gbce_beta(k: int, num_items: int, t: float) -> float:
    """gSASRec's exponent β = α(t(1 - 1/α) + 1/α) = 1 - t(1 - α), with sampling rate α = k / (I - 1)."""
    alpha = k / max(num_items - 1, 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def gbce(h: Tensor, targets: Tensor, table: Tensor, negatives: Tensor, t: float, num_items: int) -> Tensor:
    """Generalized BCE (Petrov & Macdonald, RecSys 2023) against K uniform negatives per sequence:
    mean over positions of -(1/(K+1)) [log σ(s+)^β + Σ_j log(1 - σ(s_j))], as gSASRec averages its (1+K)
    logits. log σ(s)^β = -β softplus(-s) is the stable form of gSASRec's transformed positive logit; accidental
    hits contribute nothing. h [B,N,D], targets [B,N] (0 = no target), table [I+1,D], negatives [B,K];
    t in [0, 1] (t = 0: BCE, t = 1: β = α)."""
    if not (targets > 0).any():
        return _no_rows(h, table)
    pos, neg, hit = _sampled_logits(h, targets, table, negatives)
    K = negatives.shape[1]
    beta = gbce_beta(K, num_items, t)
    neg_loss = F.softplus(neg).masked_fill(hit, 0.0).sum(-1)  # [M]
    return ((beta * F.softplus(-pos) + neg_loss) / (K + 1)).mean()


def uniform_negatives(targets: Tensor, num_items: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """[M,k] item ids drawn uniformly from 1..num_items, redrawn where they hit the target."""
    neg = torch.randint(1, num_items + 1, (len(targets), k), generator=generator, device=targets.device)
    hit = neg == targets[:, None]
    while hit.any():
        neg[hit] = torch.randint(1, num_items + 1, (int(hit.sum()),), generator=generator, device=targets.device)
        hit = neg == targets[:, None]
    return neg
