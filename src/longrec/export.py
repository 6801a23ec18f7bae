"""Export a run's encoder to ONNX: the window encoder (items, mask -> h at the newest position) and, for causal
models, the step function (state in -> h, state out); each is checked against torch with onnxruntime.

Scores are h @ item_table.T (item_table.npy, row 0 PAD): the encoder returns h, not [B, I] scores, so that a
caller can score the catalogue in chunks or with an ANN index, as longrec's own scorer does. The time channel adds
a times input to both graphs, the repeat head the encoder outputs repeat_item and repeat_bias. The graphs are
traced with the TorchScript exporter (torch's dynamo exporter needs onnxscript), from a twin of the model built
with its mixer's `export_args`: the recurrent ops' script backend, whose loop stays one ONNX Loop over positions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from longrec.config import ExperimentConfig
from longrec.errors import LongrecError
from longrec.model.encoder import SeqEncoder
from longrec.objectives import build_model
from longrec.train.checkpoint import atomic_write, write_json
from longrec.train.run import load_run

OPSET = 17
TOL = 1e-4  # max abs difference allowed between onnxruntime and torch
T0 = 1.79e9  # the random histories' first timestamp (seconds, 2026): float64 gaps must survive its scale

ENCODER_INPUTS = {"items": "[B,N] int64, left-padded, 0 = PAD", "mask": "[B,N] bool",
                  "times": "[B,N] float64 seconds (model.time=gap); pads are ignored"}
ENCODER_OUTPUTS = {"h": "[B,D] float32 at the newest position",
                   "repeat_item": "[B,N] int64: the window items that get the repeat head's bonus, 0 = none",
                   "repeat_bias": "[B,N] float32: their bonus"}
REPEAT_SCORES = ", plus repeat_bias[b, j] added to column repeat_item[b, j] wherever repeat_item[b, j] > 0"
STEP_REPEAT = "; step's h has no repeat bonus (it needs the window: score with encoder.onnx)"


class _Encoder(nn.Module):
    """The window encoder: items [B,N] int64 left-padded, mask [B,N] bool (and times [B,N] float64 seconds with the
    time channel) -> h [B,D] at the newest position (and with a repeat head its bonus for the window's items:
    repeat_item [B,N] int64, 0 = none, and repeat_bias [B,N])."""

    def __init__(self, model: SeqEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, items: Tensor, mask: Tensor, *times: Tensor) -> tuple[Tensor, ...]:
        t = times[0] if times else None
        h = self.model(items, mask, t)[:, -1]  # (B, D)
        if self.model.repeat is None:
            return (h,)
        slots = self.model.repeat.last(items, mask, h, t)  # item, bias [B, 1, N]
        return h, slots.item[:, 0], slots.bias[:, 0]


class _Step(nn.Module):
    """items [B] int64 (and times [B] float64 with the time channel), state tensors in `names` order -> (h [B,D],
    new state tensors in the same order)."""

    def __init__(self, model: SeqEncoder, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, items: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        times, state = (rest[0], rest[1:]) if self.model.uses_time else (None, rest)
        h, new = self.model.step(dict(zip(self.names, state, strict=True)), items, times)
        return (h, *(new[k] for k in self.names))


def _windows(model: SeqEncoder, batch: int, n: int, gen: torch.Generator) -> tuple[Tensor, ...]:
    """Random left-padded histories: items [B,n], mask [B,n] with lengths 1..n (one row full, one of length 1), and
    times [B,n] (increasing seconds, gaps over every bucket) when the model reads them. Half the items come from a
    handful, so that a repeat head sees repeats."""
    lengths = torch.randint(1, n + 1, (batch,), generator=gen)
    lengths[0], lengths[-1] = n, 1
    mask = torch.arange(n)[None, :] >= (n - lengths)[:, None]
    few = torch.randint(1, min(model.num_items, 4) + 1, (batch, n), generator=gen)
    items = torch.where(torch.rand(batch, n, generator=gen) < 0.5, few,
                        torch.randint(1, model.num_items + 1, (batch, n), generator=gen)) * mask
    if not model.uses_time:
        return items, mask
    return items, mask, T0 + _gaps((batch, n), gen).cumsum(1)


def _gaps(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """float64 whole seconds from 0 to ~2^30: every gap bucket of the time channel."""
    return (2.0 ** (30 * torch.rand(shape, generator=gen, dtype=torch.float64))).floor() - 1


def _export_twin(cfg: ExperimentConfig, model: SeqEncoder) -> SeqEncoder:
    """The model as it is traced: rebuilt with its mixer's `export_args` (ops whose Python loops over chunks or scan
    levels would freeze the traced length run their TorchScript loop instead), holding the same weights."""
    args = getattr(type(model.layers[0].mixer), "export_args", {}) if model.layers else {}
    if not args:
        return model
    mcfg = dataclasses.replace(cfg.model, mixer_args={**cfg.model.mixer_args, **args})
    twin = build_model(model.num_items, mcfg, cfg.train)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Warnings silenced, and the process's stdout and stderr (file descriptors 1 and 2): the TorchScript exporter
    writes from C++ there, shape-inference warnings and on failure its whole IR graph (its ONNX log, which torch
    2.13 leaves switched on); the one error that matters is raised after they are restored."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


def _onnx_bytes(module: nn.Module, args: tuple[Tensor, ...], inputs: list[str], outputs: list[str],
                dynamic: dict[str, dict[int, str]], what: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with _quiet():
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


def export_onnx(run_dir: Path, out: Path, seed: int = 0) -> list[Path]:
    """Write encoder.onnx, step.onnx (causal models), item_table.npy and export.json (with the max abs
    differences to torch measured on random padded histories) for a run's best model into `out`; returns the paths
    written. Nothing is written unless every graph exports and matches torch."""
    cfg, model, _ = load_run(run_dir, torch.device("cpu"))
    return export_model(cfg, model, out, f"{run_dir} ({cfg.model.mixer})", seed, {"run": str(run_dir)})


@torch.no_grad()
def export_model(cfg: ExperimentConfig, model: SeqEncoder, out: Path, what: str, seed: int = 0,
                 meta: dict[str, Any] | None = None) -> list[Path]:
    """export_onnx for a model in memory (eval mode, CPU); `what` names it in errors, `meta` joins export.json."""
    twin = _export_twin(cfg, model)
    gen = torch.Generator().manual_seed(seed)
    n = model.max_len
    ins = ["items", "mask", *(["times"] if model.uses_time else [])]
    outs = ["h", *(["repeat_item", "repeat_bias"] if model.repeat is not None else [])]
    dyn = {k: {0: "batch", 1: "length"} for k in (*ins, *outs[1:])} | {"h": {0: "batch"}}
    data = _onnx_bytes(_Encoder(twin).eval(), _windows(model, 2, min(n, 4), gen), ins, outs, dyn,
                       f"{what}: the encoder")
    sess = _session(data, f"{what}: the encoder")
    enc = _Encoder(model).eval()  # the reference: the model as trained, with its own backends
    diffs: dict[str, float] = {}
    for b, length in ((5, n), (3, max(1, n // 2)), (1, 1)):  # other batch sizes and lengths than the traced ones
        x = _windows(model, b, length, gen)
        got = sess.run(outs, {k: t.numpy() for k, t in zip(ins, x, strict=True)})
        diffs["encoder"] = max(diffs.get("encoder", 0.0), _check(f"{what}: encoder", got, list(enc(*x)), outs))
    written = [out / "encoder.onnx", out / "item_table.npy", out / "export.json"]
    step_data = _export_step(model, twin, what, gen, diffs) if model.causal else None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "encoder.onnx", data)
    buf = io.BytesIO()
    np.save(buf, model.item_table().float().numpy())
    atomic_write(out / "item_table.npy", buf.getvalue())
    repeat = model.repeat is not None
    info: dict[str, Any] = {
        "format": 1, **(meta or {}), "mixer": cfg.model.mixer, "opset": OPSET, "num_items": model.num_items,
        "max_len": n, "encoder": {"inputs": {k: ENCODER_INPUTS[k] for k in ins},
                                  "outputs": {k: ENCODER_OUTPUTS[k] for k in outs}},
        "scores": "h @ item_table.T: [B, num_items+1], column 0 is PAD" + REPEAT_SCORES * repeat,
        "max_abs_diff": diffs}
    if step_data is not None:
        atomic_write(out / "step.onnx", step_data[0])
        info["step"] = {"inputs": ["items", *(["times"] if model.uses_time else []), *step_data[1]],
                        "outputs": ["h", *[f"new.{k}" for k in step_data[1]]],
                        "state": "start from zeros (pos int64 [B]; t float64 [B] NaN with the time channel); the "
                                 "newest window's h equals step's h after stepping its events oldest first"
                                 + STEP_REPEAT * repeat}
        written.insert(1, out / "step.onnx")
    write_json(out / "export.json", info)
    return written


def _export_step(model: SeqEncoder, twin: SeqEncoder, what: str, gen: torch.Generator,
                 diffs: dict[str, float]) -> tuple[bytes, list[str]]:
    """step.onnx's bytes and its state names; checked against torch after a few random steps."""
    state = model.init_state(2, torch.device("cpu"))
    names = sorted(state)
    ins = ["items", *(["times"] if model.uses_time else [])]
    outs = ["h", *[f"new.{k}" for k in names]]
    # every axis of a state may vary: batch, and the length of a cache that grows with each event (softmax's k, v)
    dyn = {k: {0: "batch"} for k in (*ins, "h")}
    dyn |= {f"{p}{k}": {i: f"{k}.{i}" for i in range(state[k].ndim)} for k in names for p in ("", "new.")}
    args = _step_inputs(model, 2, gen, state[names[0]].new_zeros(2, dtype=torch.float64))
    data = _onnx_bytes(_Step(twin, names).eval(), (*args, *(state[k] for k in names)), [*ins, *names], outs, dyn,
                       f"{what}: the step function")
    sess = _session(data, f"{what}: the step function")
    step = _Step(model, names).eval()  # the reference: the model as trained
    state = model.init_state(3, torch.device("cpu"))
    clock = torch.full((3,), T0, dtype=torch.float64)
    worst = 0.0
    for _ in range(4):  # from the empty state, then from states that hold events
        args = _step_inputs(model, 3, gen, clock)
        clock = args[-1]
        want = step(*args, *(state[k] for k in names))
        got = sess.run(None, {**{k: t.numpy() for k, t in zip(ins, args, strict=True)},
                              **{k: state[k].numpy() for k in names}})
        worst = max(worst, _check(f"{what}: step", got, list(want), ["h", *names]))
        state = dict(zip(names, want[1:], strict=True))
    diffs["step"] = worst
    return data, names


def _step_inputs(model: SeqEncoder, batch: int, gen: torch.Generator, clock: Tensor) -> tuple[Tensor, ...]:
    """One random event per row: items [B] (and times [B], `clock` plus a random gap, with the time channel)."""
    items = torch.randint(1, model.num_items + 1, (batch,), generator=gen)
    return (items, clock + _gaps((batch,), gen)) if model.uses_time else (items,)
