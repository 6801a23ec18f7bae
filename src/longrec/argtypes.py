"""argparse `type=` validators: a bad option value is the parser's own one-line error and exit code 2."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_THREADS = 256  # train.threads and --threads: torch asked for far more (100000) crashes the process


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer option in [lo, hi] (no upper end when hi is None)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"must be {'>= ' + str(lo) if hi is None else f'in [{lo}, {hi}]'}, "
                                             f"got {v}")
        return v

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" message
    return parse


def float_in(lo: float, hi: float = math.inf, lo_open: bool = False) -> Callable[[str], float]:
    """A finite number in [lo, hi] ((lo, hi] when lo_open)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
            where = f"{'>' if lo_open else '>='} {lo:g}" if hi == math.inf else f"in [{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number {where}, got {text!r}")
        return v

    parse.__name__ = "float"
    return parse


positive_int = int_in(1)
non_negative_int = int_in(0)
port = int_in(1, 65535)
thread_count = int_in(0, MAX_THREADS)
positive_float = float_in(0.0, lo_open=True)
non_negative_float = float_in(0.0)
fraction = float_in(0.0, 1.0)
