"""The benchmark harness (isolated cells, tables) and the studies under benchmarks/ on tiny inputs; `longrec bench`
lists exactly the benchmarks the package ships."""

from __future__ import annotations

import csv
import pkgutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import longrec.bench
from benchmarks import attn_dropout, large_catalogue, large_log, lru_scan
from benchmarks.timing import best_of
from conftest import needs_data
from longrec.bench.harness import CellFailed, markdown, percentile, run_cell, write_csv
from longrec.cli import BENCHES, build_parser
from longrec.config import load_config
from longrec.train.loop import epoch_batches
from longrec.train.rundir import load_data

REPO = Path(__file__).resolve().parents[1]

CELL = """
import json, os, signal, sys, time
spec = json.loads(sys.argv[sys.argv.index("--cell") + 1])
if spec["do"] == "fail":
    sys.exit("the cell's own error")
if spec["do"] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(spec.get("sleep", 0))
print("progress noise")
print(json.dumps({"twice": 2 * spec["x"]}))
"""


def test_run_cell_returns_the_last_json_line_and_names_each_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cellmod.py").write_text(CELL)
    monkeypatch.chdir(tmp_path)  # the child runs `python -m cellmod` in the same working directory
    assert run_cell("cellmod", {"do": "ok", "x": 21}, 60) == {"twice": 42}
    for spec, status, note in [({"do": "fail"}, "error", "the cell's own error"),
                               ({"do": "kill"}, "oom", "killed by SIGKILL"),
                               ({"do": "ok", "x": 1, "sleep": 30}, "timeout", "killed after 1 s")]:
        with pytest.raises(CellFailed) as e:
            run_cell("cellmod", spec, 1 if status == "timeout" else 60)
        assert e.value.status == status and note in e.value.note


def test_tables_and_percentiles(tmp_path: Path) -> None:
    rows = [{"a": 1, "b": None}, {"a": 2}]
    path = write_csv(tmp_path / "new" / "t.csv", rows, ("a", "b"))
    assert list(csv.reader(path.open())) == [["a", "b"], ["1", ""], ["2", ""]]
    assert markdown([{"a": 1, "b": "x"}], ("a", "b")) == "| a | b |\n|---|---|\n| 1 | x |"
    assert markdown([{"a": 1 / 3}, {"a": 2}], ("a", "b"), ("A", "B"), {"a": ".2f"}).splitlines()[::2] == [
        "| A | B |", "| 0.33 |  |"]
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 3.0 and percentile([5.0], 0.99) == 5.0


def test_longrec_bench_lists_exactly_the_benchmarks_the_package_ships(capsys: pytest.CaptureFixture[str]) -> None:
    parts = {"harness", "scaling_cell", "serve_proc"}  # modules the benchmarks use, not benchmarks
    shipped = {m.name for m in pkgutil.iter_modules(longrec.bench.__path__)} - parts
    assert set(BENCHES.values()) == shipped
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    assert "{scaling,stream-latency,loadtest,window-sweep}" in capsys.readouterr().out


def test_large_log_study_prepares_both_ways_in_isolated_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("pyarrow")
    monkeypatch.chdir(REPO)  # cells run `python -m benchmarks.large_log`
    large_log.main(["--events", "3000", "--users", "40", "--items", "200", "--dir", str(tmp_path)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| path | events |") and len(table) == 4
    assert all("| ok |" in row and "| 3000 | 40 |" in row for row in table[2:]), table


def test_large_catalogue_study_measures_a_loss_in_an_isolated_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    large_catalogue.main(["--items", "500", "--events", "4000", "--naive", "16", "--chunked", "--sampled",
                          "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "large-catalogue.csv").open()))
    assert [(r["loss"], r["positions"], r["status"]) for r in rows] == [("full_ce", "16", "ok")]
    assert float(rows[0]["peak_growth_mib"]) >= 0 and "| full_ce |" in capsys.readouterr().out


def test_best_of_interleaves_the_settings_and_keeps_each_ones_minimum_after_a_warm_up() -> None:
    calls: list[str] = []
    naps = {"a": [0.0, 0.06, 0.03, 0.09], "b": [0.06, 0.02, 0.05, 0.08]}  # a's fastest run is the warm-up

    def nap(name: str) -> Callable[[], None]:
        def run() -> None:
            calls.append(name)
            time.sleep(naps[name][calls.count(name) - 1])
        return run

    best = best_of({"a": nap("a"), "b": nap("b")}, reps=3)
    assert calls == ["a", "b"] * 4
    assert 0.03 <= best["a"] < 0.06 and 0.02 <= best["b"] < 0.05


def test_lru_scan_study_prints_loop_and_scan_side_by_side(capsys: pytest.CaptureFixture[str]) -> None:
    lru_scan.main(["--lengths", "16", "--batches", "2", "--dim", "4", "--reps", "1"])
    out = capsys.readouterr().out.splitlines()
    assert "loop ms" in out[1] and out[2].split()[:2] == ["16", "2"]
    assert float(out[2].split()[-1]) < 1e-4  # max |h_loop - h_scan|


@needs_data
def test_attn_dropout_study_compares_the_same_model_with_and_without_dropout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny = ["bert4rec", "data.name=ml-100k", "model.max_len=16", "train.batch_size=8"]
    cfg = load_config(tiny[0], tiny[1:])
    splits = load_data(cfg, quiet=True)
    batches = [next(epoch_batches(cfg, splits, np.random.default_rng(0)))]
    a, _ = attn_dropout.step_cell(cfg, 0.0, batches, splits.corpus.num_items)
    b, _ = attn_dropout.step_cell(cfg, 0.3, batches, splits.corpus.num_items)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert {m.attn_dropout for m in b.modules() if hasattr(m, "attn_dropout")} == {0.3}
    attn_dropout.main([*tiny, "--batches", "1", "--reps", "1", "--p", "0.3",
                       "--threads", str(torch.get_num_threads())])
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert set(rows) == {"sdpa", "step"} and all(float(v) > 0 for r in rows.values() for v in r)
