"""Complex diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t (the LRU state update), on real/imag pairs.

Complex numbers travel as a trailing axis of size 2 (real, imag), the `torch.view_as_real` layout, so inputs,
outputs and states are plain float tensors (MixerState, safetensors). A position with a_t = 1, b_t = 0 leaves the
state unchanged: that is how callers make pads the identity.
"""

from __future__ import annotations

from torch import Tensor

from longrec.ops.backend import Backend
from longrec.ops.lru.naive import naive_lru_scan
from longrec.ops.lru.scan import scan_lru
from longrec.ops.lru.scripted import scripted_lru_scan


def lru_scan(
    a: Tensor,
    b: Tensor,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    backend: Backend = Backend.SCAN,
) -> tuple[Tensor, Tensor | None]:
    """a, b [B,N,P,2] (real, imag), initial_state [B,P,2] -> (h [B,N,P,2], final_state [B,P,2] or None).

    Backend.SCAN: the log-depth associative scan (scan.py); Backend.LOOP: the sequential loop (naive.py, the oracle,
    and the faster path on CPU at wide batches); Backend.SCRIPT: the loop in TorchScript on real pairs (scripted.py,
    for ONNX export). Other backends raise. Computed in at least float32, returned in a's
    dtype.
    """
    if a.shape[1] == 0:  # an empty window: no output, the state passes through
        final = initial_state if initial_state is not None else a.new_zeros(a.shape[0], *a.shape[2:])
        return b.clone(), (final if output_final_state else None)
    if backend is Backend.LOOP:
        return naive_lru_scan(a, b, initial_state, output_final_state)
    if backend is Backend.SCAN:
        return scan_lru(a, b, initial_state, output_final_state)
    if backend is Backend.SCRIPT:
        return scripted_lru_scan(a, b, initial_state, output_final_state)
    raise NotImplementedError(f"backend {backend.value} is not implemented for lru_scan")


__all__ = ["lru_scan"]
