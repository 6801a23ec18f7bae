"""TorchScript for the ops' Backend.SCRIPT loops: a scripted loop traces into one ONNX Loop, so an exported graph
keeps a dynamic length where a Python loop would be unrolled at the traced one."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def scripted(fn: F) -> F:
    """`fn` compiled by torch.jit.script on its first call, not at import (tens of ms each). torch 2.13 deprecates
    TorchScript in favour of torch.export, whose ONNX exporter needs onnxscript (not a dependency here); its
    DeprecationWarning is silenced for the compile."""
    compiled: Any = None

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        nonlocal compiled
        if compiled is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                compiled = torch.jit.script(fn)
        return compiled(*args)

    return call  # type: ignore[return-value]
