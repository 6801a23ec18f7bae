"""Export a run's encoder to ONNX: the window encoder (items, mask -> h at the newest position) and, for causal
models, the step function (state in -> h, state out); each is checked against torch with onnxruntime.

Scores are h @ item_table.T (item_table.npy, row 0 PAD): the encoder returns h, not [B, I] scores, so that a
caller can score the catalogue in chunks or with an ANN index, as longrec's own scorer does.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from longrec.errors import CheckpointError, LongrecError
from longrec.model.encoder import SeqEncoder
from longrec.train.checkpoint import atomic_write, write_json
from longrec.train.run import load_run

OPSET = 17
TOL = 1e-4  # max abs difference allowed between onnxruntime and torch


class _Encoder(nn.Module):
    def __init__(self, model: SeqEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: Tensor, mask: Tensor) -> Tensor:
        """items [B,N] int64 left-padded, mask [B,N] bool -> h [B,D] at the newest position."""
        return self.model(items, mask)[:, -1]


class _Step(nn.Module):
    def __init__(self, model: SeqEncoder, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, items: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        """items [B] int64, state tensors in `names` order -> (h [B,D], new state tensors in the same order)."""
        h, new = self.model.step(dict(zip(self.names, state, strict=True)), items)
        return (h, *(new[k] for k in self.names))


def _windows(num_items: int, batch: int, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random left-padded histories: items [B,n], mask [B,n], lengths 1..n (one row full, one of length 1)."""
    lengths = torch.randint(1, n + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = n, 1
    mask = torch.arange(n)[None, :] >= (n - lengths)[:, None]
    items = torch.randint(1, num_items + 1, (batch, n), generator=gen) * mask
    return items, mask


def _onnx_bytes(module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str],
                dynamic: dict[str, dict[int, str]], what: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            # quiet: on failure the exporter prints its whole IR graph to stdout
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                                  dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        # an unsupported op (OnnxExporterError is a RuntimeError), or tracing Python arithmetic over shapes
        except (RuntimeError, AttributeError, TypeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise LongrecError(f"{what} does not export to ONNX ({first})") from None
        return path.read_bytes()


def _session(data: bytes, what: str) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise LongrecError("export needs onnx and onnxruntime (pip install onnx onnxruntime)") from None
    try:
        return ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 (onnxruntime's error types are not importable: an op it has no kernel for)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise LongrecError(f"{what} exports to ONNX but does not run in onnxruntime ({first})") from None


def _check(what: str, got: list[np.ndarray], want: list[Tensor], names: list[str]) -> float:
    worst = 0.0
    for name, g, w in zip(names, got, want, strict=True):
        if g.shape != tuple(w.shape):
            raise LongrecError(f"{what}: output {name} has shape {g.shape} in onnxruntime, {tuple(w.shape)} in torch")
        diff = float(np.abs(g.astype(np.float64) - w.double().numpy()).max()) if g.size else 0.0
        if not diff <= TOL:
            raise LongrecError(f"{what}: onnxruntime differs from torch on output {name} by {diff:.3g} (> {TOL}): "
                               "an op of this model does not export faithfully")
        worst = max(worst, diff)
    return worst


@torch.no_grad()
def export_onnx(run_dir: Path, out: Path, seed: int = 0) -> list[Path]:
    """Write encoder.onnx, step.onnx (causal models), item_table.npy and export.json (with the max abs
    differences to torch measured on random padded histories) into `out`; returns the paths written."""
    cfg, model, _ = load_run(run_dir, torch.device("cpu"))
    what = f"{run_dir} ({cfg.model.mixer})"
    if model.uses_time:
        raise CheckpointError(f"{what}: model.time=gap reads event times, which the ONNX export does not carry")
    if model.repeat is not None:
        raise CheckpointError(f"{what}: the repeat head's bonus is not part of the ONNX export (model.repeat=true)")
    gen = torch.Generator().manual_seed(seed)
    n = model.max_len
    enc = _Encoder(model).eval()
    items, mask = _windows(model.num_items, 2, min(n, 4), gen)
    data = _onnx_bytes(enc, (items, mask), ["items", "mask"], ["h"],
                       {"items": {0: "batch", 1: "length"}, "mask": {0: "batch", 1: "length"}, "h": {0: "batch"}},
                       f"{what}: the encoder")
    sess = _session(data, f"{what}: the encoder")
    diffs: dict[str, float] = {}
    for b, length in ((5, n), (3, max(1, n // 2)), (1, 1)):  # other batch sizes and lengths than the traced ones
        items, mask = _windows(model.num_items, b, length, gen)
        got = sess.run(["h"], {"items": items.numpy(), "mask": mask.numpy()})
        diffs["encoder"] = max(diffs.get("encoder", 0.0), _check(f"{what}: encoder", got, [enc(items, mask)], ["h"]))
    written = [out / "encoder.onnx", out / "item_table.npy", out / "export.json"]
    step_data = _export_step(model, what, gen, diffs) if model.causal else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "encoder.onnx", data)
    buf = io.BytesIO()
    np.save(buf, model.item_table().float().numpy())
    atomic_write(out / "item_table.npy", buf.getvalue())
    meta: dict[str, Any] = {
        "format": 1, "run": str(run_dir), "mixer": cfg.model.mixer, "opset": OPSET, "num_items": model.num_items,
        "max_len": n, "encoder": {"inputs": {"items": "[B,N] int64, left-padded, 0 = PAD", "mask": "[B,N] bool"},
                                  "outputs": {"h": "[B,D] float32 at the newest position"}},
        "scores": "h @ item_table.T: [B, num_items+1], column 0 is PAD", "max_abs_diff": diffs}
    if step_data is not None:
        atomic_write(out / "step.onnx", step_data[0])
        meta["step"] = {"inputs": ["items", *step_data[1]], "outputs": ["h", *[f"new.{k}" for k in step_data[1]]],
                        "state": "start from zeros (pos int64 [B]); the newest window's h equals step's h after "
                                 "stepping its events oldest first"}
        written.insert(1, out / "step.onnx")
    write_json(out / "export.json", meta)
    return written


def _export_step(model: SeqEncoder, what: str, gen: torch.Generator,
                 diffs: dict[str, float]) -> tuple[bytes, list[str]]:
    """step.onnx's bytes and its state names; checked against torch after a few random steps."""
    state = model.init_state(2, torch.device("cpu"))
    names = sorted(state)
    step = _Step(model, names).eval()
    items = torch.randint(1, model.num_items + 1, (2,), generator=gen)
    # every axis of a state may vary: batch, and the length of a cache that grows with each event (softmax's k, v)
    dyn = {"items": {0: "batch"}, "h": {0: "batch"}}
    dyn |= {f"{p}{k}": {i: f"{k}.{i}" for i in range(state[k].ndim)} for k in names for p in ("", "new.")}
    data = _onnx_bytes(step, (items, *(state[k] for k in names)), ["items", *names], ["h", *[f"new.{k}" for k in
                       names]], dyn, f"{what}: the step function")
    sess = _session(data, f"{what}: the step function")
    state = model.init_state(3, torch.device("cpu"))
    worst = 0.0
    for _ in range(4):  # from the empty state, then from states that hold events
        items = torch.randint(1, model.num_items + 1, (3,), generator=gen)
        want = step(items, *(state[k] for k in names))
        got = sess.run(None, {"items": items.numpy(), **{k: state[k].numpy() for k in names}})
        worst = max(worst, _check(f"{what}: step", got, list(want), ["h", *names]))
        state = dict(zip(names, want[1:], strict=True))
    diffs["step"] = worst
    return data, names
