"""Objectives and losses are registered things: a contract over every objective, and a toy objective and a
toy loss (each one file: toy_objective.py, toy_loss.py) that train end to end through fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import toy_loss  # noqa: F401  (registers the loss bpr)
import toy_objective  # noqa: F401  (registers the objective last_cloze)
from longrec.config import load_config
from longrec.data.corpus import Corpus
from longrec.data.split import leave_one_out
from longrec.errors import ConfigError
from longrec.objectives import OBJECTIVES, build_model, get_objective, mask_token
from longrec.train.loop import batches_per_epoch, epoch_batches, fit
from longrec.train.run import evaluate_run, load_run
from tests_helpers import synthetic_log

SRC = Path(__file__).resolve().parents[1] / "src" / "longrec"


def corpus(users: int = 80, items: int = 30, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(1, items + 1, rng.integers(1, 40)) for _ in range(users)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return Corpus(np.concatenate(seqs).astype(np.int32), offsets, None, np.array([str(u) for u in range(users)]),
                  np.array(["<pad>"] + [str(i) for i in range(1, items + 1)]))


@pytest.mark.parametrize("name", OBJECTIVES.listed())
def test_every_objective_keeps_its_contract(name: str) -> None:
    """Its batches hold rows() rows, the same for the same seed; targets are real items at real positions;
    inputs use no id beyond its extra tokens, and its query token is one of them."""
    splits = leave_one_out(corpus())
    cfg = load_config("bert4rec", [f"train.objective={name}", "model.max_len=12", "train.batch_size=16"])
    objective, num_items = get_objective(cfg.train), splits.corpus.num_items
    batches = list(epoch_batches(cfg, splits, np.random.default_rng(3)))
    again = list(epoch_batches(cfg, splits, np.random.default_rng(3)))
    assert sum(len(b.users) for b in batches) == objective.rows(splits, cfg.train) > 0
    assert len(batches) == batches_per_epoch(cfg, splits)
    for b, c in zip(batches, again, strict=True):
        assert all(torch.equal(x, y) for x, y in zip((b.items, b.targets, b.users), (c.items, c.targets, c.users),
                                                      strict=True))
        assert b.items.shape[1] <= 12 and ((b.targets > 0) <= b.mask).all() and (b.targets <= num_items).all()
        assert (b.items <= num_items + objective.extra_tokens).all() and (b.targets > 0).any(1).all()
    token = objective.mask_token(num_items)
    assert token == 0 or num_items < token <= num_items + objective.extra_tokens


@pytest.mark.parametrize("name", OBJECTIVES.listed())
def test_the_leakage_rule_is_the_objectives(name: str) -> None:
    cfg = load_config("bert4rec", [f"train.objective={name}", "model.dim=8"])  # a global (bidirectional) mixer
    if get_objective(cfg.train).causal_only:
        with pytest.raises(ConfigError, match=rf"global \(bidirectional\).*train.objective={name}; use .*last_item"):
            build_model(20, cfg.model, cfg.train)
    else:
        enc = build_model(20, cfg.model, cfg.train)
        assert enc.item_emb.num_embeddings == 21 + get_objective(cfg.train).extra_tokens


def test_the_model_package_knows_no_objective() -> None:
    for path in sorted((SRC / "model").glob("*.py")):
        text = path.read_text()
        assert "objective" not in text and "TrainConfig" not in text and "mask_token" not in text, path.name


def test_a_toy_objective_and_a_toy_loss_train_end_to_end(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "walk.txt")
    over = [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.batch_size=32", "train.lr=0.01",
            "model.dropout=0.0", "eval.batch_size=64", "train.epochs=15", "train.objective=last_cloze",
            "train.loss=bpr", "train.negatives=4"]
    res = fit(load_config("bert4rec", over), tmp_path / "toy")
    assert res["config"]["train"]["objective"] == "last_cloze" and res["config"]["train"]["loss"] == "bpr"
    assert res["test"]["recall@10"] > 0.5  # random ranking would give ~10/38
    cfg, model, splits = load_run(tmp_path / "toy")
    assert model.item_emb.num_embeddings == splits.corpus.num_items + 3  # PAD, the items, its two extra tokens
    assert mask_token(model, cfg.train) == splits.corpus.num_items + 2
    assert evaluate_run(tmp_path / "toy")["metrics"] == pytest.approx(res["test"], rel=1e-6)


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["train.objective=last_cloze", "train.window=random"], ["'train.window' must be last", "'random'"]),
        (["train.loss=bpr", "train.sampler=popularity"], ["'train.sampler' must be uniform", "'popularity'"]),
        (["train.objective=cloze"], ["'train.objective' must be one of next_item, last_item, masked_item, ",
                                     "last_cloze", "'cloze'"]),
        (["train.loss=softmax"], ["'train.loss' must be one of ce, bce, sampled, gbce, ", "bpr", "'softmax'"]),
        (["train.sampler=all"], ["'train.sampler' must be one of uniform, popularity, in_batch, got 'all'"]),
        (["train.objective=masked_item", "model.repeat=true"], ["model.repeat=true needs train.objective=next_item"]),
        (["train.loss=bpr", "model.repeat=true"], ["model.repeat=true needs train.loss=ce", "'bpr'"]),
    ],
    ids=["toy-objective-rule", "toy-loss-rule", "unknown-objective", "unknown-loss", "unknown-sampler",
         "repeat-needs-next-item", "repeat-needs-ce"],
)
def test_their_config_rules_are_one_line_errors_naming_the_field(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("bert4rec" if "last_cloze" in str(overrides) else "sasrec", overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg
