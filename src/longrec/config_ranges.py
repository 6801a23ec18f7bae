"""The allowed range of every numeric config field, one table, checked when a config is built (config.validate)."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass
from typing import Any

from longrec.argtypes import MAX_THREADS
from longrec.errors import ConfigError

INF = math.inf


@dataclass(frozen=True)
class Range:
    """lo <= v <= hi, each end exclusive when flagged; every float must also be finite."""

    lo: float = -INF
    hi: float = INF
    lo_open: bool = False
    hi_open: bool = False

    def holds(self, v: float) -> bool:
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return math.isfinite(v) and above and below

    def __str__(self) -> str:
        if self.lo == -INF:
            return "a finite number" if self.hi == INF else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        if self.hi == INF:
            if self.lo == 0 and self.lo_open:
                return "positive"
            return f"{'>' if self.lo_open else '>='} {self.lo:g}"
        return f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
UNIT_OPEN = Range(0, 1, lo_open=True, hi_open=True)

# every int and float field of the config dataclasses (tests/test_config_ranges.py checks that none is missing)
RANGES: dict[str, Range] = {
    "seed": Range(0, 2**32 - 1),  # numpy's and torch's generators take non-negative seeds
    "data.kcore": NON_NEGATIVE,
    "data.temporal_valid": UNIT_OPEN,
    "data.temporal_test": UNIT_OPEN,
    "model.dim": POSITIVE,
    "model.layers": POSITIVE,
    "model.heads": POSITIVE,
    "model.ffn_mult": NON_NEGATIVE,
    "model.dropout": Range(0, 1, hi_open=True),
    "model.max_len": POSITIVE,
    "model.repeat_decays": UNIT_OPEN,  # γ in (0, 1): log γ < 0
    "train.negatives": POSITIVE,
    "train.gbce_t": Range(0, 1),
    "train.mask_prob": UNIT_OPEN,
    "train.cuts": NON_NEGATIVE,
    "train.bucket": NON_NEGATIVE,
    "train.batch_size": POSITIVE,
    "train.lr": Range(0, 1, lo_open=True),  # AdamW diverges long before lr = 1
    "train.weight_decay": NON_NEGATIVE,
    "train.grad_clip": NON_NEGATIVE,
    "train.epochs": POSITIVE,
    "train.patience": POSITIVE,  # 0 would stop before the first epoch
    "train.time_budget_min": NON_NEGATIVE,
    "train.threads": Range(0, MAX_THREADS),
    "train.last_targets": NON_NEGATIVE,
    "eval.ks": POSITIVE,
    "eval.negatives": POSITIVE,  # 0 negatives ranks every target first (NDCG 1.0)
    "eval.batch_size": POSITIVE,
    "eval.item_chunk": POSITIVE,
    "eval.window": NON_NEGATIVE,
}


def numeric_fields(cls: type, where: str = "") -> list[str]:
    """Dotted names of the int, float and tuple-of-number fields of dataclass `cls`, nested sections included."""
    out: list[str] = []
    for name, tp in typing.get_type_hints(cls).items():
        path = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            out += numeric_fields(tp, path)  # type: ignore[arg-type]
        elif tp in (int, float) or (typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float)):
            out.append(path)
    return out


def check_numbers(cfg: Any, where: str = "", ranges: dict[str, Range] | None = None) -> None:
    """Each numeric field of the dataclass instance `cfg` is in its range: `ranges`, keyed by the dotted path from
    the root (default RANGES). A field missing there (a mixer's or a baseline's own) must be finite, and not
    negative unless its default is (a negative default is a sentinel such as attn_dropout's "-1 = the model's")."""
    ranges = RANGES if ranges is None else ranges
    for f in dataclasses.fields(cfg):
        path = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_numbers(value, path, ranges)
            continue
        signed = isinstance(f.default, (int, float)) and f.default < 0
        rule = ranges.get(path) or (Range() if signed else NON_NEGATIVE)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not rule.holds(v):
                finite = "" if math.isfinite(v) or rule.lo == -INF else "finite and "
                raise ConfigError(f"config: '{path}' must be {finite}{rule}, got {v!r}")


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]{0,127}")


def check_name(name: str) -> None:
    """The run name is one safe path component: it becomes a directory under --runs-root."""
    if not _NAME.fullmatch(name) or name.endswith("."):
        raise ConfigError(f"config: 'name' must be 1-128 letters, digits or ._+=@- (starting with a letter or digit, "
                          f"no '/'), got {name!r}")
