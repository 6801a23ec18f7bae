"""Rules a range cannot say: between config fields, and each mixer's own (the ranges, choices and relations of its
mixer_args). Checked with the ranges when a config is built (config.validate), before any data loads; the mixer
files keep their own checks for callers that build a mixer directly."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from longrec.config_ranges import NON_NEGATIVE, POSITIVE, UNIT_OPEN, Range, check_numbers
from longrec.errors import ConfigError
from longrec.mixers.gla import GATED_OP_BACKENDS
from longrec.mixers.linear import LINEAR_OP_BACKENDS
from longrec.mixers.linrec import NORMS
from longrec.mixers.retention import SCHEDULES
from longrec.ops.backend import Backend


@dataclass(frozen=True)
class Rule:
    """`field` (a dotted path from the root) breaks the rule unless `holds(cfg, args)`; the error reads
    "'field' (value) " + `says` formatted with cfg= the ExperimentConfig and a= the mixer's args dataclass."""

    field: str
    holds: Callable[[Any, Any], bool]
    says: str


def _splits(width: float, heads: int) -> bool:
    return width >= heads and width == int(width) and int(width) % heads == 0


CROSS_FIELD: list[Rule] = [
    Rule("model.dim", lambda c, a: c.model.dim % c.model.heads == 0,
         "must be divisible by 'model.heads' ({cfg.model.heads})"),
    Rule("data.temporal_valid", lambda c, a: c.data.temporal_valid < c.data.temporal_test,
         "must be below 'data.temporal_test' ({cfg.data.temporal_test})"),
    Rule("train.last_targets", lambda c, a: c.train.last_targets <= c.model.max_len,
         "must be at most 'model.max_len' ({cfg.model.max_len}): a window has no more positions (0 = every one)"),
    Rule("model.repeat_decays", lambda c, a: not c.model.repeat_decays or c.model.repeat,
         "needs model.repeat=true (they are the repeat head's terms)"),
]

_ARGS = "model.mixer_args"


def _names(backends: Sequence[Backend]) -> tuple[str, ...]:
    """The names a config may give: each backend's, and `naive` (the loop's old name) where the loop is one."""
    return tuple(b.value for b in backends) + (("naive",) if Backend.LOOP in backends else ())


_LINEAR_BACKENDS, _GATED_BACKENDS = _names(LINEAR_OP_BACKENDS), _names(GATED_OP_BACKENDS)

# each mixer's numeric fields that the default rule (finite, >= 0 unless the default is negative) does not cover
MIXER_RANGES: dict[str, dict[str, Range]] = {
    "softmax": {"attn_dropout": Range(hi=1, hi_open=True)},  # < 0: the model's dropout
    "efficient": {"chunk": POSITIVE},
    "linear": {"eps": POSITIVE},
    "linrec": {"eps": POSITIVE, "local": NON_NEGATIVE},
    "rela": {"kernel": POSITIVE, "rope_base": POSITIVE, "eps": POSITIVE},
    "lru": {"state_mult": POSITIVE, "r_min": UNIT_OPEN, "r_max": UNIT_OPEN, "max_phase": POSITIVE},
    "retention": {"exp_min": POSITIVE, "exp_max": POSITIVE, "eps": POSITIVE},
    "gla": {"expand_k": POSITIVE, "gate_rank": POSITIVE, "tau": POSITIVE, "eps": POSITIVE},
    "gated_delta": {"conv": NON_NEGATIVE, "a_max": POSITIVE, "dt_min": POSITIVE, "dt_max": POSITIVE,
                    "eps": POSITIVE},
}

# the same for the counted baselines' model.baseline_args
BASELINE_RANGES: dict[str, dict[str, Range]] = {
    "personal": {"decay": Range(0, 1, lo_open=True)},  # 1 = plain counts; 0 would weigh every event but the newest 0
}

MIXER_CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "linear": {"backend": _LINEAR_BACKENDS},
    "linrec": {"backend": _LINEAR_BACKENDS, "norm": NORMS},
    "lru": {"backend": ("auto", "scan", "loop", "script")},  # auto: the faster measured; script: export (lru.py)
    "retention": {"backend": _GATED_BACKENDS, "schedule": tuple(SCHEDULES)},
    "gla": {"backend": _GATED_BACKENDS},
    "gated_delta": {"backend": _GATED_BACKENDS},
}

MIXER_RULES: dict[str, list[Rule]] = {
    "lru": [Rule(f"{_ARGS}.r_min", lambda c, a: a.r_min <= a.r_max, f"must be at most '{_ARGS}.r_max' ({{a.r_max}})")],
    "retention": [Rule(f"{_ARGS}.exp_min", lambda c, a: a.exp_min <= a.exp_max,
                       f"must be at most '{_ARGS}.exp_max' ({{a.exp_max}})")],
    "gated_delta": [Rule(f"{_ARGS}.dt_min", lambda c, a: a.dt_min <= a.dt_max,
                         f"must be at most '{_ARGS}.dt_max' ({{a.dt_max}})")],
    "gla": [Rule(f"{_ARGS}.expand_k", lambda c, a: _splits(a.expand_k * c.model.dim, c.model.heads),
                 "times 'model.dim' ({cfg.model.dim}) must be a whole key width that splits evenly into "
                 "'model.heads' ({cfg.model.heads}) heads")],
    "rela": [Rule("model.dim", lambda c, a: c.model.dim % (2 * c.model.heads) == 0,
                  "must split into 'model.heads' ({cfg.model.heads}) heads of an even width (rela's rotary pairs)")],
}


def _value(cfg: Any, args: Any, path: str) -> Any:
    obj = args if path.startswith(f"{_ARGS}.") else cfg
    for part in path.removeprefix(f"{_ARGS}.").split("."):
        obj = getattr(obj, part)
    return obj


def _check(rules: list[Rule], cfg: Any, args: Any = None) -> None:
    for r in rules:
        if not r.holds(cfg, args):
            raise ConfigError(f"config: '{r.field}' ({_value(cfg, args, r.field)!r}) {r.says.format(cfg=cfg, a=args)}")


def check_cross_fields(cfg: Any) -> None:
    """The rules between the ExperimentConfig's own fields (CROSS_FIELD)."""
    _check(CROSS_FIELD, cfg)


def check_mixer_args(cfg: Any, mixer: str, args: Any) -> None:
    """The mixer's args dataclass (built from model.mixer_args): numbers in range, choices, relations."""
    ranges = {f"{_ARGS}.{k}": r for k, r in MIXER_RANGES.get(mixer, {}).items()}
    check_numbers(args, _ARGS, ranges)
    for name, choices in MIXER_CHOICES.get(mixer, {}).items():
        if (v := getattr(args, name)) not in choices:
            raise ConfigError(f"config: '{_ARGS}.{name}' must be one of {', '.join(choices)} for mixer {mixer}, "
                              f"got {v!r}")
    _check(MIXER_RULES.get(mixer, []), cfg, args)


def check_baseline_args(baseline: str, args: Any) -> None:
    """The baseline's args dataclass (built from model.baseline_args): numbers in range."""
    ranges = {f"model.baseline_args.{k}": r for k, r in BASELINE_RANGES.get(baseline, {}).items()}
    check_numbers(args, "model.baseline_args", ranges)
