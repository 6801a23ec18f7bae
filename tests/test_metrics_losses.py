"""Metrics against hand-computed values; chunked CE against the full-softmax reference; sampled BCE by formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longrec.losses import chunked_ce, full_ce, sampled_bce, select, uniform_negatives
from longrec.metrics import by_length, metrics_from_ranks, ranks_from_scores

# ---------------------------------------------------------------- ranks


def test_ranks_count_ties_against_the_target() -> None:
    scores = torch.tensor(
        [
            [0.1, 0.5, 0.5, 0.2],
            [0.1, 0.5, 0.5, 0.2],
            [0.1, 0.5, 0.5, 0.2],
            [0.9, 0.1, 0.3, 0.2],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    targets = torch.tensor([1, 3, 0, 0, 2])
    # row 0: col 2 ties at 0.5 -> rank 2, not 1; row 4: everything ties -> last
    assert ranks_from_scores(scores, targets).tolist() == [2, 3, 4, 1, 4]


def test_nan_target_ranks_last_and_nan_others_do_not_count() -> None:
    nan = float("nan")
    scores = torch.tensor([[nan, 0.2, 0.3], [0.1, nan, 0.3], [nan, nan, nan], [0.5, nan, 0.4]])
    targets = torch.tensor([0, 1, 2, 0])
    assert ranks_from_scores(scores, targets).tolist() == [3, 3, 3, 1]


def test_masked_candidates_do_not_count() -> None:
    scores = torch.tensor([[-math.inf, 0.9, 0.3, 0.5]])  # col 0 = PAD, col 1 masked as history below
    scores[0, 1] = -math.inf
    assert ranks_from_scores(scores, torch.tensor([2])).tolist() == [2]


# ---------------------------------------------------------------- metrics, by hand

# ranks [1, 3, 11, 2]: hits@1 = {1}, hits@5 = hits@10 = {1, 3, 2}
# NDCG gains 1/log2(1 + r): r=1 -> 1, r=2 -> 1/log2(3) = 0.6309297535714575, r=3 -> 1/log2(4) = 0.5
# MRR gains 1/r: 1, 1/2, 1/3; the full-list MRR also counts 1/11
EXPECTED = {
    "recall@1": 0.25,
    "recall@5": 0.75,
    "recall@10": 0.75,
    "ndcg@1": 0.25,
    "ndcg@5": (1 + 0.6309297535714575 + 0.5) / 4,  # 0.53273...
    "ndcg@10": (1 + 0.6309297535714575 + 0.5) / 4,
    "mrr@1": 0.25,
    "mrr@5": (1 + 0.5 + 1 / 3) / 4,  # 0.458333...
    "mrr@10": (1 + 0.5 + 1 / 3) / 4,
    "mrr": (1 + 0.5 + 1 / 3 + 1 / 11) / 4,  # 0.481060...
}


def test_metrics_by_hand() -> None:
    got = metrics_from_ranks(np.array([1, 3, 11, 2]), (1, 5, 10))
    assert got.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["ndcg@5"] == pytest.approx(0.532732438, abs=1e-9)
    assert got["mrr"] == pytest.approx(0.481060606, abs=1e-9)


def test_metrics_at_the_k_boundary() -> None:
    got = metrics_from_ranks(np.array([10, 11]), (10,))
    assert got["recall@10"] == 0.5  # rank 10 is inside @10, rank 11 is not
    assert got["ndcg@10"] == pytest.approx(0.5 / math.log2(11))
    assert got["mrr@10"] == pytest.approx(0.05)


def test_metrics_from_scores_end_to_end() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.4], [0.2, 0.2, 0.1], [0.0, 0.5, 1.0]])
    ranks = ranks_from_scores(scores, torch.tensor([0, 0, 0])).numpy()
    assert ranks.tolist() == [1, 2, 3]
    got = metrics_from_ranks(ranks, (1, 2))
    assert got["recall@1"] == pytest.approx(1 / 3) and got["recall@2"] == pytest.approx(2 / 3)
    assert got["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 3)


def test_metrics_by_length_bucket() -> None:
    ranks = np.array([1, 2, 20, 1])
    lengths = np.array([5, 15, 20, 2000])
    got = by_length(ranks, lengths, (1, 10))
    assert list(got) == ["1-10", "11-20", "1001-5000"]
    assert got["1-10"]["users"] == 1 and got["1-10"]["recall@1"] == 1.0
    assert got["11-20"]["users"] == 2 and got["11-20"]["recall@10"] == 0.5 and got["11-20"]["recall@1"] == 0.0
    assert got["1001-5000"]["users"] == 1
    assert list(by_length(np.array([3]), np.array([9000]), (1,))) == [">5000"]


# ---------------------------------------------------------------- losses


def test_full_ce_by_hand() -> None:
    # logits over items 1, 2: [1, 0]; PAD (row 0) is never a candidate however large its score
    h = torch.tensor([[1.0, 0.0]])
    table = torch.tensor([[100.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = math.log(1 + math.exp(-1))  # -log(e^1 / (e^1 + e^0)) = 0.3132616875...
    assert full_ce(h, torch.tensor([1]), table).item() == pytest.approx(expected, rel=1e-6)
    assert chunked_ce(h, torch.tensor([1]), table).item() == pytest.approx(expected, rel=1e-6)
    assert chunked_ce(h, torch.tensor([2]), table).item() == pytest.approx(1 + expected, rel=1e-6)


def both(m: int, d: int, items: int, chunk: int, weight: float = 1.0, seed: int = 0) -> list[torch.Tensor]:
    """[loss, dh, dtable] of full_ce and of chunked_ce on the same random inputs, interleaved."""
    g = torch.Generator().manual_seed(seed)
    h0 = torch.randn(m, d, generator=g)
    t0 = torch.randn(items + 1, d, generator=g)
    targets = torch.randint(1, items + 1, (m,), generator=g)
    out = []
    for fn in (full_ce, lambda h, t, w: chunked_ce(h, t, w, chunk)):
        h, table = h0.clone().requires_grad_(), t0.clone().requires_grad_()
        loss = fn(h, targets, table)
        (loss * weight).backward()
        out += [loss.detach(), h.grad, table.grad]
    return out


@pytest.mark.parametrize(
    ("m", "chunk"),
    [(7, 16), (10, 3), (12, 4), (1, 1), (33, 0), (64, 64)],
    ids=["m<chunk", "chunk-not-dividing-m", "chunk-dividing-m", "one-row", "default-chunk", "m=chunk"],
)
def test_chunked_ce_equals_full_ce_in_value_and_gradients(m: int, chunk: int) -> None:
    loss_f, dh_f, dt_f, loss_c, dh_c, dt_c = both(m, 8, 50, chunk, weight=2.5)
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dh_c, dh_f, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(dt_c, dt_f, rtol=1e-4, atol=1e-6)
    assert dt_c[0].abs().max() == 0  # PAD row gets no gradient
    assert dh_f.abs().max() > 0 and dt_f.abs().max() > 0


def test_chunked_ce_keeps_input_dtypes_and_works_in_double() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([1, 8, 3, 3, 2])
    chunked_ce(h, targets, table, 2).backward()
    assert h.grad is not None and table.grad is not None
    assert h.grad.dtype == table.grad.dtype == torch.float64
    ref = torch.autograd.grad(full_ce(h, targets, table), (h, table))
    torch.testing.assert_close(h.grad, ref[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(table.grad, ref[1], rtol=1e-5, atol=1e-7)


def test_chunked_ce_under_bf16_autocast_computes_in_fp32() -> None:
    # a bf16 autocast around the loss (train.bf16, the scaling benchmark's model level) used to make the logits
    # bf16 inside the Function and crash on the fp32 table gradient; the loss is computed in fp32 regardless
    g = torch.Generator().manual_seed(2)
    h = torch.randn(40, 8, generator=g, requires_grad=True)
    table = torch.randn(30, 8, generator=g, requires_grad=True)
    targets = torch.randint(1, 30, (40,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = chunked_ce(h, targets, table, 7)
    loss.backward()
    assert loss.dtype == torch.float32
    ref = full_ce(h, targets, table)
    ref_grads = torch.autograd.grad(ref, (h, table))
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h.grad, ref_grads[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(table.grad, ref_grads[1], rtol=1e-4, atol=1e-6)


def test_chunked_ce_with_no_rows_is_zero_with_zero_gradients() -> None:
    h = torch.zeros(0, 8, requires_grad=True)
    table = torch.randn(11, 8, requires_grad=True)
    loss = chunked_ce(h, torch.zeros(0, dtype=torch.int64), table, 4)
    loss.backward()
    assert loss.item() == 0.0
    assert h.grad is not None and h.grad.shape == (0, 8)
    assert table.grad is not None and torch.equal(table.grad, torch.zeros_like(table))


def test_select_keeps_positions_with_a_target() -> None:
    h = torch.arange(12.0).reshape(2, 3, 2)
    targets = torch.tensor([[0, 4, 5], [0, 0, 7]])
    hs, ts = select(h, targets)
    assert ts.tolist() == [4, 5, 7]
    assert hs.tolist() == [[2.0, 3.0], [4.0, 5.0], [10.0, 11.0]]


def test_sampled_bce_by_hand() -> None:
    h = torch.tensor([[1.0, 0.0]])
    table = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # positive logit 2; negative logits 0 (item 2) and -1 (item 3)
    expected = math.log1p(math.exp(-2)) + (math.log1p(math.exp(0)) + math.log1p(math.exp(-1))) / 2
    got = sampled_bce(h, torch.tensor([1]), table, torch.tensor([[2, 3]]))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_bce_matches_the_formula_on_random_inputs() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(6, 5, generator=g)
    table = torch.randn(21, 5, generator=g)
    targets = torch.randint(1, 21, (6,), generator=g)
    neg = torch.randint(1, 21, (6, 3), generator=g)
    pos_logit = (h * table[targets]).sum(-1)
    neg_logit = (h[:, None, :] * table[neg]).sum(-1)
    expected = -torch.log(torch.sigmoid(pos_logit)).mean() - torch.log(1 - torch.sigmoid(neg_logit)).mean()
    torch.testing.assert_close(sampled_bce(h, targets, table, neg), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(sampled_bce(h, targets, table, neg), F.softplus(-pos_logit).mean())


def test_uniform_negatives_avoid_the_target() -> None:
    g = torch.Generator().manual_seed(3)
    targets = torch.tensor([1, 2, 2, 1] * 50)
    neg = uniform_negatives(targets, 2, 7, generator=g)  # two items: every negative is forced to the other one
    assert neg.shape == (200, 7)
    assert torch.equal(neg, (3 - targets)[:, None].expand(-1, 7))
    neg = uniform_negatives(targets, 30, 5, generator=g)
    assert neg.min() >= 1 and neg.max() <= 30 and not (neg == targets[:, None]).any()
