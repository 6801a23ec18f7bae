"""Training objectives by name (train.objective), and the encoder an experiment's objective asks for.

Adding an objective is one file holding an `Objective` subclass plus one `OBJECTIVES.register` call."""

from __future__ import annotations

from longrec.config import ExperimentConfig, ModelConfig, TrainConfig
from longrec.errors import ConfigError
from longrec.model.encoder import SeqEncoder
from longrec.objectives.base import OBJECTIVES, Objective
from longrec.objectives.last_item import LastItem
from longrec.objectives.masked_item import MaskedItem
from longrec.objectives.next_item import NextItem

OBJECTIVES.register("next_item", NextItem())  # the default first: a config error lists them in this order
OBJECTIVES.register("last_item", LastItem())
OBJECTIVES.register("masked_item", MaskedItem())

__all__ = ["OBJECTIVES", "Objective", "build_model", "check_objective", "get_objective", "mask_token"]


def get_objective(train: TrainConfig) -> Objective:
    """The objective of train.objective; an unknown name is a ConfigError listing the known ones."""
    return OBJECTIVES.pick(train.objective, "train.objective").obj


def check_objective(cfg: ExperimentConfig) -> None:
    """The config rules of train.objective: its name, its own rules, and the options that need a target at
    every position (the leakage rule needs the built encoder: build_model checks it)."""
    name = cfg.train.objective
    objective = get_objective(cfg.train)
    objective.check(cfg)
    if objective.per_position:
        return
    dense = "|".join(OBJECTIVES.listed(lambda o: o.per_position))
    for option, used in (("train.last_targets", cfg.train.last_targets > 0), ("model.repeat=true", cfg.model.repeat)):
        if used:
            raise ConfigError(f"config: {option} needs train.objective={dense} (a target at every position), "
                              f"got {name!r}")


def build_model(num_items: int, model: ModelConfig, train: TrainConfig) -> SeqEncoder:
    """The encoder for an experiment: with the objective's extra tokens, and refused where the objective's
    leakage rule forbids a global (bidirectional) mixer."""
    objective = get_objective(train)
    enc = SeqEncoder(num_items, model, extra_tokens=objective.extra_tokens)
    if objective.causal_only and not enc.causal:
        fits = " or ".join(f"train.objective={n}" for n in OBJECTIVES.listed(lambda o: not o.causal_only))
        raise ConfigError(
            f"config: mixer '{model.mixer}' with mixer_args {model.mixer_args} is global (bidirectional): it would see "
            f"the future when trained with train.objective={train.objective}; use {fits}, or a causal mixer"
        )
    return enc


def mask_token(enc: SeqEncoder, train: TrainConfig) -> int:
    """The id an encoder of this objective reads after the history to predict (the cloze query), or 0."""
    return get_objective(train).mask_token(enc.num_items)
