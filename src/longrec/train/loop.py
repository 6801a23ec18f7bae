"""fit(): train with early stopping on validation, checkpoint every epoch, evaluate the test split once."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from longrec.config import ExperimentConfig, TrainConfig
from longrec.data.loader import Batch, train_item_counts
from longrec.data.split import Splits
from longrec.errors import ConfigError
from longrec.model.encoder import SeqEncoder, describe
from longrec.objectives import build_model, get_objective, mask_token
from longrec.scoring import EncoderScorer
from longrec.train.baseline import fit_baseline
from longrec.train.batch_loss import batch_loss
from longrec.train.checkpoint import (
    load_model_weights,
    load_optimizer,
    load_tensors,
    save_optimizer,
    save_tensors,
    write_json,
)
from longrec.train.distributed import SINGLE, Dist, agree, barrier, mean_over_ranks, session, shard
from longrec.train.evaluate import check_data, evaluate
from longrec.train.losses import LossFn, make_loss
from longrec.train.results import Finished, Progress, write_results
from longrec.train.rundir import load_data, prepare_run_dir, train_splits
from longrec.train.runfiles import read_run_json, same_item_ids
from longrec.train.runinfo import provenance, torch_threads

__all__ = ["fit", "load_data", "make_optimizer", "train_step", "epoch_batches", "Progress", "EpochHook", "Trainer"]

# called on rank 0 after each epoch's validation with (epoch, valid metrics); True stops training there and the run
# finishes as an early-stopped one (best checkpoint evaluated, results.json written): longrec tune prunes through it
EpochHook = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True)
class Trainer:
    """What every step of one training run uses: its config and data, the model (`net`: the model or its DDP
    wrapper), optimiser and loss, the device and the processes."""

    cfg: ExperimentConfig
    splits: Splits
    model: SeqEncoder
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    loss_fn: LossFn
    device: torch.device
    d: Dist = SINGLE


def make_optimizer(model: SeqEncoder, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no decay on biases, norms, parameters flagged `_no_weight_decay` (LRU's ν, θ, γ) or, unless
    train.decay_embeddings, embeddings."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        emb = "emb" in name and not train.decay_embeddings
        skip = p.ndim < 2 or emb or getattr(p, "_no_weight_decay", False)
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr)


def epoch_batches(cfg: ExperimentConfig, splits: Splits, rng: np.random.Generator) -> Iterator[Batch]:
    """The training batches of one epoch, as the objective builds them."""
    return get_objective(cfg.train).batches(splits, cfg.model.max_len, cfg.train, rng)


def batches_per_epoch(cfg: ExperimentConfig, splits: Splits) -> int:
    return -(-get_objective(cfg.train).rows(splits, cfg.train) // cfg.train.batch_size)


def init_weights(init: str, splits: Splits) -> Path:
    """train.init -> the weights file: a run directory's best.safetensors (its item ids checked against this
    run's), or the file itself."""
    path = Path(init)
    maps = path / "id_maps.json"
    path = path / "best.safetensors" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"config: train.init: {path}: no such weights file (give a run directory or a "
                          ".safetensors file)")
    if maps.is_file() and not same_item_ids(maps, splits.corpus.item_ids):
        raise ConfigError(f"config: train.init: {maps}: that run's item ids differ from this run's data "
                          "(its weights would score the wrong items)")
    return path


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def fit(cfg: ExperimentConfig, run_dir: Path, resume: bool = False, distributed: bool = False,
        on_epoch: EpochHook | None = None) -> dict[str, Any]:
    """Train, select the best validation epoch, evaluate it on the test split (unless eval.test is false); returns
    the results dict. Under torchrun (or with distributed=True) every rank trains its share of each batch with DDP;
    rank 0 writes the run directory and logs, and every rank returns the same results. `on_epoch`: see EpochHook."""
    if cfg.model.baseline:
        return fit_baseline(cfg, run_dir)
    with torch_threads(cfg.train.threads), session(distributed, cfg.train.device) as (d, device):
        return _fit(cfg, run_dir, resume, d, device, on_epoch)


def _fit(cfg: ExperimentConfig, run_dir: Path, resume: bool, d: Dist, device: torch.device,
         on_epoch: EpochHook | None) -> dict[str, Any]:
    wall0 = time.time()
    origin = provenance(device, cfg.seed)  # the code that trains, recorded before anything can change it
    splits = train_splits(cfg, run_dir, resume) if d.main else None  # rank 0 builds the corpus cache, the
    barrier(d)  # others then read it
    splits = splits or train_splits(cfg, run_dir, resume, quiet=True)
    check_data(cfg, splits)
    if cfg.model.time != "none" and splits.corpus.times is None:
        raise ConfigError(f"config: model.time={cfg.model.time} needs event timestamps, and {cfg.data.name} has none "
                          "(give data.time_col for a CSV log, or use model.time=none)")
    model, opt, prog = _start(cfg, run_dir, resume, splits, d, device)
    prog.segments.append({"after_epoch": prog.epoch, "git_commit": origin["git_commit"], "device": origin["device"]})
    wall_before = prog.wall_seconds  # earlier starts; this one's time is added at every checkpoint
    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    scorer = EncoderScorer(model, mask_token(model, cfg.train))  # the objective's query: its mask token, if any
    loss_fn = make_loss(cfg.train, model.num_items, lambda: torch.from_numpy(train_item_counts(splits)))
    t = Trainer(cfg, splits, model, net, opt, loss_fn, device, d)
    info = describe(model)
    log(d, f"model: {cfg.model.mixer} x{cfg.model.layers}, {info['params']:,} parameters, device {device}"
        + (f", {d.world} processes ({d.backend})" if d.world > 1 else ""))
    n_batches = batches_per_epoch(cfg, splits)
    for epoch in range(prog.epoch + 1, cfg.train.epochs + 1):
        if prog.bad_epochs >= cfg.train.patience:
            break
        if agree(bool(cfg.train.time_budget_min) and prog.train_seconds >= 60 * cfg.train.time_budget_min, d, device):
            log(d, f"stopping: time budget of {cfg.train.time_budget_min} min used")
            break
        t0 = time.time()
        loss = train_epoch(t, epoch, n_batches)
        val = evaluate(scorer, splits, splits.valid, cfg.eval, seed=cfg.seed, dist=d)
        dt = time.time() - t0
        metric = val["metrics"][cfg.eval.metric]
        improved = _advance(prog, epoch, dt, metric, wall_before + time.time() - wall0)
        if d.main:
            _save_epoch(run_dir, model, opt, prog, improved, {"epoch": epoch, "loss": loss, "seconds": dt,
                                                              "valid": val["metrics"]})
        log(d, f"epoch {epoch:3d}  loss {loss:.4f}  valid {cfg.eval.metric} {metric:.4f}  best {prog.best:.4f} "
            f"(epoch {prog.best_epoch})  {dt:.1f}s")
        if on_epoch is not None and agree(d.main and on_epoch(epoch, val["metrics"]), d, device):
            log(d, "stopping: the epoch hook asked to (a pruned tuning trial)")
            break
    barrier(d)  # best.safetensors is complete before any rank reads it
    return finish(t, run_dir, scorer, prog, wall_before + time.time() - wall0, origin)


def _advance(prog: Progress, epoch: int, seconds: float, metric: float, wall_seconds: float) -> bool:
    """Count a finished epoch of `seconds` into prog (best, patience, times); True when it improved the metric."""
    prog.epoch, prog.train_seconds, prog.wall_seconds = epoch, prog.train_seconds + seconds, wall_seconds
    prog.epoch_seconds.append(seconds)
    if metric > prog.best:
        prog.best, prog.best_epoch, prog.bad_epochs, prog.seconds_to_best = metric, epoch, 0, prog.train_seconds
        return True
    prog.bad_epochs += 1
    return False


def _start(cfg: ExperimentConfig, run_dir: Path, resume: bool, splits: Splits, d: Dist,
           device: torch.device) -> tuple[SeqEncoder, torch.optim.Optimizer, Progress]:
    """The model (fresh, from train.init's weights, or resumed), its optimiser and the progress so far; writes
    the run directory (a fresh run) or checks it (resume)."""
    torch.manual_seed(cfg.seed)
    if resume and not (run_dir / "trainer.json").exists():  # stopped before its first epoch ended: start it again
        prepare_run_dir(cfg, run_dir, True, splits, write=False)  # the same config, or refuse
        log(d, f"{run_dir}: no epoch of this run finished; starting it again from epoch 1")
        resume = False
    model = build_model(splits.corpus.num_items, cfg.model, cfg.train).to(device)
    if cfg.train.init and not resume:  # before the run directory is written: a bad file leaves nothing behind
        load_model_weights(model, init_weights(cfg.train.init, splits))
        log(d, f"starting from the weights of {cfg.train.init}")
    opt = make_optimizer(model, cfg.train)
    prepare_run_dir(cfg, run_dir, resume, splits, write=d.main)
    barrier(d)
    prog = Progress()
    if resume:
        saved = read_run_json(run_dir / "trainer.json")
        prog = Progress(**{f.name: saved[f.name] for f in fields(Progress) if f.name in saved})
        load_model_weights(model, run_dir / "last.safetensors")
        load_optimizer(run_dir / "optim.safetensors", opt)
        log(d, f"resuming after epoch {prog.epoch} (best {cfg.eval.metric} {prog.best:.4f} at {prog.best_epoch})")
    return model, opt, prog


def log(d: Dist, message: str) -> None:
    """A progress line on stderr, from rank 0 only."""
    if d.main:
        print(message, file=sys.stderr)


def _save_epoch(run_dir: Path, model: SeqEncoder, opt: torch.optim.Optimizer, prog: Progress, improved: bool,
                record: dict[str, Any]) -> None:
    if improved:
        save_tensors(run_dir / "best.safetensors", model.state_dict())
    save_tensors(run_dir / "last.safetensors", model.state_dict())
    save_optimizer(run_dir / "optim.safetensors", opt)
    write_json(run_dir / "trainer.json", asdict(prog))
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def train_step(t: Trainer, batch: Batch, weight: float = 1.0, gen: torch.Generator | None = None) -> float:
    """One optimiser step on `batch` (its loss scaled by `weight`, gradients clipped); returns the unscaled loss."""
    train, model = t.cfg.train, t.model
    b = batch.to(t.device)
    with _autocast(t.device, train.bf16):
        loss = batch_loss(t.net, model, b, t.loss_fn, gen, train.last_targets)
    t.opt.zero_grad(set_to_none=True)
    (loss * weight).backward()
    if train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
    t.opt.step()
    return loss.item()


def train_epoch(t: Trainer, epoch: int, n_batches: int) -> float:
    """One pass over the epoch's batches; seeded by (seed, epoch) so that a resumed run replays the same data.
    Under DDP each rank trains its shard of every global batch."""
    cfg, d, device = t.cfg, t.d, t.device
    rng = np.random.default_rng([cfg.seed, epoch])  # the same on every rank: all build the same global batches
    torch.manual_seed(cfg.seed * 100_003 + epoch + 7_919 * d.rank)
    # the losses' negatives; seeding it draws nothing from torch's global generator, so losses that draw none
    # (ce) train exactly as without it
    gen = torch.Generator(device=device).manual_seed(cfg.seed * 7 + epoch + 1_000_003 * d.rank)
    t.net.train()
    total, count, seqs, t0 = 0.0, 0, 0, time.time()
    bar = tqdm(epoch_batches(cfg, t.splits, rng), total=n_batches, desc=f"epoch {epoch}", unit="batch",
               leave=False, mininterval=1.0 if sys.stderr.isatty() else 30.0, file=sys.stderr, disable=not d.main)
    for batch in bar:
        part, weight = shard(batch, d)
        loss = train_step(t, part, weight, gen)
        total, count, seqs = total + loss * weight, count + 1, seqs + len(batch.users)
        bar.set_postfix(loss=f"{total / count:.4f}", seq_s=f"{seqs / (time.time() - t0):.0f}", refresh=False)
    bar.close()
    return mean_over_ranks(total, d, device) / max(count, 1)


def finish(t: Trainer, run_dir: Path, scorer: EncoderScorer, prog: Progress, wall: float,
           origin: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the best checkpoint on valid and test (the only time test is touched; valid only when eval.test is
    false); write results.json."""
    if (run_dir / "best.safetensors").exists():
        t.model.load_state_dict(load_tensors(run_dir / "best.safetensors"))
    return write_results(Finished(t.cfg, t.splits, prog, origin, describe(t.model)["params"], wall, t.d), run_dir,
                         scorer)
