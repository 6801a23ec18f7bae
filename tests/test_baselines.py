"""Non-neural baselines: hand-computed scores and ranks, the unmasked protocol, and a baseline run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec.baselines import build_baseline
from longrec.config import EvalConfig, load_config
from longrec.data.corpus import Corpus
from longrec.data.split import leave_one_out
from longrec.errors import ConfigError
from longrec.scoring import banned_pairs, ranks, top_k
from longrec.train.evaluate import evaluate
from longrec.train.loop import fit
from longrec.train.run import evaluate_run
from longrec.train.runinfo import torch_threads

COUNTS = torch.tensor([0.0, 5, 1, 3, 0, 2, 4])  # training counts of items 1..6 (index 0 = PAD)


def window(*rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded [B, N] items and mask from lists of item ids, oldest first."""
    n = max(len(r) for r in rows)
    items = torch.tensor([[0] * (n - len(r)) + r for r in rows])
    return items, items > 0


def order(scorer: object, items: torch.Tensor, mask: torch.Tensor, chunk: int = 100) -> list[list[int]]:
    q = scorer.encode(items, mask)  # type: ignore[attr-defined]
    _, idx = top_k(scorer, q, 6, banned_pairs([], torch.device("cpu")), chunk)  # type: ignore[arg-type]
    return idx.tolist()


@pytest.mark.parametrize("chunk", [2, 3, 100])
def test_popularity_ranks_by_training_count_whatever_the_history(chunk: int) -> None:
    pop = build_baseline("popularity", COUNTS, 10, {})
    items, mask = window([2, 2, 4], [5])
    assert order(pop, items, mask, chunk) == [[1, 6, 3, 5, 2, 4]] * 2


@pytest.mark.parametrize("chunk", [2, 100])
def test_personal_frequency_counts_then_recency_then_popularity(chunk: int) -> None:
    per = build_baseline("personal", COUNTS, 10, {})
    # row 0: item 2 three times, 4 and 5 once each (5 the newer), then the unseen by popularity (1, 6, 3)
    # row 1: 3 and 6 twice each, 6 the more recent last event
    items, mask = window([2, 4, 2, 5, 2], [3, 6, 3, 6])
    assert order(per, items, mask, chunk) == [[2, 5, 4, 1, 6, 3], [6, 3, 1, 5, 2, 4]]


def test_personal_decay_prefers_recent_events_over_old_counts() -> None:
    per = build_baseline("personal", COUNTS, 10, {"decay": 0.5})
    items, mask = window([2, 2, 2, 4])  # 2: 0.5^1 + 0.5^2 + 0.5^3 = 0.875 < 4: 0.5^0 = 1
    assert order(per, items, mask)[0][:2] == [4, 2]
    with pytest.raises(ConfigError, match="decay"):
        build_baseline("personal", COUNTS, 10, {"decay": 0.0})


def test_repeat_last_puts_the_distinct_items_in_recency_order() -> None:
    rep = build_baseline("repeat_last", COUNTS, 10, {})
    items, mask = window([2, 4, 2, 5, 5], [6])
    assert order(rep, items, mask) == [[5, 2, 4, 1, 6, 3], [6, 1, 3, 5, 2, 4]]


def test_baseline_ranks_count_ties_against_the_target_and_honour_the_ban() -> None:
    pop = build_baseline("popularity", torch.tensor([0.0, 2, 2, 1]), 10, {})
    items, mask = window([1])
    q = pop.encode(items, mask)
    none = banned_pairs([], torch.device("cpu"))
    assert ranks(pop, q, torch.tensor([2]), none, 100).tolist() == [2]  # tied with item 1: counted against it
    assert ranks(pop, q, torch.tensor([3]), banned_pairs([torch.tensor([1])], torch.device("cpu")), 2).tolist() == [2]


def repeat_corpus() -> Corpus:
    """Users who repeat: each sequence cycles through its own 3 items, so the target is always in the history."""
    rng = np.random.default_rng(0)
    seqs = [np.tile(rng.choice(np.arange(1, 31), 3, replace=False), 4)[: rng.integers(5, 12)] for _ in range(30)]
    return Corpus.from_seqs(seqs, 30)


def test_unmasked_protocol_is_named_and_lets_personal_baselines_find_repeated_targets() -> None:
    splits = leave_one_out(repeat_corpus())
    counts = torch.zeros(31)
    per = build_baseline("personal", counts, 50, {})
    unmasked = evaluate(per, splits, splits.test, EvalConfig(mask_history=False))
    masked = evaluate(per, splits, splits.test, EvalConfig(mask_history=True))
    assert unmasked["protocol"] == "full ranking, history not masked"
    assert unmasked["metrics"]["recall@5"] == 1.0  # the target is one of the user's 3 items
    assert masked["metrics"]["recall@5"] < 0.3  # masking bans exactly those items


def test_a_baseline_run_writes_results_and_re_evaluates_to_the_same_metrics(tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "log.txt"
    c = repeat_corpus()
    log.write_text("".join(f"{u} {i}\n" for u in range(c.num_users) for i in c.seq(u)))
    cfg = load_config("personal-frequency", [f"data.name={log}", "eval.mask_history=false"])
    res = fit(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"] == res["test"] and saved["training"]["params"] == 0
    assert res["test"]["recall@5"] == 1.0
    again = evaluate_run(tmp_path / "run", mask_history=False)
    assert again["metrics"] == res["test"]


def test_unknown_baseline_and_bad_args_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown baseline 'nope'"):
        load_config("popularity", ["model.baseline=nope"])
    with pytest.raises(ConfigError, match="model.baseline_args.window"):
        load_config("personal-frequency", ["model.baseline_args={window: 3}"])


def _knn_brute(seqs: list[list[int]], n: int, span: int, history: list[int], decay: float) -> np.ndarray:
    """The item-kNN score of every item 0..n-1, from the formula written out by loops."""
    c, cnt = np.zeros((n, n)), np.zeros(n)
    for s in seqs:
        for t, j in enumerate(s):
            cnt[j] += 1
            for i in s[t + 1 : t + 1 + span]:
                c[j, i] += 1
    sim = c / np.sqrt(np.maximum(np.outer(cnt, cnt), 1.0))
    return sum(decay ** (len(history) - 1 - a) * sim[j] for a, j in enumerate(history))


@pytest.mark.parametrize(("span", "decay", "chunk"), [(1, 1.0, 100), (3, 1.0, 2), (2, 0.7, 3)])
def test_item_knn_scores_equal_the_co_occurrence_formula_then_popularity(span: int, decay: float,
                                                                         chunk: int) -> None:
    rng = np.random.default_rng(span)
    seqs = [rng.integers(1, 7, rng.integers(1, 9)).tolist() for _ in range(12)]
    counts = torch.from_numpy(np.bincount(np.concatenate(seqs), minlength=7).astype(np.float64))
    knn = build_baseline("item_knn", counts, 10, {"span": span, "decay": decay},
                         lambda: (np.asarray(s) for s in seqs))
    histories = [[3, 1, 4], [6], [2, 2, 5, 1]]
    items, mask = window(*histories)
    q = knn.encode(items, mask)
    got = torch.cat([knn.scores(q, c0, min(c0 + chunk, 7)) for c0 in range(0, 7, chunk)], dim=1)  # chunked
    for b, h in enumerate(histories):
        want = _knn_brute(seqs, 7, span, h, decay)
        pop = knn.pop.numpy()
        expect = np.where(want > 0, 1.0 + want, pop)
        np.testing.assert_allclose(got[b, 1:].numpy(), expect[1:], rtol=1e-12)  # column 0 (PAD) is banned anyway
    with pytest.raises(ConfigError, match="training sequences"):
        build_baseline("item_knn", counts, 10, {})


def test_item_knn_runs_end_to_end_and_its_args_are_range_checked(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    c = repeat_corpus()
    log.write_text("".join(f"{u} {i}\n" for u in range(c.num_users) for i in c.seq(u)))
    with torch_threads(3):  # a caller's own count: train.threads holds inside fit only
        res = fit(load_config("item-knn", [f"data.name={log}", "eval.mask_history=false", "train.threads=1"]),
                  tmp_path / "run")
        assert torch.get_num_threads() == 3
    assert res["device"].endswith("1 threads)")  # train.threads holds for a counted baseline too
    pop = fit(load_config("popularity", [f"data.name={log}", "eval.mask_history=false"]), tmp_path / "pop")
    # each user cycles through 3 of 30 items: their neighbours are mostly each other, far above popularity
    assert res["test"]["recall@5"] > 0.9 > 0.5 > pop["test"]["recall@5"]
    assert evaluate_run(tmp_path / "run", mask_history=False)["metrics"] == res["test"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())  # what fit returned, evaluation time in
    assert saved["test"] == res["test"] and saved["wall_seconds"] == res["wall_seconds"] > 0
    with pytest.raises(ConfigError, match="model.baseline_args.span"):
        load_config("item-knn", ["model.baseline_args.span=0"])
