"""Training losses by name (train.loss): each a registered `Loss` in its own file, over longrec.losses' pure
functions. Adding a loss is one file holding a `Loss` plus one `LOSSES.register` call."""

from __future__ import annotations

from longrec.config import ExperimentConfig, TrainConfig
from longrec.errors import ConfigError
from longrec.train.losses.base import LOSSES, ItemCounts, Loss, LossFn
from longrec.train.losses.bce import BCE
from longrec.train.losses.ce import CE
from longrec.train.losses.gbce import GBCE
from longrec.train.losses.sampled import SAMPLED
from longrec.train.losses.samplers import SAMPLERS, Sampler, in_batch_sampler, popularity_sampler, uniform_sampler

LOSSES.register("ce", CE)  # the default first: a config error lists them in this order
LOSSES.register("bce", BCE)
LOSSES.register("sampled", SAMPLED)
LOSSES.register("gbce", GBCE)

__all__ = ["LOSSES", "SAMPLERS", "ItemCounts", "Loss", "LossFn", "Sampler", "check_loss", "get_loss",
           "in_batch_sampler", "make_loss", "popularity_sampler", "uniform_sampler"]


def get_loss(train: TrainConfig) -> Loss:
    """The loss of train.loss; an unknown name is a ConfigError listing the known ones."""
    return LOSSES.pick(train.loss, "train.loss").obj


def check_loss(cfg: ExperimentConfig) -> None:
    """The config rules of train.loss and train.sampler: the names, the loss's own rules, the repeat head's."""
    loss = get_loss(cfg.train)
    SAMPLERS.pick(cfg.train.sampler, "train.sampler")
    loss.check(cfg)
    if cfg.model.repeat and not loss.repeat:
        fits = "|".join(LOSSES.listed(lambda loss: loss.repeat))
        raise ConfigError(f"config: model.repeat=true needs train.loss={fits} (the loss its bonus trains with), "
                          f"got {cfg.train.loss!r}")


def make_loss(train: TrainConfig, num_items: int, item_counts: ItemCounts) -> LossFn:
    """The loss function of `train.loss`; `item_counts()` ([I+1] training counts) is called only by the losses
    that need it (the popularity sampler)."""
    return get_loss(train).build(train, num_items, item_counts)
