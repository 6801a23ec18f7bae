"""A search space: a YAML file mapping dotted config keys to distributions, checked against the config it tunes."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from longrec.config import ExperimentConfig, load_config
from longrec.errors import ConfigError

if typing.TYPE_CHECKING:
    import optuna

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Dist:
    """One key's distribution: uniform | log_uniform [lo, hi] (floats), int [lo, hi] or [lo, hi, step] (ends
    included), choice [v, ...]."""

    kind: str
    values: tuple[Scalar, ...]

    def suggest(self, trial: optuna.Trial, key: str) -> Any:
        return SUGGEST[self.kind](trial, key, self.values)

    def probes(self) -> tuple[Scalar, ...]:
        """The values a config must accept for every draw to be legal: the ends of a range (a range's legal values
        are an interval, config_ranges.Range), or every choice."""
        return self.values if self.kind == "choice" else self.values[:2]

    def as_yaml(self) -> dict[str, list[Scalar]]:
        return {self.kind: list(self.values)}


SUGGEST: dict[str, Callable[[Any, str, tuple[Any, ...]], Any]] = {
    "uniform": lambda t, key, v: t.suggest_float(key, v[0], v[1]),
    "log_uniform": lambda t, key, v: t.suggest_float(key, v[0], v[1], log=True),
    "int": lambda t, key, v: t.suggest_int(key, v[0], v[1], step=v[2] if len(v) > 2 else 1),
    "choice": lambda t, key, v: t.suggest_categorical(key, list(v)),
}
# keys that would make trials incomparable (another dataset, metric or seed) or that tune sets itself
FIXED = ("name", "seed", "data.", "eval.")


def field_type(key: str) -> Any:
    """The config field's type for a dotted key (a key under model.mixer_args/baseline_args: Any); None if unknown."""
    cls: Any = ExperimentConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return None
        cls = hints[part]
        if typing.get_origin(cls) is dict and i == len(parts) - 2:  # one key inside a mapping field (mixer_args)
            return Any
    return None if dataclasses.is_dataclass(cls) or typing.get_origin(cls) is dict else cls


def _number(v: Any, integer: bool) -> float | int | None:
    """v as a number of the range's type (PyYAML reads 1e-4, without a dot, as a string), or None."""
    if isinstance(v, bool):
        return None
    if integer:
        return v if isinstance(v, int) else None
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _coerce_choice(v: Any, tp: Any) -> Any:
    return float(v) if tp is float and _number(v, False) is not None else v


def parse_dist(key: str, spec: Any, tp: Any) -> Dist:
    """One {kind: [values]} entry; raises ConfigError without the file name (the caller adds it)."""
    if not (isinstance(spec, dict) and len(spec) == 1):
        raise ConfigError(f"expected one distribution such as {{uniform: [0.1, 0.5]}}, got {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in SUGGEST:
        raise ConfigError(f"unknown distribution {kind!r} (known: {', '.join(SUGGEST)})")
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{kind} takes a list, got {values!r}")
    if kind == "choice":
        if not all(isinstance(v, Scalar) for v in values):  # type: ignore[arg-type, misc]
            raise ConfigError(f"choice values must be numbers, strings or booleans, got {values!r}")
        choices = tuple(_coerce_choice(v, tp) for v in values)
        if len(set(choices)) < len(choices):
            raise ConfigError(f"choice lists a value twice: {values!r}")
        return Dist(kind, choices)
    integer = kind == "int"
    nums = [_number(v, integer) for v in values]
    shape = "[lo, hi] or [lo, hi, step] of integers" if integer else "[lo, hi] of numbers"
    if len(nums) not in ((2, 3) if integer else (2,)) or any(n is None for n in nums):
        raise ConfigError(f"{kind} takes {shape}, got {values!r}")
    lo, hi = nums[0], nums[1]
    assert lo is not None and hi is not None
    if not lo < hi:
        raise ConfigError(f"{kind}: lo must be below hi, got {values!r}")
    if kind == "log_uniform" and lo <= 0:
        raise ConfigError(f"log_uniform needs lo > 0, got {values!r}")
    if integer and len(nums) == 3 and not (isinstance(nums[2], int) and 0 < nums[2] <= hi - lo):
        raise ConfigError(f"int: step must be a positive integer up to hi - lo, got {values!r}")
    return Dist(kind, tuple(n for n in nums if n is not None))


def override(key: str, value: Any) -> str:
    """A `key=value` config override whose value reads back as `value` (JSON is YAML)."""
    return f"{key}={json.dumps(value)}"


def load_space(path: Path, config: str, overrides: Sequence[str] = ()) -> dict[str, Dist]:
    """Parse and check a space file against CONFIG + overrides: each key a tunable config field, each distribution
    well formed, and every end of a range and every choice a legal value of the config (config_ranges and the
    config's own rules, as `longrec train` checks them). Errors name the file and the key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the space file ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: a space file maps dotted config keys to distributions, e.g. "
                          "'train.lr: {log_uniform: [1e-4, 1e-2]}'")
    space: dict[str, Dist] = {}
    for key, spec in raw.items():
        key = str(key)
        tp = field_type(key)
        if tp is None:
            raise ConfigError(f"{path}: {key}: unknown config key (give a dotted field such as train.lr or "
                              "model.mixer_args.attn_dropout)")
        if key.startswith(FIXED) or key in FIXED:
            raise ConfigError(f"{path}: {key}: not tunable (trials are compared on one dataset, metric and seed "
                              "rule; set it in the config)")
        try:
            space[key] = parse_dist(key, spec, tp)
        except ConfigError as e:
            raise ConfigError(f"{path}: {key}: {e}") from None
        for v in space[key].probes():
            try:
                load_config(config, [*overrides, override(key, v)])
            except ConfigError as e:
                raise ConfigError(f"{path}: {key}: {v!r} is not a legal value "
                                  f"({str(e).removeprefix('config: ')})") from None
    return space
