"""The Optuna study of `longrec tune`: RDB storage, seeded TPE, median pruning, one run directory per trial."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import FrozenTrial, TrialState

from longrec.config import ExperimentConfig, load_config, to_dict
from longrec.errors import ConfigError
from longrec.train.loop import fit
from longrec.tune.space import Dist, override

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)  # the trials --trials counts; failed ones are run again
MAX_RETRY = 3  # an interrupted or stale trial is queued again at most this often


@dataclass(frozen=True)
class TuneOptions:
    """How a tune runs; the CLI's flags."""

    trials: int  # finished (complete or pruned) trials the study ends with, over all its processes and restarts
    out: Path  # trials/NNN run directories, study.db (the default storage), trials.md, best.yaml, final/
    storage: str = ""  # an RDB URL (sqlite:///x.db, postgresql://...); "" = sqlite:///OUT/study.db
    study: str = ""  # the study's name in the storage; "" = the config's name
    time_budget_min: float = 0.0  # this process starts no trial after this many minutes; 0 = none
    final: bool = False  # train the best config once more, the test split evaluated (OUT/final)
    prune_startup: int = 4  # trials finished before any is pruned
    prune_warmup: int = 10  # epochs every trial trains before it may be pruned
    heartbeat_s: int = 30  # a running trial writes its heartbeat this often
    stale_after_s: int = 120  # a running trial silent this long (its process killed) is failed and queued again


def trial_seed(study_seed: int, number: int) -> int:
    """Trial `number`'s seed (training and sampling): a function of the study seed (the config's) and the number."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0])


class TrialSeededTPE(BaseSampler):
    """TPE whose draws for trial n come from a TPESampler seeded with trial_seed(seed, n): a resumed process or a
    second worker does not repeat the draws of the trials before it (one seeded sampler per process would)."""

    def __init__(self, seed: int) -> None:
        self._seed, self._number, self._tpe = seed, -1, TPESampler(seed=seed)

    def _for(self, trial: FrozenTrial) -> TPESampler:
        if trial.number != self._number:
            self._number, self._tpe = trial.number, TPESampler(seed=trial_seed(self._seed, trial.number))
        return self._tpe

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)


def trial_config(config: str, overrides: Sequence[str], params: dict[str, Any], seed: int,
                 test: bool = False) -> ExperimentConfig:
    """CONFIG + overrides + a trial's params and seed; eval.test=false unless `test` (the chosen config)."""
    extra = [override(k, v) for k, v in params.items()]
    return load_config(config, [*overrides, *extra, override("seed", seed), override("eval.test", test)])


def storage_url(opts: TuneOptions) -> str:
    return opts.storage or f"sqlite:///{(opts.out / 'study.db').resolve()}"


def open_storage(url: str, opts: TuneOptions, attempts: int = 5) -> RDBStorage:
    """The RDB storage, heartbeats on. Two workers that open a new database at once both create its schema, and the
    later one's IntegrityError means the schema is there now: it opens it again."""
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: since 2.9
                return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                                  else None, heartbeat_interval=opts.heartbeat_s, grace_period=opts.stale_after_s,
                                  heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(MAX_RETRY))
        except sqlalchemy.exc.IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


def open_study(base: ExperimentConfig, space: dict[str, Dist], opts: TuneOptions) -> optuna.Study:
    """Create the study, or load it when it exists: then it must have been started with this config and space."""
    url = storage_url(opts)
    try:
        storage = open_storage(url, opts)
    except (ImportError, ValueError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as e:
        raise ConfigError(f"--storage {url}: cannot open it ({str(e).splitlines()[0]})") from None
    name = opts.study or base.name
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=TrialSeededTPE(base.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=opts.prune_startup,
                                                                   n_warmup_steps=opts.prune_warmup))
    setup = {"config": to_dict(base), "space": {k: d.as_yaml() for k, d in space.items()}}
    for key, value in setup.items():
        saved = study.user_attrs.get(key)
        if saved is None:
            study.set_user_attr(key, value)
        elif saved != value:
            raise ConfigError(f"--study {name} ({url}) was started with another {key}; tune it with the same config, "
                              "overrides and space, or give another --study")
    return study


def objective(config: str, overrides: Sequence[str], space: dict[str, Dist], out: Path, seed: int,
              started: list[int]) -> Any:
    """The function a trial runs: draw the params, train into OUT/trials/NNN on validation only, report the valid
    metric after every epoch for the pruner."""

    def run(trial: optuna.Trial) -> float:
        started.append(trial.number)
        s = trial_seed(seed, trial.number)
        trial.set_user_attr("seed", s)
        cfg = trial_config(config, overrides, {k: d.suggest(trial, k) for k, d in space.items()}, s)
        metric, pruned = cfg.eval.metric, [False]

        def on_epoch(epoch: int, valid: dict[str, float]) -> bool:
            trial.report(valid[metric], epoch)
            pruned[0] = trial.should_prune()
            return pruned[0]

        print(f"tune: trial {trial.number}: {trial.params}", file=sys.stderr)
        res = fit(cfg, out / "trials" / f"{trial.number:03d}", on_epoch=on_epoch)
        for key, value in (("valid", res["valid"][metric]), ("epochs", res["training"]["epochs"]),
                           ("seconds", res["wall_seconds"])):
            trial.set_user_attr(key, value)
        if pruned[0]:
            raise optuna.TrialPruned(f"valid {metric} below the median at epoch {res['training']['epochs']}")
        return float(res["valid"][metric])

    return run


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """`kill PID` (SIGTERM) stops the tune as Ctrl-C does: the running trial is marked failed and queued again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def run_trials(study: optuna.Study, config: str, overrides: Sequence[str], space: dict[str, Dist],
               opts: TuneOptions, seed: int) -> None:
    """Run trials until the study holds opts.trials finished ones (other processes' included). At most 2N trials
    start here, so that a space whose trials all fail (NaN losses) ends."""
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    if done >= opts.trials:
        print(f"tune: study {study.study_name} already has {done} finished trials", file=sys.stderr)
        return
    started: list[int] = []
    try:
        with sigterm_interrupts():
            study.optimize(objective(config, overrides, space, opts.out, seed, started), n_trials=2 * opts.trials,
                           timeout=60 * opts.time_budget_min or None,
                           callbacks=[MaxTrialsCallback(opts.trials, states=COUNTED)])
    except KeyboardInterrupt:
        requeue(study, started[-1] if started else None)
        raise


def requeue(study: optuna.Study, number: int | None) -> None:
    """Queue the interrupted trial's params again (as the heartbeat does for a killed process's trial)."""
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is not None and trial.state == TrialState.FAIL:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            RetryHeartbeatStaleTrialCallback(MAX_RETRY)(study, trial)
        print(f"tune: trial {number} interrupted; its params are queued to run again", file=sys.stderr)
