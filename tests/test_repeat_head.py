"""The repeat head (model.repeat=true): slots against a brute-force loop, the CE with bonus against dense logits,
the scorer's ranks against dense scores, and a training run on a repeat-heavy log."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec.config import load_config
from longrec.errors import ConfigError
from longrec.losses import full_ce, repeat_ce
from longrec.metrics import ranks_from_scores
from longrec.model.repeat import AGE_BUCKETS, COUNT_BUCKETS, SCALE, RepeatHead, log_decayed_counts, occurrences
from longrec.model.time import bucket
from longrec.objectives import build_model
from longrec.scoring import EncoderScorer, banned_pairs, ranks
from longrec.serve import Recommender
from longrec.train.loop import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def head_and_window(seed: int = 0) -> tuple[RepeatHead, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    head = RepeatHead(6).double()
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    items = torch.randint(1, 6, (3, 9), generator=g)  # few items: many repeats
    items[1, :4] = 0
    items[2, :8] = 0
    times = torch.cumsum(torch.rand(3, 9, generator=g, dtype=torch.float64) * 5000, dim=1)
    h = torch.randn(3, 9, 6, generator=g, dtype=torch.float64)
    return head, items, items > 0, times, h


def brute(head: RepeatHead, items: torch.Tensor, times: torch.Tensor, h: torch.Tensor, b: int, t: int) -> dict:
    """{item: bonus} at position t of row b, from the module docstring's formula."""
    out = {}
    for m in range(t + 1):
        i = int(items[b, m])
        if i == 0 or any(int(items[b, j]) == i for j in range(m + 1, t + 1)):
            continue  # a pad, or not the item's last occurrence up to t
        count = sum(int(items[b, j]) == i for j in range(t + 1))
        age_b = min(int(math.log2(1 + t - m)), AGE_BUCKETS - 1)
        count_b = min(int(math.log2(count)), COUNT_BUCKETS - 1)
        gap_b = int(bucket(times[b, t] - times[b, m]))
        with torch.no_grad():
            out[i] = SCALE * float(head.w_age[age_b] + head.w_count[count_b] + head.w_gap[gap_b] + h[b, t] @ head.u)
    return out


def as_dict(item: torch.Tensor, bias: torch.Tensor) -> dict:
    return {int(i): float(v) for i, v in zip(item.tolist(), bias.tolist(), strict=True) if i > 0}


def test_slots_equal_the_formula_at_every_position_and_last_agrees() -> None:
    head, items, mask, times, h = head_and_window()
    slots = head(items, mask, h, times)
    for b in range(3):
        for t in range(9):
            got = as_dict(slots.item[b, t], slots.bias[b, t])
            want = brute(head, items, times, h, b, t) if mask[b, t] else {}
            assert got.keys() == want.keys() or not mask[b, t]
            for i in want:
                assert got[i] == pytest.approx(want[i], abs=1e-9)
    last = head.last(items, mask, h[:, -1], times)
    for b in range(3):
        assert as_dict(last.item[b, 0], last.bias[b, 0]) == pytest.approx(as_dict(slots.item[b, -1],
                                                                                 slots.bias[b, -1]))


def test_the_newest_positions_alone_give_the_same_slots_as_every_position() -> None:
    head, items, mask, times, h = head_and_window(2)
    full = head(items, mask, h, times)
    for T in (1, 4, 9):
        part = head(items, mask, h[:, -T:], times)
        assert part.item.shape == (3, T, 9)
        assert torch.equal(part.item, full.item[:, -T:])
        torch.testing.assert_close(part.bias, full.bias[:, -T:])
    for T in (1, 3):  # without timestamps too
        torch.testing.assert_close(head(items, mask, h[:, -T:]).bias, head(items, mask, h).bias[:, -T:])


def test_occurrences_count_each_event_so_far_and_find_its_next_copy() -> None:
    g = torch.Generator().manual_seed(3)
    items = torch.randint(1, 5, (4, 13), generator=g)
    items[1, :5] = 0
    real = (items > 0) & (torch.rand(4, 13, generator=g) > 0.2)  # masked-out events are not occurrences
    count, nxt = occurrences(items, real)
    for b in range(4):
        for m in range(13):
            i, r = int(items[b, m]), bool(real[b, m])
            seen = [j for j in range(13) if real[b, j] and int(items[b, j]) == i]
            assert int(count[b, m]) == (sum(j <= m for j in seen) if r else 0)
            assert int(nxt[b, m]) == (min([j for j in seen if j > m], default=13) if r else 13)


def dense_loss(h: torch.Tensor, targets: torch.Tensor, table: torch.Tensor, item: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    B, N, _ = h.shape
    logits = torch.einsum("bnd,id->bni", h, table)
    extra = torch.zeros_like(logits).scatter_add(2, item, torch.where(item > 0, bias, 0.0))
    extra[..., 0] = 0.0  # slot item 0 is "no slot"
    keep = targets > 0
    flat = (logits + extra)[keep]
    flat[:, 0] = float("-inf")
    return torch.nn.functional.cross_entropy(flat, targets[keep])


@pytest.mark.parametrize("chunk_rows", [1, 5, 100])
def test_repeat_ce_equals_dense_logits_in_value_and_gradients(chunk_rows: int, monkeypatch) -> None:
    head, items, mask, times, h = head_and_window(1)
    table = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    h.requires_grad_(True)
    targets = torch.where(mask, torch.randint(1, 6, items.shape), 0)
    import longrec.losses as losses

    real = losses.chunked_ce
    monkeypatch.setattr(losses, "chunked_ce", lambda *a, **k: real(*a, **{**k, "chunk": chunk_rows}))
    ours = []
    for fn in (repeat_ce, dense_loss):
        slots = head(items, mask, h, times)
        loss = fn(h, targets, table, slots.item, slots.bias)
        grads = torch.autograd.grad(loss, [h, table, *head.parameters()])
        ours.append((loss, grads))
    torch.testing.assert_close(ours[0][0].double(), ours[1][0], rtol=1e-5, atol=1e-6)  # chunked CE runs in fp32
    for a, b in zip(ours[0][1], ours[1][1], strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)
    assert full_ce(h.detach()[mask], targets[mask], table.detach()) != pytest.approx(ours[0][0].item())


def test_the_scorer_adds_the_bonus_to_the_window_items_in_every_chunk() -> None:
    torch.manual_seed(0)
    cfg = load_config("lrurec", ["model.dim=8", "model.max_len=10", "model.repeat=true"])
    model = build_model(20, cfg.model, cfg.train).eval()
    with torch.no_grad():
        for p in model.repeat.parameters():
            p.copy_(torch.randn_like(p))
    items = torch.randint(1, 21, (4, 10))
    items[0, :3] = 0
    mask = items > 0
    targets = items[:, -1].clone()  # a repeated item: the bonus matters
    scorer = EncoderScorer(model)
    q = scorer.encode(items, mask)
    with torch.no_grad():
        h = model(items, mask)[:, -1]
        dense = (h @ model.item_table().T).float()
        slots = model.repeat.last(items, mask, h)
        dense.scatter_add_(1, slots.item[:, 0], slots.bias[:, 0].float() * (slots.item[:, 0] > 0))
        dense[:, 0] = float("-inf")
    want = ranks_from_scores(dense, targets)
    for chunk in (3, 7, 100):
        assert ranks(scorer, q, targets, banned_pairs([], torch.device("cpu")), chunk).tolist() == want.tolist()
    torch.testing.assert_close(scorer.pick(q, targets[:, None])[:, 0], dense.gather(1, targets[:, None])[:, 0])


def test_training_with_the_repeat_head_and_its_limits(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}\n" for u in range(40) for i in np.tile(rng.choice(np.arange(1, 60), 3, replace=False), 5)]
    log = tmp_path / "log.txt"
    log.write_text("".join(lines))
    base = [f"data.name={log}", "model.dim=16", "model.max_len=20", "train.epochs=3", "eval.mask_history=false",
            "train.threads=1", "train.lr=0.01"]
    with_head = fit(load_config("lrurec", [*base, "model.repeat=true"]), tmp_path / "rep")
    without = fit(load_config("lrurec", base), tmp_path / "plain")
    assert with_head["test"]["recall@10"] > without["test"]["recall@10"]  # each user cycles through 3 items
    with pytest.raises(ConfigError, match="repeat head"):
        Recommender.load(tmp_path / "rep", store=tmp_path / "s.db")
    with pytest.raises(ConfigError, match="model.repeat=true needs train.loss=ce"):
        load_config("lrurec", ["model.repeat=true", "train.loss=bce"])


def test_last_targets_scores_the_newest_positions_only() -> None:
    from longrec.data.loader import Batch
    from longrec.train.batch_loss import batch_loss
    from longrec.train.losses import make_loss

    torch.manual_seed(0)
    cfg = load_config("lrurec", ["model.dim=8", "model.max_len=10", "model.repeat=true", "model.dropout=0.0"])
    model = build_model(12, cfg.model, cfg.train)
    with torch.no_grad():
        for p in model.repeat.parameters():
            p.copy_(torch.randn_like(p))
    items = torch.randint(1, 6, (3, 10))
    items[0, :6] = 0  # a short row: its few targets all sit in the newest columns
    targets = torch.where(items > 0, torch.randint(1, 6, (3, 10)), 0)
    b = Batch(items=items, mask=items > 0, targets=targets, users=torch.arange(3), times=None)
    loss = make_loss(cfg.train, 12, lambda: torch.ones(13))
    kept = torch.where(torch.arange(10) >= 6, targets, 0)  # what K = 4 must equal: every column, targets cut
    want = batch_loss(model, model, Batch(items, items > 0, kept, torch.arange(3), None), loss)
    got = batch_loss(model, model, b, loss, last_targets=4)
    torch.testing.assert_close(got, want)
    assert got.item() != pytest.approx(batch_loss(model, model, b, loss).item())
    plain = load_config("lrurec", ["model.dim=8", "model.max_len=10", "model.dropout=0.0"])
    net = build_model(12, plain.model, plain.train)
    ce = make_loss(plain.train, 12, lambda: torch.ones(13))
    torch.testing.assert_close(batch_loss(net, net, b, ce, last_targets=4),
                               batch_loss(net, net, Batch(items, items > 0, kept, torch.arange(3), None), ce))
    with pytest.raises(ConfigError, match="train.last_targets needs train.objective=next_item"):
        load_config("bert4rec", ["train.last_targets=4"])
    with pytest.raises(ConfigError, match="train.last_targets"):
        load_config("lrurec", ["train.last_targets=-1"])


def test_decayed_counts_equal_the_sum_over_earlier_copies() -> None:
    g = torch.Generator().manual_seed(5)
    items = torch.randint(1, 5, (3, 40), generator=g)
    items[1, :7] = 0
    real = (items > 0) & (torch.rand(3, 40, generator=g) > 0.1)
    gammas = (0.5, 0.9, 0.999)
    ld = log_decayed_counts(items, real, torch.tensor(gammas, dtype=torch.float64).log())
    for b in range(3):
        for m in range(40):
            for k, gam in enumerate(gammas):
                if not real[b, m]:
                    assert float(ld[b, m, k]) == 0.0
                    continue
                want = sum(gam ** (m - j) for j in range(m + 1) if real[b, j] and items[b, j] == items[b, m])
                assert float(ld[b, m, k]) == pytest.approx(math.log(want), abs=1e-9)
    long = torch.full((1, 5000), 7)
    long[0, ::2] = 3  # every item alternates: decayed counts near their limit γ / (1 - γ²) + ... stay finite
    out = log_decayed_counts(long, long > 0, torch.tensor([0.9, 0.999], dtype=torch.float64).log())
    assert torch.isfinite(out).all()
    assert float(out[0, -1, 0]) == pytest.approx(math.log(1 / (1 - 0.81)), abs=1e-9)


def test_the_decay_terms_add_w_times_the_log_decayed_count_of_the_item_at_t() -> None:
    head, items, mask, times, h = head_and_window(4)
    plain = head(items, mask, h, times)
    gammas = (0.8, 0.97)
    dec = RepeatHead(6, gammas).double()
    dec.log_gamma = torch.tensor(gammas, dtype=torch.float64).log()  # not via float32
    dec.load_state_dict({**head.state_dict(), "w_decay": torch.tensor([0.7, -1.3], dtype=torch.float64)})
    slots = dec(items, mask, h, times)
    assert torch.equal(slots.item, plain.item)
    for b in range(3):
        for t in range(9):
            got, base = as_dict(slots.item[b, t], slots.bias[b, t]), as_dict(plain.item[b, t], plain.bias[b, t])
            for i in base:
                dcs = [sum(gm ** (t - j) for j in range(t + 1) if int(items[b, j]) == i) for gm in gammas]
                want = base[i] + SCALE * (0.7 * math.log(dcs[0]) - 1.3 * math.log(dcs[1]))
                assert got[i] == pytest.approx(want, abs=1e-8)
    part = dec(items, mask, h[:, -2:], times)  # the newest positions alone agree
    torch.testing.assert_close(part.bias, slots.bias[:, -2:])
    slots.bias.sum().backward()
    assert dec.w_decay.grad is not None and dec.w_decay.grad.abs().sum() > 0


def test_repeat_decays_are_checked_and_old_runs_keep_their_weights() -> None:
    with pytest.raises(ConfigError, match=r"model.repeat_decays' \(\(0.9,\)\) needs model.repeat=true"):
        load_config("lrurec", ["model.repeat_decays=[0.9]"])
    with pytest.raises(ConfigError, match="repeat_decays"):
        load_config("lrurec", ["model.repeat=true", "model.repeat_decays=[1.0]"])
    cfg = load_config("lrurec", ["model.dim=8", "model.repeat=true"])
    assert "repeat.w_decay" not in build_model(20, cfg.model, cfg.train).state_dict()
    cfg = load_config("lrurec", ["model.dim=8", "model.repeat=true", "model.repeat_decays=[0.9,0.99]"])
    assert build_model(20, cfg.model, cfg.train).state_dict()["repeat.w_decay"].shape == (2,)
