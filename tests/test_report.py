"""longrec report: one markdown row per finished run, naming what each model was trained on."""

from __future__ import annotations

import json

import pytest

from longrec.errors import CheckpointError
from longrec.train.report import table, training_objective


def results(loss: str, **train: object) -> dict:
    return {
        "test": {"ndcg@10": 0.17561, "recall@10": 0.3053, "mrr@10": 0.1362, "ndcg@20": 0.203},
        "training": {"epochs": 74, "best_epoch": 64, "seconds_per_epoch": 61.27, "seconds_to_best": 4080.0},
        "config": {"data": {"name": "ml-1m"}, "model": {"mixer": "softmax", "mixer_args": {"causal": True}},
                   "train": {"objective": "next_item", "loss": loss, "negatives": 256, **train}},
        "wall_seconds": 4542.0, "peak_memory": {"cpu_rss_mib": 1309.4}, "device": "cpu (x86_64, 2 threads)",
        "git_commit": "43b5c6b0123456789", "protocol": "full ranking, history masked",
    }


def test_rows_name_the_loss_and_the_protocol(tmp_path):
    for name, res in (("ce", results("ce")), ("sampled", results("sampled", sampler="popularity"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    out = table([tmp_path / "ce", tmp_path / "sampled"]).splitlines()
    assert out[2] == ("| ce | ml-1m | softmax causal=True; next_item ce | 0.1756 | 0.3053 | 0.1362 | 0.2030 | 74 (64) "
                      "| 61.3 | 68.0 | 75.7 | 1309 | cpu (x86_64, 2 threads) | 43b5c6b01234 |")
    assert "next_item sampled popularity x256" in out[3]
    assert out[0].count("|") == out[2].count("|")
    assert out[-1] == "Test split; protocol: full ranking, history masked."


def test_gpu_runs_show_their_cuda_peak_beside_the_rss(tmp_path):
    res = results("ce") | {"peak_memory": {"cpu_rss_mib": 1466.1, "cuda_mib": 272.8}, "device": "NVIDIA H200"}
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "results.json").write_text(json.dumps(res))
    assert "| 75.7 | 1466, 273 | NVIDIA H200 |" in table([tmp_path / "gpu"]).splitlines()[2]


def test_a_run_resumed_under_other_code_names_every_commit(tmp_path):
    seg = [{"after_epoch": 0, "git_commit": "d89f1630000000"}, {"after_epoch": 5, "git_commit": "c18edaa0000000"},
           {"after_epoch": 9, "git_commit": "43b5c6b0123456789"}]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.json").write_text(json.dumps(results("ce") | {"segments": seg}))
    assert table([tmp_path / "r"]).splitlines()[2].endswith(
        "| 43b5c6b01234 (resumed; earlier d89f16300000, c18edaa00000) |")
    (tmp_path / "r" / "results.json").write_text(json.dumps(results("ce") | {"segments": seg[2:] * 2}))
    assert table([tmp_path / "r"]).splitlines()[2].endswith("| 43b5c6b01234 |")  # resumed under the same code


def test_target_column_is_the_time_until_the_valid_metric_first_reached_it(tmp_path):
    (tmp_path / "r").mkdir()
    res = results("ce")
    res["config"]["eval"] = {"metric": "ndcg@10"}
    (tmp_path / "r" / "results.json").write_text(json.dumps(res))
    curve = [(60.0, 0.05), (90.0, 0.12), (30.0, 0.11), (120.0, 0.16)]
    (tmp_path / "r" / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": i + 1, "seconds": s, "valid": {"ndcg@10": v}}) + "\n" for i, (s, v) in enumerate(curve)))
    out = table([tmp_path / "r"], target=0.12).splitlines()
    assert out[0].endswith("| min to valid ≥ 0.12 |") and out[2].endswith("| 2.5 |")  # (60 + 90) s
    assert table([tmp_path / "r"], target=0.2).splitlines()[2].endswith("| not reached |")
    assert table([tmp_path / "r"], target=0.16).splitlines()[2].endswith("| 5.0 |")
    with (tmp_path / "r" / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 5, "seconds": 60.0, "valid": {"ndcg@1\n')  # a run killed mid-write
    with pytest.raises(CheckpointError, match=r"metrics.jsonl:5: not JSON"):
        table([tmp_path / "r"], target=0.12)
    (tmp_path / "r" / "metrics.jsonl").unlink()
    with pytest.raises(CheckpointError, match="metrics.jsonl: missing"):
        table([tmp_path / "r"], target=0.12)


def test_objective_labels_and_a_missing_run(tmp_path):
    assert training_objective({"objective": "masked_item", "loss": "gbce", "negatives": 8}) == "masked_item gbce x8"
    with pytest.raises(CheckpointError, match="results.json: missing"):
        table([tmp_path])


def test_a_run_without_test_figures_shows_its_validation_ones_marked(tmp_path):
    res = results("ce")
    res["valid"] = res.pop("test") | {"ndcg@10": 0.18}  # trained with eval.test=false (a tuning trial)
    for name, r in (("trial", res), ("run", results("ce"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(r))
    out = table([tmp_path / "trial", tmp_path / "run"]).splitlines()
    assert out[2].startswith("| trial (valid) | ml-1m | softmax causal=True; next_item ce | 0.1800 |")
    assert out[3].startswith("| run | ml-1m |") and "| 0.1756 |" in out[3]
    assert out[-1].startswith("Test split (runs marked (valid): the validation split, trained with eval.test=false);")
    del res["valid"]
    (tmp_path / "trial" / "results.json").write_text(json.dumps(res))
    with pytest.raises(CheckpointError, match="results.json: field test is missing"):
        table([tmp_path / "trial"])
