"""The JSON files of a run directory and the shape each must have: read through `read_run_json`, a file that
parses but lacks a field, or holds one of the wrong type, is one CheckpointError naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from longrec.errors import CheckpointError
from longrec.train.checkpoint import read_json

Number = (int, float)
# a field: its required type(s); a nested dict: a sub-schema (its own required keys); "name?": optional field
Schema = dict[str, Any]

SCHEMAS: dict[str, Schema] = {
    "model.json": {"format": int, "num_items": int, "config": dict},
    "id_maps.json": {"items": list, "users": list},
    "trainer.json": {"epoch": int, "best": Number, "best_epoch": int, "bad_epochs": int, "train_seconds?": Number,
                     "seconds_to_best?": Number, "epoch_seconds?": list, "wall_seconds?": Number, "segments?": list},
    "optim.json": {"param_groups": list, "scalars": dict},
    # "test" is absent from a run trained with eval.test=false (a longrec tune trial): report shows its "valid"
    "results.json": {"protocol": str, "test?": dict, "valid?": dict, "wall_seconds": Number, "peak_memory": dict,
                     "device": str, "git_commit": str, "training": {"seconds_to_best": Number, "epochs": int},
                     "config": {"data": {"name": str}, "model": {"mixer": str}, "train": dict}},
    "data.json": {"format": int, "source": str, "source_sha256": str, "corpus": str, "corpus_sha256": str},
}


def _type_name(t: Any) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def check_shape(path: Path, obj: Any, schema: Schema, prefix: str = "") -> None:
    """Every key of `schema` is in `obj` with the type it names (bool is no number); raises CheckpointError."""
    if not isinstance(obj, dict):
        where = f"field {prefix.rstrip('.')}" if prefix else "the file"
        raise CheckpointError(f"{path}: {where} must be a JSON object, got {type(obj).__name__}")
    for name, want in schema.items():
        key = name.rstrip("?")
        field = prefix + key
        if key not in obj and name.endswith("?"):
            continue
        if key not in obj:
            raise CheckpointError(f"{path}: field {field} is missing")
        value = obj[key]
        if isinstance(want, dict):
            check_shape(path, value, want, field + ".")
            continue
        if isinstance(value, bool) and want is not bool or not isinstance(value, want):
            raise CheckpointError(f"{path}: field {field} must be {_type_name(want)}, got {type(value).__name__}")


def read_run_json(path: Path, kind: str = "") -> Any:
    """A run directory's JSON file, checked against the schema of `kind` (a SCHEMAS name; default the file's)."""
    obj = read_json(path)
    check_shape(path, obj, SCHEMAS[kind or path.name])
    return obj


def same_item_ids(maps: Path, item_ids: Any) -> bool:
    """Whether a run's id_maps.json lists exactly these item ids (its weights score them in this order)."""
    return bool(read_run_json(maps)["items"] == list(item_ids.tolist()))
