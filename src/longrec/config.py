"""Experiment configuration: frozen dataclasses, YAML files with `base:` presets, and `a.b=v` overrides."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from longrec.config_ranges import check_name, check_numbers
from longrec.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: str = "ml-1m"  # a named dataset (longrec list datasets) or a path to a log file
    format: str = "auto"  # auto | pairs | lines | recbole | grouplens | csv | tsv | parquet
    user_col: str = "user"  # column names, for csv/tsv/parquet logs
    item_col: str = "item"
    time_col: str = ""  # empty: file order is the chronological order
    dedup: bool = False  # drop repeated (user, item) pairs, keeping the first
    kcore: int = 0  # iterative k-core on users and items; 0 = off (the stored datasets are already filtered)
    split: str = "loo"  # loo (leave-one-out) | temporal (global time cut)
    temporal_valid: float = 0.8  # quantiles of all timestamps where valid and test periods start
    temporal_test: float = 0.9
    mmap: bool = False  # large logs: stream csv/tsv/parquet in bounded memory, cache as .npy, memory-map the corpus


@dataclass(frozen=True)
class ModelConfig:
    mixer: str = "softmax"  # token mixer from the registry (longrec list mixers)
    mixer_args: dict[str, Any] = field(default_factory=dict)  # validated against the mixer's config dataclass
    dim: int = 64
    layers: int = 2
    heads: int = 1
    ffn_mult: int = 4  # FFN hidden = ffn_mult * dim; 0 = no FFN sub-layer
    dropout: float = 0.2
    max_len: int = 200  # longest history window fed to the model
    pos: str = "learned"  # learned | none: absolute positions counted from the first real event
    time: str = "none"  # none | gap: add an embedding of the log2-bucketed gap since the previous event (needs times)
    repeat: bool = False  # the repeat head: a learned bonus for items already in the window (model/repeat.py)
    repeat_decays: tuple[float, ...] = ()  # repeat head: also score log decayed counts, one per γ (e.g. [0.9, 0.97])
    norm_first: bool = True  # pre-LN blocks (False: post-LN, as LRURec)
    tie_output: bool = True  # score with the input item embeddings; False: a separate output table (gSASRec)
    # a non-neural baseline (longrec.baselines: popularity | personal | repeat_last) instead of the encoder: it is
    # counted, not trained, and reads the newest max_len events; "" = the neural encoder
    baseline: str = ""
    baseline_args: dict[str, Any] = field(default_factory=dict)  # validated against the baseline's config


@dataclass(frozen=True)
class TrainConfig:
    objective: str = "next_item"  # longrec.objectives: next_item | last_item | masked_item
    loss: str = "ce"  # longrec.train.losses: ce (full softmax) | bce (SASRec) | sampled (+ logQ) | gbce (gSASRec)
    negatives: int = 1  # bce: negatives per position; sampled, gbce: negatives per sequence, shared by its positions
    sampler: str = "uniform"  # sampled: uniform | popularity | in_batch (gbce is calibrated for uniform only)
    gbce_t: float = 0.75  # gbce calibration t in [0, 1]: 0 = plain BCE, 1 = fully calibrated (beta = alpha)
    mask_prob: float = 0.2  # masked_item: share of positions masked
    cuts: int = 0  # last_item: random prefixes per user per epoch; 0 = every prefix
    window: str = "last"  # last: the newest max_len+1 events | random: a random window each epoch
    bucket: int = 0  # batch rows of like length: sort pools of this many batches by window length; 0 = random batches
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    decay_embeddings: bool = False  # weight_decay on the item and position tables too (biases and norms never)
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    epochs: int = 200
    patience: int = 10  # epochs without a better validation metric before stopping
    time_budget_min: float = 0.0  # stop after this many minutes of training; 0 = none
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    bf16: bool = False  # autocast to bfloat16 on CUDA
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch default
    last_targets: int = 0  # next_item: train on the newest K positions of each window only; 0 = every position
    init: str = ""  # start from these weights: a run directory (its best.safetensors) or a .safetensors file


@dataclass(frozen=True)
class EvalConfig:
    ks: tuple[int, ...] = (1, 5, 10, 20, 50)
    mask_history: bool = True  # exclude the user's earlier items from the ranking
    sampled: str = "none"  # none (full ranking) | uniform | popularity
    negatives: int = 100  # sampled ranking: negatives per user
    batch_size: int = 256
    item_chunk: int = 65536  # full ranking scores at most this many items at a time (memory O(batch * chunk))
    window: int = 0  # the newest N events are the input at evaluation; 0 = model.max_len (bench window-sweep)
    metric: str = "ndcg@10"  # validation metric for model selection and early stopping
    test: bool = True  # evaluate the best checkpoint on the test split at the end; false: validation only (tune trials)


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "sasrec-ml-1m"
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


T = TypeVar("T")


def from_dict(cls: type[T], raw: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a nested dict; unknown keys and wrong types are ConfigErrors."""
    if not isinstance(raw, dict):
        raise ConfigError(f"config: '{where or 'root'}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"config: unknown key '{path}' (valid: {', '.join(names)})")
        kwargs[key] = _coerce(hints[key], value, path)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config: '{path}' must be a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(_coerce(inner, v, path) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config: '{path}' must be a mapping, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp in (int, float, str, bool) and (type(value) is not tp):
        raise ConfigError(f"config: '{path}' must be {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain YAML/JSON-ready data (tuples become lists)."""
    return _plain(asdict(cfg))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return [_plain(v) for v in x] if isinstance(x, (list, tuple)) else x


def preset_names() -> list[str]:
    """Names of the model presets shipped with the package."""
    files = resources.files("longrec.presets").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the top level must be a mapping")
    return raw


def _load_raw(spec: str, depth: int = 0) -> dict[str, Any]:
    """Raw nested dict of a preset name or YAML path, with its `base:` chain merged underneath."""
    if depth > 8:
        raise ConfigError(f"config: 'base' chain too deep at {spec}")
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config: no such file {spec}")
        raw = _read_yaml(path.read_text(), str(path))
    elif spec in preset_names():
        text = resources.files("longrec.presets").joinpath(f"{spec}.yaml").read_text()
        raw = _read_yaml(text, f"preset {spec}")
    else:
        known = ", ".join(preset_names())
        raise ConfigError(f"config: '{spec}' is neither a YAML file nor a preset (presets: {known})")
    base = raw.pop("base", None)
    if base and path.suffix in (".yaml", ".yml") and Path(str(base)).suffix in (".yaml", ".yml"):
        base = path.parent / str(base)  # a relative base file is found beside the file that names it
    return _merge(_load_raw(str(base), depth + 1), raw) if base else raw


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of b over a; a section that names another mixer drops the old mixer's mixer_args."""
    out = dict(a)
    if "mixer" in b and b["mixer"] != a.get("mixer"):
        out.pop("mixer_args", None)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """`a.b=1` -> {"a": {"b": 1}}; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"config: override '{text}' must look like key.sub=value")
    key, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = parsed
    return out


def load_config(spec: str, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Resolve a preset name or YAML path plus overrides into a validated ExperimentConfig."""
    raw = _load_raw(spec)
    try:  # keys and types of the file and its base chain, checked before overrides so the error names the file
        from_dict(ExperimentConfig, raw)
    except ConfigError as e:
        raise ConfigError(f"{spec}: {str(e).removeprefix('config: ')}") from None
    for o in overrides:
        raw = _merge(raw, parse_override(o))
    return config_from_dict(raw)


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a saved (resolved) config."""
    cfg = from_dict(ExperimentConfig, raw)
    validate(cfg)
    return cfg


def run_name(cfg: ExperimentConfig) -> str:
    """The default run directory's name: the config's name and its dataset (a log file by its stem), so that one
    preset trained on two datasets gets two directories; a name that already holds the dataset is kept."""
    data = Path(cfg.data.name).name
    for ext in (".gz", ".txt", ".csv", ".tsv", ".inter", ".dat", ".parquet"):
        data = data.removesuffix(ext)
    data = re.sub(r"[^A-Za-z0-9._+=@-]+", "_", data).strip("._") or "data"
    return cfg.name if data in cfg.name.split("-") or f"-{data}-" in f"-{cfg.name}-" else f"{cfg.name}-{data}"


_CHOICES = {
    "data.split": ("loo", "temporal"),
    "model.pos": ("learned", "none"),
    "model.time": ("none", "gap"),
    "train.window": ("last", "random"),
    "eval.sampled": ("none", "uniform", "popularity"),
}


def validate(cfg: ExperimentConfig) -> None:
    """Check enumerations and ranges, the rules between fields, the objective's and the loss's rules, and the
    mixer's (or baseline's) own args; the leakage rule is checked where the model is built
    (longrec.objectives.build_model)."""
    for path, choices in _CHOICES.items():
        section, key = path.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"config: '{path}' must be one of {', '.join(choices)}, got {value!r}")
    check_numbers(cfg)  # every numeric field against its range (config_ranges.RANGES), NaN and inf refused
    check_name(cfg.name)
    # torch is imported only once the plain fields are checked
    from longrec.config_rules import check_baseline_args, check_cross_fields, check_mixer_args
    from longrec.objectives import check_objective
    from longrec.train.losses import check_loss

    check_cross_fields(cfg)  # dim by heads, the temporal cuts' order, last_targets, repeat_decays
    check_objective(cfg)  # the objective's and the loss's names and rules, each owned by its registry entry
    check_loss(cfg)
    if cfg.model.baseline:
        from longrec.baselines import BASELINES, baseline_config

        BASELINES.get(cfg.model.baseline)  # an unknown name lists the known ones
        if args := baseline_config(cfg.model.baseline, cfg.model.baseline_args):
            check_baseline_args(cfg.model.baseline, args)
    else:
        from longrec.mixers import MIXERS
        from longrec.mixers.base import mixer_config

        MIXERS.pick(cfg.model.mixer, "model.mixer")  # an unknown name lists the known ones
        if (args := mixer_config(cfg.model.mixer, cfg.model.mixer_args)) is not None:  # its fields and relations
            check_mixer_args(cfg, cfg.model.mixer, args)
    name, _, k = cfg.eval.metric.partition("@")
    if name not in ("ndcg", "recall", "mrr") or not k.isdigit() or int(k) not in cfg.eval.ks:
        raise ConfigError(f"config: 'eval.metric' must be ndcg|recall|mrr@k with k in eval.ks, got {cfg.eval.metric!r}")
