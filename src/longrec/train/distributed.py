"""Data-parallel training under torchrun: the process group, each rank's share of a batch, exact gathers.

Every rank builds the same global batch (same seeded generator per epoch) and keeps rows rank, rank+W, ...;
the loss of its rows is weighted so that DDP's gradient average equals the gradient of the global batch's
mean loss. train.batch_size is therefore the global batch, and a W-process run follows the single-process run
(same data order, same updates up to float rounding). Evaluation rows are split the same way and the ranks are
gathered back by row index, each row exactly once, so every rank computes the single-process metrics.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from longrec.data.loader import Batch
from longrec.errors import ConfigError
from longrec.train.runinfo import pick_device

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Dist:
    """This process's place in the group; world = 1 is a plain single-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        """The rank that writes checkpoints, logs and results."""
        return self.rank == 0

    def rows(self, n: int) -> np.ndarray:
        """This rank's share of n rows: rank, rank + world, ..."""
        return np.arange(self.rank, n, self.world)


SINGLE = Dist()


def launched() -> bool:
    """True when a launcher such as torchrun has set RANK, WORLD_SIZE and LOCAL_RANK."""
    return all(v in os.environ for v in LAUNCH_VARS)


def _device(name: str, local_rank: int) -> torch.device:
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return pick_device("cpu" if name == "auto" else name)


@contextlib.contextmanager
def session(requested: bool, device: str) -> Iterator[tuple[Dist, torch.device]]:
    """Join the launcher's process group (gloo on CPU, nccl on CUDA) when asked or launched; leave it at exit.
    A group that the caller already initialised is reused and left open."""
    if not (requested or launched()):
        yield SINGLE, pick_device(device)
        return
    if not launched():
        raise ConfigError("--distributed needs a launcher that sets RANK, WORLD_SIZE and LOCAL_RANK, e.g. "
                          "torchrun --nproc-per-node=2 -m longrec train ...")
    rank, world, local = (int(os.environ[v]) for v in LAUNCH_VARS)
    dev = _device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owner = not dist.is_initialized()
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if owner:
        dist.init_process_group(backend, rank=rank, world_size=world)  # env:// rendezvous (MASTER_ADDR/PORT)
    try:
        yield Dist(rank, world, local, dist.get_backend()), dev
    finally:
        if owner:
            dist.destroy_process_group()


def shard(b: Batch, d: Dist) -> tuple[Batch, float]:
    """This rank's rows of the global batch and the weight W * M_rank / M_all of its mean loss, M = positions
    with a target: DDP averages gradients over W ranks, so the weighted means sum to the global mean.
    A rank left without rows (a last batch smaller than W) gets one row with no targets and weight 0, so that
    it still joins the gradient all-reduce."""
    if d.world == 1:
        return b, 1.0
    rows = torch.arange(d.rank, len(b.users), d.world)
    if len(rows) == 0:
        one = b.rows(slice(0, 1))
        return Batch(one.items, one.mask, torch.zeros_like(one.targets), one.users, one.times), 0.0
    part = b.rows(rows)
    m_all = int((b.targets > 0).sum())
    return part, d.world * int((part.targets > 0).sum()) / max(m_all, 1)


def gather_rows(idx: np.ndarray, values: np.ndarray, n: int, d: Dist, device: torch.device) -> np.ndarray:
    """[n] int64: every rank's values placed at its row indices idx. Raises unless each of the n rows was
    produced by exactly one rank (no row lost, none counted twice)."""
    if d.world == 1:
        out = np.zeros(n, dtype=np.int64)
        out[idx] = values
        filled = np.bincount(idx, minlength=n)
    else:
        size = -(-n // d.world)  # the largest share; shorter ones are padded with row index -1
        mine = torch.full((2, size), -1, dtype=torch.int64)
        mine[0, : len(idx)], mine[1, : len(idx)] = torch.from_numpy(idx), torch.from_numpy(values)
        parts = [torch.empty_like(mine, device=device) for _ in range(d.world)]
        dist.all_gather(parts, mine.to(device))
        both = torch.cat(parts, dim=1).cpu().numpy()
        both = both[:, both[0] >= 0]
        out = np.zeros(n, dtype=np.int64)
        out[both[0]] = both[1]
        filled = np.bincount(both[0], minlength=n)
    if len(filled) != n or not (filled == 1).all():
        raise RuntimeError(f"evaluation gather: {int((filled == 0).sum())} rows missing, "
                           f"{int((filled > 1).sum())} rows counted twice")
    return out


def mean_over_ranks(x: float, d: Dist, device: torch.device) -> float:
    """The mean of a per-rank number over all ranks (x itself in a single process)."""
    if d.world == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / d.world


def agree(flag: bool, d: Dist, device: torch.device) -> bool:
    """Rank 0's decision on every rank (stopping on a time budget must not depend on each rank's clock)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
