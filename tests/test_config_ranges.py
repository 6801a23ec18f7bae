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


@pytest.mark.parametrize(("preset", "overrides", "field"), [
    ("lrurec", ["model.mixer_args.r_min=0.95", "model.mixer_args.r_max=0.9"], "model.mixer_args.r_min"),
    ("lrurec", ["model.mixer_args.r_max=1.0"], "model.mixer_args.r_max"),
    ("lrurec", ["model.mixer_args.max_phase=0"], "model.mixer_args.max_phase"),
    ("lrurec", ["model.mixer_args.backend=fla"], "model.mixer_args.backend"),
    ("retention", ["model.mixer_args.exp_min=9"], "model.mixer_args.exp_min"),
    ("retention", ["model.mixer_args.schedule=fast"], "model.mixer_args.schedule"),
    ("gated-delta", ["model.mixer_args.dt_min=0.5"], "model.mixer_args.dt_min"),
    ("gated-delta", ["model.mixer_args.backend=fla"], "model.mixer_args.backend"),
    ("gla", ["model.mixer_args.expand_k=0.3"], "model.mixer_args.expand_k"),
    ("gla", ["model.mixer_args.tau=0"], "model.mixer_args.tau"),
    ("recgrela", ["model.dim=60", "model.heads=4"], "model.dim"),
    ("causal-linrec", ["model.mixer_args.norm=row"], "model.mixer_args.norm"),
    ("causal-linrec", ["model.mixer_args.eps=0"], "model.mixer_args.eps"),
    ("ea-sasrec", ["model.mixer_args.chunk=0"], "model.mixer_args.chunk"),
    ("sasrec", ["model.mixer_args.attn_dropout=1"], "model.mixer_args.attn_dropout"),
    ("sasrec", ["model.heads=3"], "model.dim"),
    ("sasrec", ["train.last_targets=201"], "train.last_targets"),
])
def test_mixer_and_cross_field_rules_are_one_line_naming_the_field(preset: str, overrides: list[str],
                                                                    field: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(preset, overrides)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"config: '{field}'"), msg


def test_every_preset_passes_the_rules_and_their_edges_are_allowed() -> None:
    from longrec.config import preset_names

    for name in preset_names():
        load_config(name)
    load_config("lrurec", ["model.mixer_args.r_min=0.9", "model.mixer_args.r_max=0.9"])  # a ring of one radius
    load_config("sasrec", ["train.last_targets=200", "model.mixer_args.attn_dropout=0.5"])
    load_config("causal-linrec", ["model.mixer_args.backend=naive"])  # the loop's old name, as saved configs hold


def test_the_mixer_rules_name_only_fields_that_exist() -> None:
    import dataclasses

    from longrec.config_rules import MIXER_CHOICES, MIXER_RANGES, MIXER_RULES
    from longrec.mixers import MIXERS

    for table in (MIXER_RANGES, MIXER_CHOICES, MIXER_RULES):
        for mixer, rules in table.items():
            entry = MIXERS.get(mixer)
            names = {f.name for f in dataclasses.fields(entry.config)}  # type: ignore[arg-type]
            fields = [r.field.removeprefix("model.mixer_args.") for r in rules] if table is MIXER_RULES else rules
            assert {f for f in fields if not f.startswith("model.")} <= names, mixer


def test_a_baseline_arg_out_of_range_is_refused_when_the_config_is_built() -> None:
    with pytest.raises(ConfigError, match="'model.baseline_args.decay' must be in \\(0, 1\\], got 0.0"):
        load_config("personal-frequency", ["model.baseline_args.decay=0"])
    assert load_config("personal-frequency", ["model.baseline_args.decay=1"]).model.baseline_args["decay"] == 1
