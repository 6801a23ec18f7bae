"""The window sweep: paired bootstrap CIs, windows that change what a run sees, the same users in every cell."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from longrec.bench.window_sweep import main as sweep_main
from longrec.config import load_config
from longrec.data.synthetic import write_pairs
from longrec.metrics import ndcg_per_row, paired_bootstrap
from longrec.train.loop import fit


def test_paired_bootstrap_is_exact_for_a_constant_shift_and_covers_the_mean() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(500)
    same = paired_bootstrap(a, a)
    assert same == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "n": 500}
    shifted = paired_bootstrap(a + 0.25, a)
    assert shifted["lo"] == pytest.approx(0.25) and shifted["hi"] == pytest.approx(0.25)
    noisy = paired_bootstrap(a + rng.normal(0.1, 1.0, 500), a, seed=1)
    half = 1.96 / np.sqrt(500)  # the normal-theory half width for sd 1
    assert noisy["lo"] < noisy["diff"] < noisy["hi"]
    assert noisy["hi"] - noisy["lo"] == pytest.approx(2 * half, rel=0.15)
    assert np.isnan(paired_bootstrap(a[:0], a[:0])["diff"])


def test_ndcg_per_row() -> None:
    np.testing.assert_allclose(ndcg_per_row(np.array([1, 3, 11]), 10), [1.0, 0.5, 0.0])


def log_file(path: Path, users: int = 40, seed: int = 0) -> Path:
    """Each user's test target is an item seen 5 times 31-35 events before: a long window finds it, a short not."""
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(users):
        seq = rng.integers(1, 400, int(rng.integers(36, 60)))
        seq[-36:-31] = seq[-1]
        seqs.append(seq)
    return write_pairs(path, enumerate(seqs))


def test_sweep_sees_a_longer_window_pay_and_writes_its_outputs(tmp_path: Path) -> None:
    log = log_file(tmp_path / "log.txt")
    cfg = load_config("personal-frequency", [f"data.name={log}", "eval.mask_history=false", "model.max_len=5"])
    fit(cfg, tmp_path / "rep")
    out = tmp_path / "out"
    sweep_main([str(tmp_path / "rep"), "--windows", "own", "10", "40", "full", "--ref", "0:own", "--long", "40",
                "--out", str(out)])
    cells = {c["window"]: c for c in json.loads((out / "window-sweep.json").read_text())["cells"]}
    assert cells["own"]["n"] == 5 and cells["full"]["n"] >= 40
    assert cells["10"]["metrics"]["ndcg@10"] < 0.2 < cells["40"]["metrics"]["ndcg@10"]
    assert cells["40"]["ci_all"]["lo"] > 0 and cells["own"]["ci_all"]["diff"] == 0.0
    assert cells["40"]["protocol"] == "full ranking, history not masked"
    assert cells["40"]["repeat_users"] == 40 and cells["40"]["repeat"] == cells["40"]["metrics"]  # all repeat
    assert "| personal-frequency (5) | 40=40 |" in (out / "window-sweep.md").read_text()


def test_runs_on_different_users_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, seed in (("a", 0), ("b", 1)):
        log = log_file(tmp_path / f"{name}.txt", users=40 + seed, seed=seed)
        fit(load_config("popularity", [f"data.name={log}"]), tmp_path / name)
    with pytest.raises(SystemExit) as e:
        sweep_main([str(tmp_path / "a"), str(tmp_path / "b"), "--windows", "5", "--ref", "0:5",
                    "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    assert "users differ" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
