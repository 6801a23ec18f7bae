"""longrec export --format onnx: encoder and step outputs equal torch's within 1e-4 under onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from longrec.cli import main
from longrec.config import load_config
from longrec.train.loop import fit
from longrec.train.run import load_run
from tests_helpers import synthetic_log

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

PRESETS = ["sasrec", "causal-linrec", "gru4rec", "bert4rec", "hydrarec-causal", "recgrela-causal"]


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_log(tmp_path_factory.mktemp("export") / "walk.txt", users=40)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_exported_encoder_and_step_match_torch(log: Path, tmp_path: Path, preset: str) -> None:
    fit(load_config(preset, [f"data.name={log}", "model.dim=16", "model.heads=2", "model.max_len=12",
                             "train.epochs=1", "model.dropout=0.0"]), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert meta["max_abs_diff"]["encoder"] <= 1e-4
    _, model, _ = load_run(tmp_path / "run")
    assert ("step" in meta) == model.causal and (tmp_path / "onnx" / "step.onnx").is_file() == model.causal
    if model.causal:
        assert meta["max_abs_diff"]["step"] <= 1e-4
    # an independent check: the files as a user loads them, on a window of another length than export's
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    items = torch.tensor([[0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        want = model(items, items > 0)[:, -1] @ model.item_table().T
    h = sess.run(["h"], {"items": items.numpy(), "mask": (items > 0).numpy()})[0]
    got = h @ np.load(tmp_path / "onnx" / "item_table.npy").T
    assert np.abs(got - want.numpy()).max() <= 1e-4


# LRU's recurrence is complex-valued and gated delta's chunks solve a triangular system: the TorchScript ONNX
# exporter has neither op (retention and gla fail alike, on Python arithmetic over their chunk sizes)
@pytest.mark.parametrize(("preset", "mixer", "op"), [("lrurec", "lru", "view_as_complex"),
                                                     ("gated-delta", "gated_delta", "linalg_solve_triangular")])
def test_a_mixer_whose_ops_do_not_export_is_refused_in_one_line(log: Path, tmp_path: Path, preset: str, mixer: str,
                                                                op: str, capsys: pytest.CaptureFixture) -> None:
    fit(load_config(preset, [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.epochs=1"]),
        tmp_path / "run")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "onnx")]) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert out == "" and len(err) == 1 and f"({mixer}): the encoder does not export to ONNX" in err[0] and op in err[0]
    assert not (tmp_path / "onnx").exists()


def test_export_refuses_a_baseline_in_one_line(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(load_config("popularity", [f"data.name={log}"]), tmp_path / "pop")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "pop"), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "baseline" in err[0] and not (tmp_path / "onnx").exists()
