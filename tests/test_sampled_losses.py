"""Large catalogues: sampled softmax with logQ, gBCE and the samplers by hand; chunked full-ranking evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from longrec.config import EvalConfig, ModelConfig, TrainConfig, load_config
from longrec.data.corpus import Corpus
from longrec.data.split import leave_one_out
from longrec.errors import ConfigError
from longrec.losses import chunked_ce, full_ce, gbce, gbce_beta, sampled_bce, sampled_softmax, select
from longrec.metrics import ranks_from_scores
from longrec.objectives import build_model
from longrec.scoring import EncoderScorer
from longrec.scoring import ranks as score_ranks
from longrec.train.evaluate import evaluate
from longrec.train.loop import fit
from longrec.train.losses import in_batch_sampler, make_loss, popularity_sampler, uniform_sampler
from tests_helpers import synthetic_log

H = torch.tensor([[[1.0, 0.0]]])  # one sequence, one position: h [B=1, N=1, D=2]
ONE = torch.tensor([[1]])  # its target, item 1
TABLE = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # PAD, then items 1..3


# ---------------------------------------------------------------- sampled softmax


def test_sampled_softmax_by_hand() -> None:
    # target 1 (logit 2); negatives 2 (logit 0, q = 1/2) and 3 (logit -1, q = 1/4); K = 2:
    # corrected logits 0 - log(2 * 1/2) = 0 and -1 - log(2 * 1/4) = -1 + log 2
    q = torch.tensor([[0.5, 0.25]])
    got = sampled_softmax(H, ONE, TABLE, torch.tensor([[2, 3]]), q.log())
    expected = -2 + math.log(math.exp(2) + 1 + 2 / math.e)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_masks_accidental_hits() -> None:
    q = torch.tensor([[0.5, 0.5]])
    got = sampled_softmax(H, ONE, TABLE, torch.tensor([[1, 2]]), q.log())  # negative 1 = the target
    expected = -2 + math.log(math.exp(2) + math.exp(0 - math.log(2 * 0.5)))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def random_case(b: int = 2, n: int = 3, items: int = 40, d: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """h [b,n,d], targets [b,n] (the first position of each sequence has none), table [items+1,d]."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, items + 1, (b, n), generator=g)
    targets[:, 0] = 0
    return torch.randn(b, n, d, generator=g), targets, torch.randn(items + 1, d, generator=g)


@pytest.mark.parametrize("sampler", ["uniform", "popularity"])
def test_many_corrected_samples_converge_to_the_full_softmax(sampler: str) -> None:
    h, targets, table = random_case()
    counts = torch.cat([torch.zeros(1), torch.arange(1, 41, dtype=torch.float32) ** 2])  # a skewed proposal
    draw = uniform_sampler(40) if sampler == "uniform" else popularity_sampler(counts)
    ids, log_q = draw(targets, 400_000, torch.Generator().manual_seed(1))
    assert ids.shape == log_q.shape == (2, 400_000)
    full = full_ce(*select(h, targets), table)
    assert sampled_softmax(h, targets, table, ids, log_q).item() == pytest.approx(full.item(), rel=5e-3)
    if sampler == "popularity":  # without the correction the estimate is biased
        uncorrected = sampled_softmax(h, targets, table, ids, torch.full_like(log_q, -math.log(40)))
        assert abs(uncorrected.item() - full.item()) > 0.05


def test_in_batch_sampler_draws_batch_targets_with_their_batch_frequency() -> None:
    targets = torch.tensor([[0, 3, 3], [0, 5, 7]])  # 0: positions without a target are not candidates
    ids, log_q = in_batch_sampler(targets, 1000, torch.Generator().manual_seed(0))
    assert ids.shape == (2, 1000) and set(ids.flatten().tolist()) == {3, 5, 7}
    expected = {3: 0.5, 5: 0.25, 7: 0.25}
    for i, lq in zip(ids.flatten().tolist(), log_q.flatten().tolist(), strict=True):
        assert lq == pytest.approx(math.log(expected[i]))
    assert (ids == 3).float().mean().item() == pytest.approx(0.5, abs=0.06)


def test_popularity_sampler_never_draws_pad_or_unseen_items() -> None:
    counts = torch.tensor([0.0, 3.0, 0.0, 1.0])
    ids, log_q = popularity_sampler(counts)(torch.tensor([[1]]), 500, torch.Generator().manual_seed(0))
    assert set(ids.flatten().tolist()) == {1, 3}
    assert torch.allclose(log_q, torch.where(ids == 1, math.log(0.75), math.log(0.25)))


# ---------------------------------------------------------------- gBCE


def test_gbce_beta_by_hand() -> None:
    # K = 2 negatives of I = 5 items: alpha = 2 / 4 = 0.5; beta = 0.5 * (0.75 * (1 - 2) + 2) = 0.625
    assert gbce_beta(2, 5, 0.75) == pytest.approx(0.625)
    assert gbce_beta(2, 5, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(2, 5, 1.0) == pytest.approx(0.5)  # t = 1: beta = alpha


def test_gbce_by_hand() -> None:
    # I = 3, K = 2: alpha = 1, beta = 1 for every t; logits: positive 2, negatives 0 and -1
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731 - softplus
    expected = (sp(-2) + sp(0) + sp(-1)) / 3
    assert gbce(H, ONE, TABLE, torch.tensor([[2, 3]]), 0.75, 3).item() == pytest.approx(expected)
    # I = 9, K = 2: alpha = 1/4, t = 0.5: beta = 1 - 0.5 * 0.75 = 0.625
    expected = (0.625 * sp(-2) + sp(0) + sp(-1)) / 3
    assert gbce(H, ONE, TABLE, torch.tensor([[2, 3]]), 0.5, 9).item() == pytest.approx(expected)
    # an accidental hit (negative 1 = the target) contributes nothing: (beta sp(-2) + sp(0) + 0) / 3
    expected = (0.625 * sp(-2) + sp(0)) / 3
    assert gbce(H, ONE, TABLE, torch.tensor([[2, 1]]), 0.5, 9).item() == pytest.approx(expected)


def gsasrec_reference(pos: torch.Tensor, neg: torch.Tensor, beta: float) -> torch.Tensor:
    """gSASRec's published formulation: the positive's probability raised to beta, turned back into a logit."""
    eps = 1e-10
    p = torch.clamp(torch.sigmoid(pos.double()), eps, 1 - eps)
    adjusted = torch.clamp(p.pow(-beta), 1 + eps, torch.finfo(torch.float64).max)
    pos_t = torch.clamp(1.0 / (adjusted - 1), eps, torch.finfo(torch.float64).max).log()
    logits = torch.cat([pos_t[:, None], neg.double()], dim=1)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1
    return F.binary_cross_entropy_with_logits(logits, labels)


def test_gbce_matches_the_gsasrec_formulation() -> None:
    h, targets, table = random_case(b=1, n=9, items=1000)
    negatives = torch.tensor([[17, 250, 999, 4]])  # no accidental hits in this draw
    assert not (negatives[0][None] == targets[0][:, None]).any()
    beta = gbce_beta(4, 1000, 0.75)
    hs, ts = select(h, targets)
    ref = gsasrec_reference((hs * table[ts]).sum(-1), hs @ table[negatives[0]].T, beta)
    assert gbce(h, targets, table, negatives, 0.75, 1000).item() == pytest.approx(ref.item(), rel=1e-5)


def test_gbce_at_t0_with_one_negative_is_half_the_sasrec_bce() -> None:
    h, targets, table = random_case(b=1, n=2)  # one position with a target
    neg = torch.tensor([[(int(targets[0, 1]) % 40) + 1]])
    assert gbce(h, targets, table, neg, 0.0, 40).item() == pytest.approx(
        sampled_bce(*select(h, targets), table, neg).item() / 2, rel=1e-6)


@pytest.mark.parametrize("loss", ["sampled", "gbce", "bce", "ce"])
@pytest.mark.parametrize("sampler", ["uniform", "popularity", "in_batch"])
def test_every_configured_loss_is_finite_with_gradients_and_zero_without_rows(loss: str, sampler: str) -> None:
    if loss == "gbce" and sampler != "uniform":
        return
    train = TrainConfig(loss=loss, sampler=sampler, negatives=8)
    fn = make_loss(train, 40, lambda: torch.arange(41, dtype=torch.float32))
    h, targets, table = random_case()
    h.requires_grad_(), table.requires_grad_()
    value = fn(h, targets, table, torch.Generator().manual_seed(0))
    value.backward()
    assert torch.isfinite(value) and h.grad is not None and table.grad is not None and h.grad.abs().sum() > 0
    empty = fn(h, torch.zeros_like(targets), table, None)
    assert empty.item() == 0.0


def test_config_checks_losses_and_samplers() -> None:
    assert load_config("sasrec", ["train.loss=sampled", "train.sampler=in_batch"]).train.sampler == "in_batch"
    with pytest.raises(ConfigError, match="sampled, gbce"):
        load_config("sasrec", ["train.loss=softmax"])
    with pytest.raises(ConfigError, match="uniform negatives"):
        load_config("sasrec", ["train.loss=gbce", "train.sampler=popularity"])
    with pytest.raises(ConfigError, match="gbce_t"):
        load_config("sasrec", ["train.loss=gbce", "train.gbce_t=1.5"])
    with pytest.raises(ConfigError, match="train.negatives"):
        load_config("sasrec", ["train.negatives=0"])


# ---------------------------------------------------------------- chunked full-ranking evaluation


class _TableScorer:
    """A Scorer over a fixed table: the query is h [B,D] itself."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table, self.num_items, self.max_len, self.mask_token = table, table.shape[0] - 1, 1, 0

    def encode(self, items: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, query: torch.Tensor, c0: int, c1: int) -> torch.Tensor:
        return (query @ self.table[c0:c1].T).float()

    def pick(self, query: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def test_chunked_ranks_equal_full_ranks_with_ties_history_and_nan() -> None:
    g = torch.Generator().manual_seed(0)
    B, items, D = 12, 50, 6
    h = torch.randn(B, D, generator=g)
    table = torch.randn(items + 1, D, generator=g)
    table[7] = table[3]  # exact ties between items 3 and 7
    table[20] = table[11]
    targets = torch.randint(1, items + 1, (B,), generator=g)
    targets[:3] = torch.tensor([3, 7, 11])
    h[4] = float("nan")  # a NaN row ranks its target last
    rows = torch.randint(0, B, (40,), generator=g)
    hist = (torch.cat([rows, torch.tensor([5])]), torch.cat([torch.randint(1, items + 1, (40,), generator=g),
                                                             targets[5:6]]))  # row 5's target is in its history
    full = (h @ table.T).float()
    full[:, 0] = float("-inf")
    full[hist] = float("-inf")
    expected = ranks_from_scores(full, targets)
    scorer = _TableScorer(table)
    for chunk in (1, 7, 16, 51, 1000):
        assert score_ranks(scorer, h, targets, hist, chunk).tolist() == expected.tolist(), chunk
    assert expected[4] == items + 1 and expected[5] == items + 1


def test_evaluate_in_item_chunks_gives_identical_metrics() -> None:
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 61, rng.integers(3, 25)) for _ in range(40)]
    corpus = Corpus(np.concatenate(seqs).astype(np.int32),
                    np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64), None,
                    np.array([str(u) for u in range(40)]), np.array(["<pad>"] + [str(i) for i in range(1, 61)]))
    splits = leave_one_out(corpus)
    torch.manual_seed(0)
    model = build_model(60, ModelConfig(dim=8, max_len=16, dropout=0.0), TrainConfig())
    scorer = EncoderScorer(model)
    whole = evaluate(scorer, splits, splits.test, EvalConfig(batch_size=16))
    for chunk in (9, 32):
        parts = evaluate(scorer, splits, splits.test, EvalConfig(batch_size=16, item_chunk=chunk))
        np.testing.assert_array_equal(parts["ranks"], whole["ranks"])
        assert parts["metrics"] == whole["metrics"]
    sampled = [evaluate(scorer, splits, splits.test, EvalConfig(sampled="popularity", negatives=10, item_chunk=c),
                        seed=3)["ranks"] for c in (9, 1 << 16)]  # candidates scored alone
    np.testing.assert_array_equal(sampled[0], sampled[1])


# ---------------------------------------------------------------- end to end


@pytest.mark.parametrize("extra", [["train.loss=sampled", "train.sampler=popularity", "train.negatives=16"],
                                   ["train.loss=sampled", "train.sampler=in_batch", "train.negatives=16"],
                                   ["train.loss=gbce", "train.negatives=1"]], ids=["popularity", "in_batch", "gbce"])
def test_sampled_losses_train_a_predictable_sequence(extra: list[str], tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "walk.txt")
    overrides = [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.batch_size=32", "train.lr=0.01",
                 "model.dropout=0.0", "train.epochs=6", "eval.batch_size=64", "eval.item_chunk=16", *extra]
    res = fit(load_config("sasrec", overrides), tmp_path / "run")
    # random ranking would give about 10/30 (history masked); gBCE weighs the positive 1/(K+1) against the
    # negatives and learns this 40-item toy slowly with many negatives, hence one negative for it here
    assert res["test"]["recall@10"] > 0.9


def test_chunked_ce_backward_runs_once_and_says_so() -> None:
    h = torch.randn(5, 4, requires_grad=True)
    table = torch.randn(9, 4, requires_grad=True)
    loss = chunked_ce(h, torch.tensor([1, 2, 3, 4, 5]), table, 2)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        loss.backward()
