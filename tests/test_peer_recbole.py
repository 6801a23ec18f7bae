"""The pure parts of the RecBole peer benchmark: data conversion, epoch sizes, config, commands, report."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import benchmarks
import longrec
from benchmarks import peer_recbole as pr
from longrec.config import load_config, to_dict
from longrec.errors import ConfigError, DataError
from longrec.train.report import time_to

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml-1m-sasrec.yaml"


def test_read_pairs_plain_and_gz_then_atomic_file(tmp_path: Path) -> None:
    text = "1 10\n1 11\n2 10\n\n2 12\n"
    (tmp_path / "a.txt").write_text(text)
    with gzip.open(tmp_path / "a.txt.gz", "wt") as f:
        f.write(text)
    pairs = [("1", "10"), ("1", "11"), ("2", "10"), ("2", "12")]
    assert pr.read_pairs(tmp_path / "a.txt") == pr.read_pairs(tmp_path / "a.txt.gz") == pairs
    inter = pr.write_inter(pairs, tmp_path / "data" / "ml-1m" / "ml-1m.inter")
    assert inter.read_text().splitlines() == [
        "user_id:token\titem_id:token\ttimestamp:float", "1\t10\t0", "1\t11\t1", "2\t10\t2", "2\t12\t3"]


def test_read_pairs_rejects_a_one_field_line_and_an_empty_file(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("1 10\n7\n")
    with pytest.raises(DataError, match=r"bad.txt:2"):
        pr.read_pairs(tmp_path / "bad.txt")
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(DataError, match="no interactions"):
        pr.read_pairs(tmp_path / "empty.txt")


def test_epoch_sizes_count_prefix_rows_and_windowed_targets() -> None:
    # lengths 5, 3, 250 -> training lengths k = 3, 1, 248
    pairs = [("a", str(i)) for i in range(5)] + [("b", str(i)) for i in range(3)] + [("c", str(i)) for i in range(250)]
    assert pr.epoch_sizes(pairs, max_len=200) == {
        "users": 3, "recbole_rows": 2 + 0 + 247, "longrec_rows": 2, "longrec_targets": 2 + 200}


def test_recbole_config_mirrors_the_sasrec_preset() -> None:
    cfg = load_config(str(CONFIG))
    rb = pr.recbole_config(cfg, pr.PeerConfig(), Path("/tmp/d"))
    expected = {"n_layers": 2, "n_heads": 1, "hidden_size": 64, "inner_size": 64, "hidden_dropout_prob": 0.2,
                "attn_dropout_prob": 0.0, "hidden_act": "gelu", "MAX_ITEM_LIST_LENGTH": 200, "loss_type": "CE",
                "train_neg_sample_args": None, "learning_rate": 1e-3, "weight_decay": 0.0, "train_batch_size": 128,
                "clip_grad_norm": {"max_norm": 1.0}, "stopping_step": 10, "epochs": 200, "valid_metric": "NDCG@10",
                "seed": 42, "use_gpu": False, "data_path": "/tmp/d", "mask_history": True}
    assert {k: rb[k] for k in expected} == expected
    assert rb["eval_args"] == {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"}
    assert pr.recbole_config(cfg, pr.PeerConfig(batch=256, epochs=3), Path("/d"))["train_batch_size"] == 256


def test_recbole_config_refuses_what_recbole_sasrec_lacks() -> None:
    cfg = load_config(str(CONFIG), ["train.loss=bce", "model.pos=none"])
    with pytest.raises(ConfigError, match=r"model.pos, train.loss"):
        pr.recbole_config(cfg, pr.PeerConfig(), Path("/d"))


def test_driver_command_runs_the_driver_module_in_the_peer_venv_with_only_longrec_and_benchmarks_on_the_path(
        tmp_path: Path) -> None:
    job = tmp_path / "work" / "job.json"
    job.parent.mkdir()
    argv, env = pr.driver_command(Path("venv"), job, threads=1)
    assert argv == [str(Path("venv").absolute() / "bin" / "python"), "-m", "benchmarks.recbole_driver",
                    str(job.resolve())]
    shim = Path(env["PYTHONPATH"])
    assert sorted(p.name for p in shim.iterdir()) == ["benchmarks", "longrec"]
    assert (shim / "longrec").resolve() == Path(longrec.__file__).resolve().parent
    assert (shim / "benchmarks").resolve() == Path(str(benchmarks.__file__)).resolve().parent
    assert env["OMP_NUM_THREADS"] == "1"


def test_setup_installs_pinned_torch_before_recbole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(pr.subprocess, "run", lambda argv, check: calls.append(argv))
    pr.setup(tmp_path / "venv")
    assert calls[0][1:] == ["-m", "venv", str(tmp_path / "venv")]
    installs = [c[c.index("install") + 1 :] for c in calls if "install" in c]
    assert installs[0] == ["torch==2.13.0"] and "recbole==1.2.1" in installs[1] and "numpy<2" in installs[1]


def _run_dir(tmp_path: Path, ndcgs: list[float], seconds: float) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(str(CONFIG), ["train.threads=1"]))))
    lines = [{"epoch": i + 1, "seconds": seconds, "valid": {"ndcg@10": v}} for i, v in enumerate(ndcgs)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return run


def test_longrec_side_time_to_and_the_table(tmp_path: Path) -> None:
    ours = pr.longrec_side(_run_dir(tmp_path, [0.05, 0.12, 0.11], seconds=60.0))
    assert not ours["finished"] and ours["peak_rss_mib"] is None and ours["batch"] == 128
    assert time_to(ours["epochs"], 0.1) == 120.0 and time_to(ours["epochs"], 0.2) is None
    sizes = {"users": 2, "recbole_rows": 981_491, "longrec_rows": 6040, "longrec_targets": 900_000}
    bounded: dict[str, Any] = {"mode": "bounded", "threads": 1, "batch": 128, "train_rows": 981_491, "steps": 40,
                               "warmup": 3, "rows_per_s": 100.0, "epoch_train_seconds_est": 9814.91,
                               "peak_rss_mib": 4000.0}
    text = pr.table(bounded, ours, sizes, 0.12)
    assert "| rows/s (targets/s) | 100.7 (15,000) | 100.0 (same) |" in text
    assert "| time per epoch | 60.0 s (median, incl. validation) | 2.73 h, extrapolated from 37 timed steps" in text
    assert "| time to valid NDCG@10 ≥ 0.1200 | 2.0 min | – (bounded run) |" in text
    full = bounded | {"mode": "full", "epochs": [{"epoch": 1, "seconds": 7200.0, "train_seconds": 7100.0,
                                                  "valid": {"ndcg@10": 0.13}}]}
    assert "| best valid NDCG@10 | 0.1200 (epoch 2 of 3) | 0.1300 (epoch 1 of 1) |" in pr.table(full, ours, sizes, 0.12)
    assert "| 2.0 min | 120.0 min |" in pr.table(full, ours, sizes, 0.12)
