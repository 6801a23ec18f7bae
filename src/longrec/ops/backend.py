"""Backend enum for ops: chosen explicitly; an unavailable backend raises, nothing falls back silently."""

from __future__ import annotations

from enum import Enum


class Backend(str, Enum):
    NAIVE = "naive"  # fp32 sequential loop: the oracle (for LRU also the faster CPU path at wide batches)
    CHUNKED = "chunked"  # the pure-torch parallel path (chunked linear attention, log-depth LRU scan); default
    FLA = "fla"  # flash-linear-attention Triton kernels (CUDA, extra longrec[gpu])
