"""Every numeric config field has a range, checked when the config is built (before any data is read)."""

from __future__ import annotations

import pytest

from longrec.config import ExperimentConfig, load_config
from longrec.config_ranges import RANGES, numeric_fields
from longrec.errors import ConfigError


def test_every_numeric_field_has_a_range() -> None:
    assert sorted(numeric_fields(ExperimentConfig)) == sorted(RANGES)


@pytest.mark.parametrize("override", [
    "train.lr=.inf", "train.lr=0", "train.lr=1e10", "train.lr=.nan", "train.weight_decay=-0.1",
    "train.weight_decay=.nan", "model.ffn_mult=-1", "data.kcore=-1", "eval.negatives=0", "train.threads=100000",
    "train.patience=0", "train.grad_clip=.inf", "train.time_budget_min=-1", "model.dropout=.nan", "eval.ks=[0, 10]",
    "seed=-1", "data.temporal_valid=0.95", "model.mixer_args.attn_dropout=.nan", "model.mixer_args.attn_dropout=-.inf",
    "name=", "name=../../x", "name=/tmp/x", "name=.", "name=a/b",
])
def test_out_of_range_is_one_line_naming_the_field(override: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("sasrec", [override])
    msg = str(e.value)
    assert "\n" not in msg and f"'{override.split('=')[0]}'" in msg, msg


def test_mixer_fields_with_a_negative_default_accept_it() -> None:
    assert load_config("sasrec", ["model.mixer_args.attn_dropout=-1"]).model.mixer_args["attn_dropout"] == -1
    with pytest.raises(ConfigError, match="model.mixer_args.state_mult"):
        load_config("lrurec", ["model.mixer_args.state_mult=-2"])
