"""Smoke test of the mixer-scaling benchmark at tiny sizes: rows, statuses, CSV columns, PNGs, OOM and timeout."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from longrec.bench import harness, scaling
from longrec.bench.scaling import COLUMNS, markdown_table, run_scaling
from longrec.bench.scaling_cell import Cell
from longrec.errors import ConfigError, LongrecError
from longrec.mixers.lru import LRUMixer

PNG = b"\x89PNG\r\n\x1a\n"
TINY = Cell("", batch=2, dim=16, device="cpu", dtype="fp32", reps=1)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_block_rows_csv_pngs_and_simulated_oom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(self: LRUMixer, x: Tensor, mask: Tensor) -> Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB (simulated)")

    monkeypatch.setattr(LRUMixer, "forward", oom)
    rows = run_scaling(
        ["hydrarec-causal", "lrurec"], [32, 16], replace(TINY, level="block", time_limit_s=60), tmp_path, isolate=False
    )
    status = {(r["variant"], r["N"]): r["status"] for r in rows}
    assert status == {
        ("sasrec", 16): "ok",
        ("hydrarec-causal", 16): "ok",
        ("lrurec", 16): "oom",
        ("sasrec", 32): "ok",
        ("hydrarec-causal", 32): "ok",
        ("lrurec", 32): "skipped",
    }
    saved = read_csv(tmp_path / "scaling-block-cpu-fp32.csv")
    assert [(r["variant"], int(r["N"]), r["status"]) for r in saved] == [
        (r["variant"], r["N"], r["status"]) for r in rows
    ]
    for r in saved:
        assert r["device"].startswith("cpu") and r["level"] == "block" and r["dim"] == "16" and r["batch"] == "2"
        assert r["peak_mib"] == "" and r["memory"] == "none"  # in-process CPU memory is not attributable
        if r["status"] == "ok":
            assert float(r["ms"]) > 0 and float(r["ratio_to_softmax"]) > 0
        else:
            assert r["ms"] == r["ratio_to_softmax"] == ""
    assert {float(r["ratio_to_softmax"]) for r in saved if r["variant"] == "sasrec"} == {1.0}
    lru = [r for r in saved if r["variant"] == "lrurec"]
    assert "OutOfMemoryError" in lru[0]["note"] and lru[1]["note"] == "oom at N=16"
    for name in ("time", "memory"):
        png = tmp_path / f"scaling-block-cpu-fp32-{name}.png"
        assert png.read_bytes()[:8] == PNG
    table = markdown_table(rows)
    assert "| lrurec | oom | skipped |" in table and "1.00x" in table


def test_model_level_timeout_skips_larger_lengths(tmp_path: Path) -> None:
    rows = run_scaling(
        ["sasrec", "lt-sasrec"], [16, 32], replace(TINY, level="model", time_limit_s=0.0, items=50), tmp_path, False
    )
    assert [(r["variant"], r["N"], r["status"]) for r in rows] == [
        ("sasrec", 16, "timeout"),
        ("lt-sasrec", 16, "timeout"),
        ("sasrec", 32, "skipped"),
        ("lt-sasrec", 32, "skipped"),
    ]
    assert (tmp_path / "scaling-model-cpu-fp32.csv").exists()


def test_isolated_cell_measures_cpu_memory(tmp_path: Path) -> None:
    (row,) = run_scaling(["sasrec"], [16], replace(TINY, level="model", time_limit_s=60, items=50), tmp_path, True)
    assert row["status"] == "ok", row["note"]
    assert row["memory"] == "cpu_peak_rss_growth" and row["peak_mib"] >= 0 and row["ms"] > 0


def test_unknown_variant_fails_before_measuring(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        run_scaling(["nope"], [16], TINY, tmp_path)
    with pytest.raises(ConfigError, match="backend"):
        run_scaling(["causal-linrec@cuda-magic"], [16], TINY, tmp_path)


def test_mixer_level_with_the_raw_sdpa_kernel_and_csv_after_every_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    real = harness.write_csv

    def spy(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Path:
        written.append(len(rows))
        return real(path, rows, columns)

    monkeypatch.setattr(harness, "write_csv", spy)
    rows = run_scaling(["kernel:sdpa", "causal-linrec"], [8, 16], replace(TINY, level="mixer"), tmp_path, False)
    assert [(r["variant"], r["mixer"], r["status"]) for r in rows[:3]] == [
        ("sasrec", "softmax", "ok"), ("kernel:sdpa", "kernel:sdpa", "ok"), ("causal-linrec", "linrec", "ok")
    ]
    assert written == [3, 6, 6]  # after N=8, after N=16, then the final write with the ratios
    assert {r["level"] for r in read_csv(tmp_path / "scaling-mixer-cpu-fp32.csv")} == {"mixer"}


def test_the_fla_kernel_is_refused_off_cuda(tmp_path: Path) -> None:
    with pytest.raises(LongrecError, match="kernel:fla is flash-linear-attention's CUDA kernel"):
        run_scaling(["kernel:fla"], [8], TINY, tmp_path, isolate=False)


def test_the_command_line_builds_its_cells_from_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scaling.main(["--variants", "lrurec", "--lengths", "8", "--level", "mixer", "--batch", "3", "--dim", "8",
                  "--reps", "1", "--time-limit", "60", "--device", "cpu", "--no-isolate",
                  "--out", str(tmp_path)])
    assert "| lrurec | " in capsys.readouterr().out
    (ref, row) = read_csv(tmp_path / "scaling-mixer-cpu-fp32.csv")
    assert (ref["variant"], row["variant"], row["status"]) == ("sasrec", "lrurec", "ok")
    assert (row["level"], row["batch"], row["dim"], row["note"]) == ("mixer", "3", "8", "")
