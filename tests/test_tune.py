"""longrec tune on ml-100k with a tiny model: trials on validation only, fixed seeds, best.yaml, resume after an
interrupted or killed trial, the space file checked at the boundary; the epoch hook and eval.test=false of fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

import longrec.train.loop as loop
import longrec.train.results as results
import longrec.tune.study as tune_study
from longrec.cli import main
from longrec.config import load_config
from longrec.train.report import table
from longrec.tune import TuneOptions, tune
from longrec.tune.space import load_space
from tests_helpers import synthetic_log

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.name=ml-100k", "model.layers=1", "model.max_len=20", "train.batch_size=256", "eval.batch_size=512",
        "train.epochs=1"]
SPACE = ("train.lr: {log_uniform: [1e-3, 1e-2]}  # 1e-3: PyYAML reads it as a string; the space reads a number\n"
         "model.dropout: {uniform: [0.0, 0.3]}\n"
         "model.dim: {choice: [8, 16]}\n")

needs_ml100k = pytest.mark.skipif(not (Path(os.environ.get("LONGREC_DATA_DIR", ROOT.parent / "shared" / "data"))
                                     / "ml-100k").is_dir(), reason="ml-100k not found (set LONGREC_DATA_DIR)")


@pytest.fixture()
def space(tmp_path: Path) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def trials_of(out: Path, name: str = "sasrec") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}").get_trials()


@needs_ml100k
def test_a_tiny_tune_writes_its_table_and_a_best_yaml_that_retrains_to_the_same_valid_metric(
        space: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    splits_seen: list[str] = []

    def spy(scorer: Any, splits: Any, rows: Any, *args: Any, **kwargs: Any) -> Any:
        splits_seen.append("test" if rows is splits.test else "valid" if rows is splits.valid else "?")
        return evaluate(scorer, splits, rows, *args, **kwargs)

    evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", spy)
    monkeypatch.setattr(results, "evaluate", spy)
    out = tmp_path / "tune"
    res = tune("sasrec", TINY, space, TuneOptions(3, out))
    assert splits_seen and set(splits_seen) == {"valid"}  # no trial touched the test split
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    rows = (out / "trials.md").read_text().splitlines()
    assert rows[0] == ("| trial | state | valid ndcg@10 | epochs | seconds | seed | train.lr | model.dropout | "
                       "model.dim | note |") and len(rows) == 5
    best = max(trials, key=lambda t: t.value or 0.0)
    assert f"| {best.number} | COMPLETE | {best.value:.4f} | 1 |" in rows[2 + best.number] and rows[2 + best.number]\
        .endswith("| best |")
    for t in trials:
        run = json.loads((out / "trials" / f"{t.number:03d}" / "results.json").read_text())
        assert "test" not in run and run["valid"]["ndcg@10"] == t.value
        assert run["config"]["seed"] == t.user_attrs["seed"] == tune_study.trial_seed(42, t.number)
        assert run["config"]["model"]["dim"] == t.params["model.dim"]
        assert isinstance(t.params["train.lr"], float) and 1e-3 <= t.params["train.lr"] <= 1e-2
    assert len({t.user_attrs["seed"] for t in trials}) == 3
    assert "000 (valid) | ml-100k" in table([out / "trials" / "000"])  # a trial reads like any run
    cfg = load_config(str(out / "best.yaml"))
    assert cfg == res["best"] and cfg.seed == best.user_attrs["seed"] and cfg.eval.test
    assert cfg.train.lr == best.params["train.lr"] and cfg.model.dropout == best.params["model.dropout"]
    splits_seen.clear()
    again = loop.fit(cfg, tmp_path / "retrain")
    assert again["valid"]["ndcg@10"] == best.value  # the trial's seed makes it reproducible
    assert "test" in again and splits_seen.count("test") == 1


@needs_ml100k
def test_an_interrupted_tune_resumes_keeping_its_finished_trials(space: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_fit = tune_study.fit

    def fit(cfg: Any, run_dir: Path, **kwargs: Any) -> Any:
        calls.append(run_dir.name)
        if run_dir.name == "001":
            raise KeyboardInterrupt  # Ctrl-C in trial 1
        return real_fit(cfg, run_dir, **kwargs)

    monkeypatch.setattr(tune_study, "fit", fit)
    out = tmp_path / "tune"
    with pytest.raises(KeyboardInterrupt):
        tune("sasrec", TINY, space, TuneOptions(3, out))
    first = trials_of(out)
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL", "WAITING"]  # trial 1 failed, queued again as 2
    assert first[2].params == first[1].params
    assert not (out / "best.yaml").exists()
    tune("sasrec", TINY, space, TuneOptions(3, out))
    trials = trials_of(out)
    assert calls == ["000", "001", "002", "003"]  # trial 0 kept, not trained again
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[0].value == first[0].value and trials[2].params == first[1].params
    assert "| retry of 1" in (out / "trials.md").read_text().splitlines()[4]
    assert (out / "best.yaml").is_file()


KILLED_IN_TRIAL_1 = """
import os, signal, sqlite3, sys, time
from pathlib import Path
import longrec.tune.study as s
from longrec.tune import TuneOptions, tune
from longrec.tune.space import load_space
out, real = Path(sys.argv[2]), s.fit
def fit(cfg, run_dir, **kw):
    if run_dir.name == "001":  # killed once trial 1's heartbeat is stored (trial 0's is the first)
        db = sqlite3.connect(out / "study.db")
        while db.execute("select count(*) from trial_heartbeats").fetchone()[0] < 2:
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(cfg, run_dir, **kw)
s.fit = fit
tune("sasrec", sys.argv[3:], Path(sys.argv[1]), TuneOptions(3, out))
"""


@needs_ml100k
def test_a_killed_worker_s_trial_is_failed_by_its_heartbeat_and_run_again(space: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_TRIAL_1, str(space), str(out), *TINY], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert [t.state.name for t in trials_of(out)] == ["COMPLETE", "RUNNING"]  # killed: nobody marked it
    time.sleep(2.5)  # SQLite's clock has whole seconds
    tune("sasrec", TINY, space, TuneOptions(3, out, stale_after_s=1))  # 1 s without a heartbeat: stale
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].system_attrs["failed_trial"] == 1


@needs_ml100k
def test_trials_pruned_by_the_pruner_stop_early_and_finish_their_run(space: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: True)
    out = tmp_path / "tune"
    res = tune("sasrec", [*TINY, "train.epochs=3"], space, TuneOptions(2, out, prune_startup=0, prune_warmup=0))
    trials = trials_of(out)
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"] and [t.user_attrs["epochs"] for t in trials] == [1, 1]
    assert json.loads((out / "trials" / "001" / "results.json").read_text())["training"]["epochs"] == 1
    assert "best" not in res and not (out / "best.yaml").exists()  # pruned trials stopped early: none is chosen


@pytest.mark.parametrize("text, key, why", [
    ("train.lrr: {uniform: [0.1, 0.2]}", "train.lrr", "unknown config key"),
    ("train.lr: {normal: [0.1, 0.2]}", "train.lr", "unknown distribution 'normal'"),
    ("train.lr: {uniform: [0.01, 0.001]}", "train.lr", "lo must be below hi"),
    ("train.lr: {log_uniform: [0, 0.01]}", "train.lr", "log_uniform needs lo > 0"),
    ("train.lr: [0.1, 0.2]", "train.lr", "expected one distribution"),
    ("model.dropout: {uniform: [0.0, 1.0]}", "model.dropout", "1.0 is not a legal value ('model.dropout' must be in"),
    ("model.layers: {int: [0, 3]}", "model.layers", "0 is not a legal value ('model.layers' must be positive"),
    ("model.layers: {int: [1.5, 3]}", "model.layers", "int takes [lo, hi] or [lo, hi, step] of integers"),
    ("model.dim: {choice: [64, 100]}", "model.dim", "100 is not a legal value ('model.dim' (100) must be divisible"),
    ("model.mixer: {choice: [softmax, nope]}", "model.mixer", "'nope' is not a legal value"),
    ("data.name: {choice: [ml-1m]}", "data.name", "not tunable"),
    ("seed: {int: [1, 5]}", "seed", "not tunable"),
])
def test_a_bad_space_file_is_one_error_line_naming_file_and_key_exit_2_nothing_written(
        text: str, key: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text + "\n")
    rc = main(["tune", "sasrec", "model.heads=8", "--space", str(path), "--trials", "2", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"longrec: error: {path}: {key}: ") and why in err, err
    assert not (tmp_path / "o").exists()


def test_a_storage_that_cannot_be_opened_is_one_error_line(space: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    rc = main(["tune", "sasrec", "--space", str(space), "--trials", "1", "--storage", "nosuchdb://x",
               "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("longrec: error: --storage nosuchdb://x: cannot")
    assert not out.exists()


@needs_ml100k
def test_a_missing_space_file_or_a_study_started_with_another_space_is_refused(space: Path, tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    assert main(["tune", "sasrec", "--space", str(tmp_path / "none.yaml"), "--trials", "1"]) == 2
    assert "none.yaml: cannot read the space file" in capsys.readouterr().err
    out = tmp_path / "tune"
    out.mkdir()
    tune_study.open_study(load_config("sasrec", TINY), {}, TuneOptions(1, out))  # a study of another (empty) space
    rc = main(["tune", "sasrec", *TINY, "--space", str(space), "--trials", "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "was started with another space" in err and not (out / "trials").exists()


def test_the_epoch_hook_stops_training_and_eval_test_false_skips_the_test_split(tmp_path: Path) -> None:
    log = synthetic_log(tmp_path / "walk.txt")
    seen: list[tuple[int, float]] = []

    def hook(epoch: int, valid: dict[str, float]) -> bool:
        seen.append((epoch, valid["ndcg@10"]))
        return epoch == 2

    cfg = load_config("gru4rec", [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.epochs=5",
                                  "eval.test=false"])
    res = loop.fit(cfg, tmp_path / "run", on_epoch=hook)
    assert [e for e, _ in seen] == [1, 2] and res["training"]["epochs"] == 2
    assert "test" not in res and "test" not in res["users"]
    assert res["valid"]["ndcg@10"] == max(v for _, v in seen)  # the best checkpoint, evaluated on valid
    assert json.loads((tmp_path / "run" / "results.json").read_text()).keys() == res.keys()


@pytest.mark.parametrize("name", ["ml-1m-sasrec", "ml-1m-bert4rec", "ml-1m-gru4rec"])
def test_the_shipped_spaces_check_against_their_configs(name: str) -> None:
    space = load_space(ROOT / "configs" / "tune" / f"{name}.yaml", str(ROOT / "configs" / f"{name}.yaml"))
    assert {"model.dropout", "train.weight_decay", "train.lr", "model.dim", "model.layers"} <= set(space)
    assert ("train.mask_prob" in space) == (name == "ml-1m-bert4rec")
    assert (ROOT / "configs" / "tune" / f"{name}.yaml").read_text().startswith("# Search space for")


@needs_ml100k
@pytest.mark.slow
def test_two_processes_work_on_one_study(space: Path, tmp_path: Path) -> None:
    out = tmp_path / "tune"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longrec", "tune", "sasrec", *TINY, "--space", str(space), "--trials", "4",
           "--storage", f"sqlite:///{tmp_path / 'shared.db'}", "--study", "two", "--out", str(out)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=1200) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outputs]
    trials = optuna.load_study(study_name="two", storage=f"sqlite:///{tmp_path / 'shared.db'}").get_trials()
    assert 4 <= len(trials) <= 5 and {t.state.name for t in trials} == {"COMPLETE"}  # one overshoot at most
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"{t.number:03d}" for t in trials]
    assert len({t.user_attrs["seed"] for t in trials}) == len(trials)
    assert load_config(str(out / "best.yaml")).eval.test
