"""longrec export --format onnx: for every neural preset the encoder (and for causal ones the step function) run
in onnxruntime equals torch within 1e-4, on padded histories of other batch sizes and lengths than the traced
ones; the time channel and the repeat head export too; what does not export is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from longrec.cli import main
from longrec.config import ExperimentConfig, load_config
from longrec.export import export_model
from longrec.mixers.gated_delta import GatedDeltaMixer
from longrec.model.encoder import SeqEncoder
from longrec.objectives import build_model
from longrec.scoring import EncoderScorer
from longrec.train.loop import fit
from longrec.train.run import load_run
from tests_helpers import synthetic_log

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

CAUSAL = ["sasrec", "causal-linrec", "causal-linrec-local", "lt-sasrec", "ea-sasrec", "gru4rec", "hydrarec-causal",
          "recgrela-causal", "lrurec", "gla", "retention", "gated-delta"]
GLOBAL = ["bert4rec", "hydrarec", "linrec-sasrec", "recgrela"]
TINY = ["model.dim=16", "model.max_len=12", "model.dropout=0.0"]
ITEMS = 30  # catalogue size of the tiny models


def tiny(preset: str, extra: tuple[str, ...] = ()) -> tuple[ExperimentConfig, SeqEncoder]:
    """A preset's config and its model at tiny size, weights shaken off their init (so that a head that starts
    at zero, or a near-identity gate, is exercised)."""
    cfg = load_config(preset, [*TINY, "model.layers=1", *extra])  # one layer: the exporter's time is per op
    torch.manual_seed(0)
    model = build_model(ITEMS, cfg.model, cfg.train).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return cfg, model


def windows(B: int, N: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """items [B,N] left-padded (row 0 full, row 1 a single event), mask, times [B,N] float64 increasing seconds."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, N + 1, (B,), generator=gen)
    lengths[0], lengths[1] = N, 1
    mask = torch.arange(N)[None] >= (N - lengths)[:, None]
    items = torch.randint(1, 6, (B, N), generator=gen) * mask  # few items: repeats
    times = 1.7e9 + (2.0 ** (25 * torch.rand(B, N, generator=gen, dtype=torch.float64))).floor().cumsum(1)
    return items, mask, times


def feeds(names: list[str], *tensors: Tensor) -> dict[str, np.ndarray]:
    return {k: t.numpy() for k, t in zip(names, tensors, strict=False)}


def check_files(out: Path, model: SeqEncoder) -> None:
    """The files as a user loads them: the encoder on two padded batches (B, N) = (3, 7) and (4, 12), and step.onnx
    for six events from the empty state, each against torch, and stepping a full window ends at its encoder h."""
    meta = json.loads((out / "export.json").read_text())
    assert meta["max_abs_diff"]["encoder"] <= 1e-4
    timed = model.uses_time
    enc = ort.InferenceSession(str(out / "encoder.onnx"), providers=["CPUExecutionProvider"])
    ins = [i.name for i in enc.get_inputs()]
    assert ins == ["items", "mask", *(["times"] if timed else [])]
    for B, N in ((3, 7), (4, 12)):
        items, mask, times = windows(B, N, seed=B * N)
        got = enc.run(None, feeds(ins, items, mask, times))
        with torch.no_grad():
            h = model(items, mask, times if timed else None)[:, -1]
        assert np.abs(got[0] - h.numpy()).max() <= 1e-4
    assert (out / "step.onnx").is_file() == model.causal and ("step" in meta) == model.causal
    if not model.causal:
        return
    assert meta["max_abs_diff"]["step"] <= 1e-4
    step = ort.InferenceSession(str(out / "step.onnx"), providers=["CPUExecutionProvider"])
    items, mask, times = windows(2, 6, seed=5)
    items = items.clamp(min=1)  # a full window: every event is stepped
    state = model.init_state(2, torch.device("cpu"))
    names = meta["step"]["inputs"][1 + timed:]
    assert sorted(state) == names
    onnx_state = {k: state[k].numpy() for k in names}
    for t in range(6):
        extra = (times[:, t],) if timed else ()
        with torch.no_grad():
            h, state = model.step(state, items[:, t], *extra)
        got = step.run(None, {**feeds(["items", *(["times"] if timed else [])], items[:, t], *extra), **onnx_state})
        assert np.abs(got[0] - h.numpy()).max() <= 1e-4
        onnx_state = dict(zip(names, got[1:], strict=True))
        for k in names:  # the state carried between events, as a caller carries it
            assert np.allclose(onnx_state[k], state[k].numpy(), atol=1e-4, equal_nan=True), k
    whole = enc.run(["h"], feeds(ins, items, torch.ones_like(mask), times))[0]
    assert np.abs(whole - got[0]).max() <= 1e-4


@pytest.mark.parametrize("preset", CAUSAL + GLOBAL)
def test_every_preset_exports_and_onnxruntime_matches_torch(tmp_path: Path, preset: str) -> None:
    cfg, model = tiny(preset)
    export_model(cfg, model, tmp_path, preset)
    assert model.causal == (preset in CAUSAL)
    check_files(tmp_path, model)


VARIANTS = [("sasrec", ("model.time=gap",)), ("gated-delta", ("model.time=gap", "model.repeat=true")),
            ("lrurec", ("model.repeat=true",))]


@pytest.mark.parametrize(("preset", "extra"), VARIANTS, ids=["time", "time+repeat", "repeat"])
def test_the_time_channel_and_the_repeat_head_export(tmp_path: Path, preset: str, extra: tuple[str, ...]) -> None:
    cfg, model = tiny(preset, extra)
    export_model(cfg, model, tmp_path, preset)
    check_files(tmp_path, model)
    if model.repeat is None:
        return
    # the documented scores, from the encoder's outputs, equal the scorer's (h . table plus the bonus)
    items, mask, times = windows(4, 12, seed=1)
    t = times if model.uses_time else None
    sess = ort.InferenceSession(str(tmp_path / "encoder.onnx"), providers=["CPUExecutionProvider"])
    h, item, bias = sess.run(None, feeds([i.name for i in sess.get_inputs()], items, mask, times))
    scores = h @ np.load(tmp_path / "item_table.npy").T
    for b, j in zip(*np.nonzero(item > 0), strict=True):
        scores[b, item[b, j]] += bias[b, j]
    scorer = EncoderScorer(model)
    with torch.no_grad():
        want = scorer.scores(scorer.encode(items, mask, t), 0, ITEMS + 1)
    assert (item > 0).sum() > 4 and np.abs(scores - want.numpy()).max() <= 1e-4


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_log(tmp_path_factory.mktemp("export") / "walk.txt", users=40)


@pytest.mark.parametrize("preset", ["lrurec", "bert4rec"])
def test_the_cli_exports_a_trained_run(log: Path, tmp_path: Path, preset: str) -> None:
    fit(load_config(preset, [f"data.name={log}", *TINY, "train.epochs=1"]), tmp_path / "run")
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    _, model, _ = load_run(tmp_path / "run")
    check_files(tmp_path / "onnx", model)
    # scores as the README gives them: h @ item_table.T
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"), providers=["CPUExecutionProvider"])
    items = torch.tensor([[0, 0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]])
    with torch.no_grad():
        want = model(items, items > 0)[:, -1] @ model.item_table().T
    h = sess.run(["h"], {"items": items.numpy(), "mask": (items > 0).numpy()})[0]
    assert np.abs(h @ np.load(tmp_path / "onnx" / "item_table.npy").T - want.numpy()).max() <= 1e-4


def test_an_op_that_does_not_export_is_refused_in_one_line(log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capfd: pytest.CaptureFixture) -> None:
    # without its export_args gated delta traces its chunked WY form, whose triangular solve ONNX lacks
    monkeypatch.setattr(GatedDeltaMixer, "export_args", {})
    fit(load_config("gated-delta", [f"data.name={log}", *TINY, "train.epochs=1"]), tmp_path / "run")
    capfd.readouterr()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "onnx")]) == 2
    out, err = capfd.readouterr()  # the process's own stdout and stderr: the exporter's C++ log stays off them
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1, err[:500]
    assert "(gated_delta): the encoder does not export to ONNX" in lines[0] and "solve_triangular" in lines[0]
    assert not (tmp_path / "onnx").exists()


def test_export_refuses_a_baseline_in_one_line(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fit(load_config("popularity", [f"data.name={log}"]), tmp_path / "pop")
    capsys.readouterr()
    assert main(["export", str(tmp_path / "pop"), "--out", str(tmp_path / "onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "baseline" in err[0] and not (tmp_path / "onnx").exists()
