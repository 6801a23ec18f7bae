"""One cell of the scaling benchmark (longrec.bench.scaling): a variant's forward+backward at one length N, timed
and its peak memory measured, in this process or a fresh one (`python -m longrec.bench.scaling_cell --cell JSON`)."""

from __future__ import annotations

import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from longrec.argtypes import positive_float, positive_int, thread_count
from longrec.bench.harness import CellFailed, option, peak_rss_mib, run_cell, sync
from longrec.config import ModelConfig, load_config, preset_names
from longrec.losses import chunked_ce
from longrec.mixers import MIXERS, build_mixer
from longrec.mixers.base import mixer_config, op_backend
from longrec.model.block import Block
from longrec.model.encoder import SeqEncoder
from longrec.ops import Backend

LEVELS = ("mixer", "block", "model")
DTYPES = ("fp32", "bf16")
KERNELS = ("kernel:sdpa", "kernel:fla")  # raw ops, not models: the floors a mixer is measured against
REFERENCE = "sasrec"  # causal softmax: ratio_to_softmax divides by its time at the same N
OOM_TEXT = ("out of memory", "not enough memory", "can't allocate memory")


@dataclass(frozen=True)
class Cell:
    """One measurement: a variant at one length (JSON-serialisable, for an isolated child process). The fields made
    with option() are flags of `longrec bench scaling`."""

    variant: str
    level: str = option("block", "the mixer alone, one block, or the model and loss", choices=LEVELS)
    N: int = 128
    batch: int = option(8, "batch size B", type=positive_int)
    dim: int = option(64, "model dim D", type=positive_int)
    device: str = option("cpu", "cpu | cuda | cuda:N (default: cuda when there is one)")
    dtype: str = option("fp32", "bf16 = autocast, as in training", choices=DTYPES)
    reps: int = option(3, "timed runs per cell after one warm-up; the median is reported", type=positive_int)
    time_limit_s: float = option(120.0, "seconds per cell before it counts as a timeout", "--time-limit",
                                 type=positive_float)
    items: int = option(10_000, "catalogue size at model level", type=positive_int)
    threads: int = option(0, "torch intra-op threads on CPU (0: torch default)", type=thread_count)


def variant_config(variant: str, dim: int, max_len: int) -> ModelConfig:
    """Model config of `PRESET|MIXER[@BACKEND]` at width dim and window max_len; a bad variant is a ConfigError."""
    name, _, backend = variant.partition("@")
    base, overrides = name, [f"model.dim={dim}", f"model.max_len={max_len}"]
    if name not in preset_names() and name in MIXERS:
        base, overrides = REFERENCE, [f"model.mixer={name}", *overrides]
    if backend:
        op_backend(backend, tuple(Backend))  # a ConfigError naming the valid backends
        overrides.append(f"model.mixer_args.backend={backend}")
    cfg = load_config(base, overrides).model
    mixer_config(cfg.mixer, cfg.mixer_args)  # fail now, not hours into a sweep
    return cfg


def causal(cfg: ModelConfig) -> bool:
    args = mixer_config(cfg.mixer, cfg.mixer_args)
    return bool(getattr(args, "causal", True))  # mixers without the option (lru, gru) are causal


def _loss(cell: Cell, device: torch.device) -> tuple[Callable[[], Tensor], list[Tensor]]:
    """The cell's scalar loss on fixed random inputs, and the leaves whose grads it sets: a raw kernel (KERNELS) on
    one head of width D, q, k, v [B,N,1,D] (in bf16 itself, not autocast); the mixer or block on x [B,N,D] against
    a random gradient; or the model with chunked CE on every position. Full windows: N real events per row."""
    B, N, D = cell.batch, cell.N, cell.dim
    if cell.variant in KERNELS:
        dtype = torch.bfloat16 if cell.dtype == "bf16" else torch.float32
        q, k, v = (torch.randn(B, N, 1, D, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
        if cell.variant == "kernel:fla":
            from longrec.ops.linear_attn import fla_chunk_kernel

            kernel = fla_chunk_kernel()
            return lambda: kernel(q=q, k=k, v=v, scale=1.0)[0].float().sum(), [q, k, v]

        def sdpa() -> Tensor:
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, 1, N, D)
            return F.scaled_dot_product_attention(qt, kt, vt, is_causal=True).float().sum()

        return sdpa, [q, k, v]
    cfg = variant_config(cell.variant, D, N)
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    if cell.level == "model":
        enc = SeqEncoder(cell.items, cfg).to(device).train()
        items = torch.randint(1, cell.items + 1, (B, N), device=device)
        targets = torch.randint(1, cell.items + 1, (B * N,), device=device)
        return lambda: chunked_ce(enc(items, mask).reshape(B * N, D), targets, enc.item_table()), [*enc.parameters()]
    mixer = build_mixer(cfg.mixer, D, cfg.heads, cfg.dropout, cfg.mixer_args)
    layer = mixer if cell.level == "mixer" else Block(mixer, D, cfg.ffn_mult, cfg.dropout, cfg.norm_first)
    layer = layer.to(device).train()
    x = torch.randn(B, N, D, device=device, requires_grad=True)
    g = torch.randn(B, N, D, device=device)
    return lambda: (layer(x, mask).float() * g).sum(), [x, *layer.parameters()]  # layer(x): (B, N, D)


def _workload(cell: Cell, device: torch.device) -> Callable[[], None]:
    """A closure running one forward + backward of the cell (bf16: autocast, but for the kernels)."""
    loss, leaves = _loss(cell, device)
    bf16 = cell.dtype == "bf16" and cell.variant not in KERNELS

    def run() -> None:
        for t in leaves:
            t.grad = None
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            out = loss()
        out.backward()

    return run


def result(status: str, ms: float | None = None, peak_mib: float | None = None, note: str = "") -> dict[str, Any]:
    """A cell's measured fields, as the CSV has them."""
    return {"status": status, "ms": ms, "peak_mib": peak_mib, "note": note}


def measure(cell: Cell, rss: bool = False) -> dict[str, Any]:
    """Run one cell in this process -> {status, ms (median), peak_mib, note}; failures become statuses.
    rss: measure CPU memory as peak-RSS growth (meaningful only in a fresh process, see measure_isolated)."""
    device = torch.device(cell.device)
    cuda = device.type == "cuda"
    try:
        torch.manual_seed(0)
        if cuda:
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20 if cuda else peak_rss_mib()
        run = _workload(cell, device)
        times: list[float] = []
        start = time.perf_counter()
        for i in range(cell.reps + 1):  # run 0 warms up (allocator, kernels, autotuning) and is not counted
            if i and (elapsed := time.perf_counter() - start) > cell.time_limit_s:
                runs = f"{i} of {cell.reps + 1} runs"
                return result("timeout", note=f"{runs} took {elapsed:.1f} s > {cell.time_limit_s} s")
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            if i:
                times.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mib() if rss else None
        return result("ok", 1e3 * statistics.median(times), None if peak is None else peak - base)
    except Exception as e:  # noqa: BLE001  # one broken variant must not end a sweep of hours: it becomes a row
        text = str(e).strip()
        oom = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(s in text.lower() for s in OOM_TEXT)
        return result("oom" if oom else "error", note=f"{type(e).__name__}: {(text.splitlines() or [''])[0]}"[:200])
    finally:
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()


def measure_isolated(cell: Cell) -> dict[str, Any]:
    """Run one cell in a fresh interpreter: attributable CPU memory, a hard time limit, survives the OOM killer."""
    try:  # 60 s: interpreter start-up and the tiny warm-up
        return run_cell("longrec.bench.scaling_cell", asdict(cell), 2 * cell.time_limit_s + 60)
    except CellFailed as e:
        return result(e.status, note=e.note)


def _child(spec: str) -> None:
    """Body of an isolated cell: warm up on a tiny input, then measure; prints one JSON line."""
    cell = Cell(**json.loads(spec))
    if cell.threads:
        torch.set_num_threads(cell.threads)
    measure(replace(cell, N=min(cell.N, 8), batch=1, reps=1))
    print(json.dumps(measure(cell, rss=cell.device.startswith("cpu"))), flush=True)


if __name__ == "__main__":  # an isolated cell (harness.run_cell)
    _child(sys.argv[sys.argv.index("--cell") + 1])
