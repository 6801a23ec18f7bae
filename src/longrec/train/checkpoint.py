"""Checkpoints without pickle: safetensors for tensors, JSON for everything else; every write is atomic."""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from longrec.errors import CheckpointError


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from None


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    atomic_write(path, st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))


def load_tensors(path: Path) -> dict[str, Tensor]:
    try:
        return st_load(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or not a safetensors file ({e})") from None


def load_model_weights(model: nn.Module, path: Path) -> None:
    """Load weights, naming the file when keys or shapes do not match the model."""
    tensors = load_tensors(path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise CheckpointError(f"{path}: weights do not fit the configured model ({first})") from None


def save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    """Tensors of the optimizer state to safetensors; param groups and scalars to a JSON sidecar."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            (tensors if isinstance(v, Tensor) else scalars)[f"{pid}.{k}"] = v
    save_tensors(path, tensors)
    write_json(path.with_suffix(".json"), {"param_groups": sd["param_groups"], "scalars": scalars})


def load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    """Load what save_optimizer wrote; every tensor must be finite and shaped like its parameter (or a scalar),
    so that a bad file fails here, naming it, and not mid-epoch."""
    from longrec.train.runfiles import read_run_json  # runfiles reads through this module's read_json

    meta = read_run_json(path.with_suffix(".json"), "optim.json")  # any name: save_optimizer writes it
    tensors = load_tensors(path)
    params = [p for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = defaultdict(dict)
    try:  # a JSON sidecar of the wrong shape is as corrupt as a truncated file
        for key, v in tensors.items():
            pid, _, name = key.partition(".")
            _check_state_tensor(path, key, v, params[int(pid)] if 0 <= int(pid) < len(params) else None)
            state[int(pid)][name] = v
        for key, v in meta["scalars"].items():
            pid, _, name = key.partition(".")
            state[int(pid)][name] = v
        opt.load_state_dict({"state": dict(state), "param_groups": meta["param_groups"]})
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f"{path}: optimizer state does not fit the model ({e})") from None


def _check_state_tensor(path: Path, key: str, v: Tensor, param: Tensor | None) -> None:
    if param is None:
        raise CheckpointError(f"{path}: tensor {key}: the model has no parameter {key.partition('.')[0]}")
    if v.ndim and v.shape != param.shape:
        raise CheckpointError(f"{path}: tensor {key} has shape {list(v.shape)}, its parameter {list(param.shape)}")
    if v.is_floating_point() and not bool(torch.isfinite(v).all()):
        raise CheckpointError(f"{path}: tensor {key} holds NaN or infinite values")
