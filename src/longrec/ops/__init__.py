"""Pure tensor ops with (o, final_state) = op(..., initial_state, output_final_state); each has a naive oracle."""

from longrec.ops.backend import Backend

__all__ = ["Backend"]
