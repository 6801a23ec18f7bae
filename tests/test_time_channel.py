"""The time channel (model.time=gap): bucketed gaps, streaming == forward with times, training and serving on ts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec.config import load_config
from longrec.errors import ConfigError
from longrec.model.time import gap_buckets
from longrec.objectives import build_model
from longrec.serve import Event, Recommender
from longrec.serve.recommender import ServeError
from longrec.train.loop import fit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NAN = float("nan")


def test_gap_buckets_by_hand() -> None:
    times = torch.tensor([[NAN, 0.0, 0.0, 1.0, 4.0, 1e9]], dtype=torch.float64)
    # no predecessor (pad, first event) -> 0; gap g -> 1 + floor(log2(1 + g))
    assert gap_buckets(times).tolist() == [[0, 0, 1, 2, 3, 30]]
    assert gap_buckets(times[:, 1:2], prev=torch.tensor([-10.0], dtype=torch.float64)).tolist() == [[4]]
    assert gap_buckets(torch.tensor([[0.0, 1e30]], dtype=torch.float64)).tolist() == [[0, 31]]  # the last bucket


def model_and_window(preset: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = load_config(preset, ["model.dim=16", "model.max_len=12", "model.dropout=0.0", "model.time=gap"])
    model = build_model(30, cfg.model, cfg.train).eval()
    items = torch.randint(1, 31, (3, 10))
    items[1, :3] = 0
    items[2, :7] = 0
    times = torch.cumsum(torch.rand(3, 10, dtype=torch.float64) * 1e5, dim=1)
    return model, items, items > 0, times


@pytest.mark.parametrize("preset", ["lrurec", "sasrec", "causal-linrec"])
def test_prefill_then_step_with_times_equals_forward_and_pads_times_are_ignored(preset: str) -> None:
    model, items, mask, times = model_and_window(preset)
    with torch.no_grad():
        full = model(items, mask, times)
        garbage = torch.where(mask, times, torch.tensor(-5e8, dtype=torch.float64))
        torch.testing.assert_close(model(items, mask, garbage), full)
        h, state = model.prefill(items[:, :7], mask[:, :7], times[:, :7])
        torch.testing.assert_close(h, full[:, :7], rtol=1e-4, atol=1e-5)
        for t in range(7, 10):
            h_t, state = model.step(state, items[:, t], times[:, t])
            torch.testing.assert_close(h_t, full[:, t], rtol=1e-4, atol=1e-5)
        # the channel is read: other gaps, other outputs
        assert not torch.allclose(model(items, mask, times * 1000.0)[mask], full[mask])


def test_a_time_model_without_times_is_a_clear_error() -> None:
    model, items, mask, _ = model_and_window("lrurec")
    with pytest.raises(ConfigError, match="model.time=gap"):
        model(items, mask)


def log_with_times(path: Path, users: int = 30, seed: int = 0) -> Path:
    """CSV user,item,ts: each user alternates two items; the gap says which comes next (short gap: the same)."""
    rng = np.random.default_rng(seed)
    rows = ["user,item,ts"]
    for u in range(users):
        a, b = rng.choice(np.arange(1, 21), 2, replace=False)
        t = 0.0
        for _ in range(int(rng.integers(8, 14))):
            item = a if rng.random() < 0.5 else b
            t += 60.0 if item == a else 86400.0
            rows.append(f"{u},{item},{t}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_training_and_serving_with_the_time_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(tmp_path / "cache"))
    log = log_with_times(tmp_path / "log.csv")
    base = [f"data.name={log}", "data.format=csv", "data.time_col=ts", "model.dim=16", "model.max_len=16",
            "train.epochs=2", "train.threads=1", "eval.mask_history=false", "model.time=gap"]
    res = fit(load_config("lrurec", base), tmp_path / "run")
    assert math.isfinite(res["test"]["ndcg@10"])
    rec = Recommender.load(tmp_path / "run", store=tmp_path / "s.db")
    items = [rec.item_ids[i] for i in rec.corpus.seq(0)[:5].tolist()]
    ts = rec.corpus.times[:5].tolist()  # user 0's first five events
    for i, (item, t) in enumerate(zip(items, ts, strict=True)):
        rec.observe_many([Event("new", item, f"e{i}", t)])
    streamed = rec.recommend("new", k=5, exclude_seen=False)
    assert [s.item for s in streamed] == [s.item for s in rec.recommend_items(items, 5, False, ts)]
    with pytest.raises(ServeError, match="needs a finite ts"):
        rec.observe_many([Event("new", items[0])])
    with pytest.raises(ServeError, match="give ts"):
        rec.recommend_items(items, 5)
    with pytest.raises(ConfigError, match="needs event timestamps"):
        plain = tmp_path / "pairs.txt"
        plain.write_text("".join(f"{u} {i}\n" for u in range(5) for i in range(1, 6)))
        fit(load_config("lrurec", [f"data.name={plain}", "model.time=gap"]), tmp_path / "run2")
    assert not (tmp_path / "run2").exists()
