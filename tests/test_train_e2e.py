"""End to end on a small synthetic log: training learns, resume replays exactly, eval and errors via the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec.config import load_config
from longrec.errors import CheckpointError, ConfigError
from longrec.train.loop import fit
from longrec.train.run import evaluate_run, load_run
from longrec.train.runinfo import torch_threads
from tests_helpers import synthetic_log


def tiny(log: Path, *extra: str) -> list[str]:
    return [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.batch_size=32", "train.lr=0.01",
            "model.dropout=0.0", "train.patience=50", "eval.batch_size=64", *extra]


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    return synthetic_log(tmp_path / "walk.txt")


def test_sasrec_learns_a_predictable_sequence_and_writes_a_complete_run(log: Path, tmp_path: Path) -> None:
    cfg = load_config("sasrec", tiny(log, "train.epochs=8"))
    res = fit(cfg, tmp_path / "run")
    assert res["test"]["recall@10"] > 0.8  # random ranking would give ~10/38
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "results.json", "best.safetensors", "last.safetensors",
                 "optim.safetensors", "optim.json", "trainer.json", "model.json", "id_maps.json"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and json.loads(lines[-1])["epoch"] == 8
    for key in ("versions", "git_commit", "seed", "device", "wall_seconds", "peak_memory", "config"):
        assert key in res
    assert res["config"]["seed"] == 42 and res["protocol"] == "full ranking, history masked"
    assert list(tmp_path.rglob("*.tmp")) == []


def test_resume_replays_the_uninterrupted_run_exactly(log: Path, tmp_path: Path) -> None:
    full = fit(load_config("gru4rec", tiny(log, "train.epochs=3")), tmp_path / "a")
    fit(load_config("gru4rec", tiny(log, "train.epochs=2")), tmp_path / "b")
    state = json.loads((tmp_path / "b" / "trainer.json").read_text())
    assert [s["after_epoch"] for s in state["segments"]] == [0] and state["wall_seconds"] > 0
    state["wall_seconds"] = 1000.0  # as if the first start had run for 1000 s: the results must add it
    (tmp_path / "b" / "trainer.json").write_text(json.dumps(state))
    resumed = fit(load_config("gru4rec", tiny(log, "train.epochs=3")), tmp_path / "b", resume=True)
    assert resumed["test"] == full["test"]
    assert 1000.0 < resumed["wall_seconds"] < 1000.0 + 300.0
    assert [s["after_epoch"] for s in resumed["segments"]] == [0, 2]
    a, b = (json.loads(line)["loss"] for line in [(tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1]
                                                  for d in ("a", "b")])
    assert a == b


def test_resume_refuses_another_config_and_fresh_runs_refuse_an_existing_dir(log: Path, tmp_path: Path) -> None:
    fit(load_config("gru4rec", tiny(log, "train.epochs=1")), tmp_path / "r")
    with pytest.raises(CheckpointError, match="another config"):
        fit(load_config("gru4rec", tiny(log, "train.epochs=2", "train.lr=0.5")), tmp_path / "r", resume=True)
    # more epochs on another number of threads: the same experiment, continued (each start records its device)
    with torch_threads(3):  # a caller's own count: train.threads holds inside fit only
        res = fit(load_config("gru4rec", tiny(log, "train.epochs=2", "train.threads=1")), tmp_path / "r", resume=True)
        assert torch.get_num_threads() == 3
    assert res["training"]["epochs"] == 2 and res["segments"][-1]["device"].endswith("1 threads)")
    with pytest.raises(CheckpointError, match="already exists"):
        fit(load_config("gru4rec", tiny(log, "train.epochs=1")), tmp_path / "r")


def test_a_run_saved_before_a_config_field_existed_still_resumes(log: Path, tmp_path: Path) -> None:
    fit(load_config("gru4rec", tiny(log, "train.epochs=1")), tmp_path / "r")
    meta = json.loads((tmp_path / "r" / "model.json").read_text())
    del meta["config"]["model"]["tie_output"]  # as written by the code before model.tie_output (default true)
    (tmp_path / "r" / "model.json").write_text(json.dumps(meta))
    resumed = fit(load_config("gru4rec", tiny(log, "train.epochs=2")), tmp_path / "r", resume=True)
    assert [s["after_epoch"] for s in resumed["segments"]] == [0, 1]
    with pytest.raises(CheckpointError, match=r"another config \(model.dim, train.lr differ\)"):
        fit(load_config("gru4rec", tiny(log, "train.epochs=3", "train.lr=0.5", "model.dim=8")), tmp_path / "r",
            resume=True)


def test_same_seed_same_results_other_seed_other_results(log: Path, tmp_path: Path) -> None:
    r1 = fit(load_config("sasrec", tiny(log, "train.epochs=1")), tmp_path / "s1")
    r2 = fit(load_config("sasrec", tiny(log, "train.epochs=1")), tmp_path / "s2")
    r3 = fit(load_config("sasrec", tiny(log, "train.epochs=1", "seed=7")), tmp_path / "s3")
    assert r1["test"] == r2["test"]
    assert r1["test"] != r3["test"]


def test_bert4rec_and_bce_train_and_the_leakage_rule_is_enforced(log: Path, tmp_path: Path) -> None:
    res = fit(load_config("bert4rec", tiny(log, "train.epochs=2", "model.heads=2")), tmp_path / "b4r")
    assert 0.0 <= res["test"]["ndcg@10"] <= 1.0
    res = fit(load_config("sasrec", tiny(log, "train.epochs=2", "train.loss=bce")), tmp_path / "bce")
    assert np.isfinite(res["test"]["mrr"])
    with pytest.raises(ConfigError, match="global"):
        fit(load_config("bert4rec", tiny(log, "train.objective=next_item")), tmp_path / "leak")


def test_eval_reloads_the_best_checkpoint_and_matches_training_results(log: Path, tmp_path: Path) -> None:
    res = fit(load_config("sasrec", tiny(log, "train.epochs=2")), tmp_path / "e")
    again = evaluate_run(tmp_path / "e")
    assert again["metrics"] == pytest.approx(res["test"], rel=1e-6)
    sampled = evaluate_run(tmp_path / "e", sampled="popularity", negatives=20)
    assert "sampled" in sampled["protocol"] and sampled["metrics"]["recall@50"] == 1.0  # only 21 candidates
    cfg, model, splits = load_run(tmp_path / "e")
    history = torch.tensor([[0, 0, 5, 6, 7]])
    top = (model(history, history > 0)[:, -1] @ model.item_table()[1:].T).topk(3).indices + 1
    assert top.shape == (1, 3)


def test_an_untied_output_table_trains_scores_and_reloads(log: Path, tmp_path: Path) -> None:
    res = fit(load_config("sasrec", tiny(log, "train.epochs=2", "model.tie_output=false")), tmp_path / "u")
    assert evaluate_run(tmp_path / "u")["metrics"] == pytest.approx(res["test"], rel=1e-6)
    _, model, _ = load_run(tmp_path / "u")
    assert model.out_emb is not None and model.item_table() is model.out_emb.weight
    assert model.item_table().shape == (model.num_items + 1, 16)
    assert not torch.equal(model.item_table()[1:], model.item_emb.weight[1 : model.num_items + 1])


def test_cli_eval_of_a_corrupt_checkpoint_is_one_clear_error(log: Path, tmp_path: Path) -> None:
    fit(load_config("gru4rec", tiny(log, "train.epochs=1")), tmp_path / "c")
    best = tmp_path / "c" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    proc = subprocess.run([sys.executable, "-m", "longrec", "eval", str(tmp_path / "c")], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("longrec: error:")
    assert "best.safetensors" in proc.stderr


def test_train_init_starts_from_another_runs_weights_and_refuses_a_bad_source(log: Path, tmp_path: Path) -> None:
    from longrec.train.checkpoint import load_tensors

    fit(load_config("lrurec", tiny(log, "train.epochs=2")), tmp_path / "short")
    # lr 1e-30 (0 is refused): the weights the second run starts from are, to 1e-20, the weights it saves; a longer
    # window, same shapes (LRU has no positions)
    fit(load_config("lrurec", tiny(log, "train.epochs=1", "train.lr=1e-30", "model.max_len=24",
                                   f"train.init={tmp_path / 'short'}")), tmp_path / "long")
    src, got = (load_tensors(tmp_path / d / "best.safetensors") for d in ("short", "long"))
    assert got.keys() == src.keys() and all(torch.allclose(got[k], src[k], rtol=0, atol=1e-20) for k in src)
    fresh = fit(load_config("lrurec", tiny(log, "train.epochs=1", "train.lr=1e-30")), tmp_path / "fresh")
    assert fresh["test"] != json.loads((tmp_path / "long" / "results.json").read_text())["test"]
    with pytest.raises(ConfigError, match="no such weights file"):
        fit(load_config("lrurec", tiny(log, f"train.init={tmp_path / 'none'}")), tmp_path / "bad")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        fit(load_config("lrurec", tiny(log, "model.dim=8", f"train.init={tmp_path / 'short'}")), tmp_path / "bad")
    shifted = tmp_path / "shifted.txt"  # the same number of items under other ids
    shifted.write_text("".join(f"{u} {int(i) + 100}\n" for u, i in (ln.split() for ln in log.read_text().splitlines())))
    with pytest.raises(ConfigError, match="item ids differ"):
        fit(load_config("lrurec", [*tiny(shifted), f"train.init={tmp_path / 'short'}"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing half-written
