"""DDP on CPU (gloo): 2-process training follows the single-process run; sharded evaluation counts each user once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from longrec.config import EvalConfig, ModelConfig, TrainConfig, load_config
from longrec.data.corpus import Corpus
from longrec.data.loader import Batch
from longrec.data.split import leave_one_out
from longrec.errors import ConfigError
from longrec.objectives import build_model
from longrec.scoring import EncoderScorer
from longrec.train.distributed import SINGLE, Dist, gather_rows, session, shard
from longrec.train.evaluate import evaluate
from longrec.train.loop import fit
from tests_helpers import synthetic_log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- shards and gathers, in one process


def batch(rows: int, n: int = 4, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, 9, (rows, n), generator=g)
    targets = torch.randint(0, 9, (rows, n), generator=g)  # 0 = no target at that position
    return Batch(items, items > 0, targets, torch.arange(rows))


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_partition_the_batch_and_weights_recover_the_global_mean(world: int) -> None:
    b = batch(7)
    per_position = torch.rand(b.targets.shape)  # a stand-in loss value at every position
    global_mean = per_position[b.targets > 0].mean()
    seen, weighted = [], torch.zeros(())
    for r in range(world):
        part, w = shard(b, Dist(r, world))
        seen += part.users.tolist()
        mean_r = per_position[part.users][part.targets > 0].mean()
        weighted += w * mean_r / world  # what DDP's gradient average does to the weighted rank losses
    assert sorted(seen) == list(range(7))
    torch.testing.assert_close(weighted, global_mean)


def test_a_rank_without_rows_gets_a_placeholder_row_with_no_targets_and_weight_zero() -> None:
    b = batch(1)
    part, w = shard(b, Dist(1, 2))
    assert w == 0.0 and len(part.users) == 1 and not (part.targets > 0).any()
    assert shard(b, SINGLE) == (b, 1.0)


def test_gather_refuses_rows_missing_or_counted_twice() -> None:
    assert gather_rows(np.array([2, 0, 1]), np.array([5, 6, 7]), 3, SINGLE, torch.device("cpu")).tolist() == [6, 7, 5]
    with pytest.raises(RuntimeError, match="1 rows missing"):
        gather_rows(np.array([0, 2]), np.array([1, 1]), 3, SINGLE, torch.device("cpu"))
    with pytest.raises(RuntimeError, match="1 rows counted twice"):
        gather_rows(np.array([0, 1, 1]), np.array([1, 1, 1]), 3, SINGLE, torch.device("cpu"))


def test_distributed_without_a_launcher_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(v, raising=False)
    with pytest.raises(ConfigError, match="torchrun"), session(True, "cpu"):
        pass


# ---------------------------------------------------------------- sharded evaluation over 2 and 3 processes


def eval_corpus(users: int = 13) -> Corpus:
    rng = np.random.default_rng(0)
    return Corpus.from_seqs([rng.integers(1, 31, rng.integers(3, 20)) for _ in range(users)], 30)


def eval_ranks(d: Dist, item_chunk: int) -> np.ndarray:
    splits = leave_one_out(eval_corpus())
    torch.manual_seed(0)
    model = build_model(30, ModelConfig(dim=8, max_len=10, dropout=0.0), TrainConfig())
    cfg = EvalConfig(batch_size=2, item_chunk=item_chunk)
    res = evaluate(EncoderScorer(model), splits, splits.test, cfg, dist=d)
    assert res["users"] == 13
    return np.asarray(res["ranks"])


def _eval_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with session(True, "cpu") as (d, _):
        np.save(f"{out}-{rank}.npy", eval_ranks(d, item_chunk=7))


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_evaluation_ranks_every_user_once_as_one_process_does(world: int, tmp_path: Path) -> None:
    out = str(tmp_path / "ranks")
    mp.spawn(_eval_worker, args=(world, free_port(), out), nprocs=world, join=True)
    single = eval_ranks(SINGLE, item_chunk=1 << 16)
    for r in range(world):  # 13 users: not divisible by 2 or 3; every rank holds all 13 ranks
        np.testing.assert_array_equal(np.load(f"{out}-{r}.npy"), single)


# ---------------------------------------------------------------- training: torchrun + CLI vs one process


def test_two_process_ddp_training_follows_the_single_process_run(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "walk.txt", users=121)  # 121 users: uneven shards, a last batch of 25 rows
    overrides = [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.batch_size=32", "train.lr=0.01",
                 "model.dropout=0.0", "train.epochs=3", "train.patience=50", "eval.batch_size=16",
                 "train.threads=1"]
    single = fit(load_config("sasrec", overrides), tmp_path / "single")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={free_port()}",
           "-m", "longrec", "train", "sasrec", *overrides, "--run-dir", str(tmp_path / "ddp"), "--distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["training"]["processes"] == 2 and single["training"]["processes"] == 1
    assert ddp["users"] == single["users"]  # the same users, each counted once
    losses = [[json.loads(line)["loss"] for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
              for d in ("single", "ddp")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
    for split in ("valid", "test"):
        for key, value in single[split].items():
            assert ddp[split][key] == pytest.approx(value, abs=2e-3), (split, key)
    assert "model: softmax" in proc.stderr and proc.stderr.count("epoch   3") == 1  # rank 0 logs, alone
