"""Backend enum for ops, each named for what runs: chosen explicitly; an unavailable backend raises, nothing falls
back silently. An op implements a subset (linear attention: loop, chunked, fla; gla and gated delta: loop,
chunked, script; the LRU recurrence: loop, scan, script) and raises NotImplementedError for the others."""

from __future__ import annotations

from enum import Enum


class Backend(str, Enum):
    LOOP = "loop"  # sequential fp32 loop over positions (the ops' naive.py): the tests' oracle, and for the LRU on
    #                CPU at wide batches also the faster path, which the lru mixer's `auto` picks in production
    CHUNKED = "chunked"  # chunk-parallel pure torch (linear attention, gla, gated delta); their default
    SCAN = "scan"  # log-depth associative scan in pure torch (the LRU recurrence); its default
    SCRIPT = "script"  # the sequential loop as a TorchScript function (lru, gla, gated delta): traced by the ONNX
    #                    exporter it stays one Loop over positions, so the graph keeps a dynamic length (longrec export)
    FLA = "fla"  # flash-linear-attention Triton kernels (linear attention; CUDA, extra longrec[gpu])

    @classmethod
    def _missing_(cls, value: object) -> Backend | None:
        return cls.LOOP if value == "naive" else None  # the loop's old name, as saved configs may still hold it
