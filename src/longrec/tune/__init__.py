"""longrec tune: search a config's hyperparameters on the validation split (Optuna TPE, median pruning, an RDB
study that resumes and takes several workers); write the trials table and best.yaml, optionally train it on test."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml

from longrec.config import ExperimentConfig, load_config, to_dict
from longrec.config_ranges import check_name
from longrec.errors import CheckpointError
from longrec.train.checkpoint import atomic_write
from longrec.train.loop import fit
from longrec.train.runfiles import read_run_json
from longrec.tune.space import Dist, load_space
from longrec.tune.study import TuneOptions, open_study, run_trials, storage_url, trial_config

__all__ = ["TuneOptions", "tune", "trials_table", "best_config"]


def _cell(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trials_table(study: optuna.Study, space: dict[str, Dist], metric: str) -> str:
    """A markdown table of the study's trials, in order: number, state, valid metric, epochs, seconds, seed, params."""
    best = _best(study)
    head = ["trial", "state", f"valid {metric}", "epochs", "seconds", "seed", *space, "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        valid = f"{a['valid']:.4f}" if "valid" in a else ""
        seconds = f"{a['seconds']:.0f}" if "seconds" in a else ""
        note = "; ".join(n for n in ("best" if best is not None and t.number == best.number else "",
                                     f"retry of {t.system_attrs['failed_trial']}"
                                     if "failed_trial" in t.system_attrs else "") if n)
        cells = [str(t.number), t.state.name, valid, str(a.get("epochs", "")), seconds, str(a.get("seed", "")),
                 *(_cell(t.params[k]) if k in t.params else "" for k in space), note]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _best(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the best valid metric (pruned ones stopped early: not comparable); None if none."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return max(done, key=lambda t: (t.value, -t.number)) if done else None


def best_config(study: optuna.Study, config: str, overrides: Sequence[str]) -> tuple[ExperimentConfig, str] | None:
    """The best trial's resolved config (its params and seed, the test split on, named <name>-tuned) and the text of
    best.yaml; None when no trial completed."""
    best = _best(study)
    if best is None:
        return None
    cfg = trial_config(config, overrides, best.params, best.user_attrs["seed"], test=True)
    cfg = dataclasses.replace(cfg, name=f"{cfg.name}-tuned")
    check_name(cfg.name)
    n = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    head = (f"# longrec tune: trial {best.number} of study {study.study_name}, the best of {n} complete trials: "
            f"valid {cfg.eval.metric} {best.value:.4f}, seed {best.user_attrs['seed']}\n"
            f"# tuned from: {' '.join([config, *overrides])}; params: {best.params}\n"
            "# longrec train best.yaml: trains it and evaluates the test split once, at the end\n")
    return cfg, head + yaml.safe_dump(to_dict(cfg), sort_keys=False)


def tune(config: str, overrides: Sequence[str], space_path: Path, opts: TuneOptions) -> dict[str, Any]:
    """Run (or resume, or join) the study; write OUT/trials.md and OUT/best.yaml; with opts.final train best.yaml
    into OUT/final. Config and space are checked before anything is written."""
    base = load_config(config, list(overrides))
    space = load_space(space_path, config, overrides)
    if not opts.storage:  # the default storage is a file there
        opts.out.mkdir(parents=True, exist_ok=True)
    study = open_study(base, space, opts)  # a bad --storage or another study's setup: nothing written
    opts.out.mkdir(parents=True, exist_ok=True)
    print(f"tune: study {study.study_name} in {storage_url(opts)}, trials in {opts.out / 'trials'}", file=sys.stderr)
    run_trials(study, config, overrides, space, opts, base.seed)
    table = trials_table(study, space, base.eval.metric)
    atomic_write(opts.out / "trials.md", table + "\n")
    print(table)
    out: dict[str, Any] = {"study": study.study_name, "trials": len(study.trials), "table": table}
    best = best_config(study, config, overrides)
    if best is None:
        print("tune: no trial completed; no best.yaml written", file=sys.stderr)
        return out
    out["best"], text = best
    atomic_write(opts.out / "best.yaml", text)
    print(f"tune: wrote {opts.out / 'best.yaml'}", file=sys.stderr)
    if opts.final:
        out["final"] = final_run(out["best"], opts.out / "final")
    return out


def final_run(cfg: ExperimentConfig, run_dir: Path) -> dict[str, Any]:
    """Train the chosen config with the test split on; a finished final run is read, not evaluated again, and one
    that was interrupted is resumed."""
    if (run_dir / "results.json").is_file():
        res = dict(read_run_json(run_dir / "results.json"))
        if res["config"] != to_dict(cfg):
            raise CheckpointError(f"{run_dir}: holds the final run of another config (an earlier best); move it away "
                                  "to train this one")
        print(f"tune: {run_dir} is finished (its results.json is kept)", file=sys.stderr)
        return res
    return fit(cfg, run_dir, resume=(run_dir / "model.json").is_file())
