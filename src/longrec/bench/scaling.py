"""Mixer scaling benchmark (issue 6): forward+backward time and peak memory versus sequence length N.

Every variant runs side by side in one process tree, lengths in the outer loop, so CPU ratios compare like with like.
A variant is a preset (`longrec list presets`) or a registered mixer (plugged into the sasrec shell with its default
arguments), optionally with `@BACKEND` (chunked | loop | fla; lru: scan | loop) for mixers with a causal op backend.
Level `mixer` times the token mixer alone on x [B,N,D]; `block` one Block (mixer + FFN); `model` the preset's SeqEncoder
(depth as in the preset) plus chunked CE over a catalogue of --items on every position. All run in train mode; bf16 is
autocast, as in training. Two raw kernels are variants too, at every level the same op on q, k, v of shape [B,N,1,D]
(one head of width D, as causal-linrec and sasrec): `kernel:sdpa` (torch's scaled_dot_product_attention, is_causal and
no mask, so flash attention on CUDA in bf16, memory-efficient attention in fp32) and `kernel:fla`
(flash-linear-attention's chunk_simple_gla, CUDA only). They are the floors the mixers are measured against; bf16 casts
their inputs.

Each cell is one warm-up run, then the median of --reps timed runs (CUDA synchronised). Peak memory:
  CUDA: growth of torch.cuda.max_memory_allocated over the memory allocated before the cell (parameters, grads,
        inputs, activations, workspaces from the caching allocator; not the CUDA context nor the cache's slack).
  CPU:  each cell runs in a fresh interpreter (--isolate, the CPU default); the growth of its peak resident set
        (VmHWM, see longrec.bench.harness) from a baseline taken after a tiny warm-up of the same variant (so
        library code pages and thread pools are already resident). It counts everything the cell touched,
        allocator slack included.
        Without isolation CPU memory is not measured (a process-wide high-water mark cannot be attributed to a cell).
Out of memory (an exception, or the kernel's OOM killer ending an isolated cell), a cell over --time-limit, or any
other failure is recorded as a status; that variant's larger N are then recorded as skipped. The time limit is checked
between runs (a run is never interrupted in-process); isolated cells are killed after 2 x limit + 60 s.

    python -m longrec.bench.scaling --device cuda --dtype bf16 --level block
    python -m longrec.bench.scaling --device cpu --threads 1 --lengths 128 256 512 1024 --level model
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from longrec.argtypes import positive_float, positive_int, thread_count
from longrec.bench.harness import CellFailed, device_name, peak_rss_mib, run_cell, sync
from longrec.bench.scaling_report import FAILED, markdown_table, plot_scaling, write_csv
from longrec.config import ModelConfig, from_dict, load_config, preset_names
from longrec.errors import LongrecError
from longrec.losses import chunked_ce
from longrec.mixers import MIXERS, build_mixer
from longrec.mixers.base import op_backend
from longrec.model.block import Block
from longrec.model.encoder import SeqEncoder
from longrec.ops import Backend

DEFAULT_LENGTHS = tuple(2**k for k in range(7, 15))  # 128 .. 16384
LEVELS = ("mixer", "block", "model")
KERNELS = ("kernel:sdpa", "kernel:fla")  # raw ops, not models: the floors a mixer is measured against
DTYPES = ("fp32", "bf16")
REFERENCE = "sasrec"  # causal softmax: ratio_to_softmax divides by its time at the same N


@dataclass(frozen=True)
class Cell:
    """One measurement: a variant at one length (JSON-serialisable, for an isolated child process)."""

    variant: str
    level: str = "block"
    N: int = 128
    batch: int = 8
    dim: int = 64
    device: str = "cpu"
    dtype: str = "fp32"
    reps: int = 3
    time_limit_s: float = 120.0
    items: int = 10_000  # catalogue size at model level
    threads: int = 0  # torch intra-op threads on CPU; 0 = torch default


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
    _mixer_args(cfg)  # fail now, not hours into a sweep
    return cfg


def _mixer_args(cfg: ModelConfig) -> Any:
    entry = MIXERS.get(cfg.mixer)
    return from_dict(entry.config, cfg.mixer_args, "model.mixer_args") if entry.config else None


def _causal(cfg: ModelConfig) -> bool:
    return bool(getattr(_mixer_args(cfg), "causal", True))  # mixers without the option (lru, gru) are causal


def default_variants(device: str) -> list[str]:
    """Every preset; on CUDA also `PRESET@fla` for presets whose causal mixer has an op backend."""
    names = preset_names()
    if not device.startswith("cuda"):
        return names
    fla = []
    for p in names:
        cfg = load_config(p).model
        if hasattr(_mixer_args(cfg), "backend") and _causal(cfg):
            fla.append(f"{p}@fla")
    return names + fla


def _autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager[Any]:
    if dtype == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _kernel_workload(cell: Cell, device: torch.device) -> Callable[[], None]:
    """Forward + backward of a raw kernel (KERNELS) on one head of width D: q, k, v [B,N,1,D]."""
    dtype = torch.bfloat16 if cell.dtype == "bf16" else torch.float32
    shape = (cell.batch, cell.N, 1, cell.dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    if cell.variant == "kernel:fla":
        from longrec.ops.linear_attn import fla_chunk_kernel

        kernel = fla_chunk_kernel()

        def attend() -> torch.Tensor:
            return kernel(q=q, k=k, v=v, scale=1.0)[0]  # (B, N, 1, D)
    else:

        def attend() -> torch.Tensor:
            qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, 1, N, D)
            return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)

    def run_kernel() -> None:
        for t in (q, k, v):
            t.grad = None
        attend().float().sum().backward()

    return run_kernel


def _workload(cell: Cell, device: torch.device) -> Callable[[], None]:
    """A closure running one forward + backward of the cell's mixer, block or model on fixed random inputs."""
    if cell.variant in KERNELS:
        return _kernel_workload(cell, device)
    cfg = variant_config(cell.variant, cell.dim, cell.N)
    B, N, D = cell.batch, cell.N, cell.dim
    mask = torch.ones(B, N, dtype=torch.bool, device=device)  # full windows: N real events per row
    if cell.level in ("mixer", "block"):
        mixer = build_mixer(cfg.mixer, D, cfg.heads, cfg.dropout, cfg.mixer_args)
        layer = mixer if cell.level == "mixer" else Block(mixer, D, cfg.ffn_mult, cfg.dropout, cfg.norm_first)
        layer = layer.to(device).train()
        x = torch.randn(B, N, D, device=device, requires_grad=True)
        g = torch.randn(B, N, D, device=device)

        def run_layer() -> None:
            layer.zero_grad(set_to_none=True)
            x.grad = None
            with _autocast(device, cell.dtype):
                y = layer(x, mask)  # (B, N, D)
            (y.float() * g).sum().backward()

        return run_layer
    enc = SeqEncoder(cell.items, cfg).to(device).train()
    items = torch.randint(1, cell.items + 1, (B, N), device=device)
    targets = torch.randint(1, cell.items + 1, (B * N,), device=device)

    def run_model() -> None:
        enc.zero_grad(set_to_none=True)
        with _autocast(device, cell.dtype):
            h = enc(items, mask)  # (B, N, D)
            loss = chunked_ce(h.reshape(B * N, D), targets, enc.item_table())
        loss.backward()

    return run_model


def _maxrss() -> int:
    """Peak resident set of this process image in bytes (VmHWM: ru_maxrss would start at the parent's peak)."""
    return int(peak_rss_mib() * 2**20)


def _result(status: str, ms: float | None = None, peak_mib: float | None = None, note: str = "") -> dict[str, Any]:
    return {"status": status, "ms": ms, "peak_mib": peak_mib, "note": note}


def _failure(e: BaseException) -> dict[str, Any]:
    text = str(e).strip()
    oom = isinstance(e, (torch.OutOfMemoryError, MemoryError)) or any(
        s in text.lower() for s in ("out of memory", "not enough memory", "can't allocate memory")
    )
    line = text.splitlines()[0] if text else ""
    return _result("oom" if oom else "error", note=f"{type(e).__name__}: {line}"[:200])


def measure(cell: Cell, rss: bool = False) -> dict[str, Any]:
    """Run one cell in this process -> {status, ms (median), peak_mib, note}; failures become statuses.
    rss: measure CPU memory as peak-RSS growth (meaningful only in a fresh process, see measure_isolated)."""
    device = torch.device(cell.device)
    try:
        return _measure(cell, device, rss)
    except Exception as e:  # noqa: BLE001  # one broken variant must not end a sweep of hours: it becomes a row
        return _failure(e)
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _measure(cell: Cell, device: torch.device, rss: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _maxrss()
    run = _workload(cell, device)
    times: list[float] = []
    start = time.perf_counter()
    for i in range(cell.reps + 1):  # run 0 warms up (allocator, kernels, autotuning) and is not counted
        elapsed = time.perf_counter() - start
        if i and elapsed > cell.time_limit_s:
            return _result("timeout", note=f"{i} of {cell.reps + 1} runs took {elapsed:.1f} s > {cell.time_limit_s} s")
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        if i:
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak: int | None = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _maxrss() - base if rss else None
    return _result("ok", 1e3 * statistics.median(times), None if peak is None else peak / 2**20)


def measure_isolated(cell: Cell) -> dict[str, Any]:
    """Run one cell in a fresh interpreter: attributable CPU memory, a hard time limit, survives the OOM killer."""
    try:  # 60 s: interpreter start-up and the tiny warm-up
        return run_cell("longrec.bench.scaling", asdict(cell), 2 * cell.time_limit_s + 60)
    except CellFailed as e:
        return _result(e.status, note=e.note)


def _child(spec: str) -> None:
    """Body of an isolated cell: warm up on a tiny input, then measure; prints one JSON line."""
    cell = Cell(**json.loads(spec))
    if cell.threads:
        torch.set_num_threads(cell.threads)
    measure(replace(cell, N=min(cell.N, 8), batch=1, reps=1))
    print(json.dumps(measure(cell, rss=cell.device.startswith("cpu"))), flush=True)


def run_scaling(
    presets_or_mixers: Sequence[str] | None = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    batch: int = 8,
    dim: int = 64,
    device: str = "cpu",
    dtype: str = "fp32",
    level: str = "block",
    reps: int = 3,
    time_limit_s: float = 120.0,
    out_dir: Path | str = Path("runs/bench/scaling"),
    *,
    items: int = 10_000,
    threads: int = 0,
    isolate: bool | None = None,
) -> list[dict[str, Any]]:
    """Measure every variant (default: every preset, plus `@fla` variants on CUDA) at every N; write
    `scaling-LEVEL-DEVICE-DTYPE.csv` and `...-time.png` / `...-memory.png` in out_dir; return the rows.
    The causal softmax reference (sasrec) is added when no variant is one. isolate: a fresh process per cell
    (default on CPU, where it is the only way to measure memory)."""
    if level not in LEVELS or dtype not in DTYPES or reps < 1 or min(lengths) < 1:
        raise LongrecError(f"scaling: need level in {LEVELS}, dtype in {DTYPES}, reps >= 1, lengths >= 1")
    dev = torch.device(device)
    variants = list(presets_or_mixers or default_variants(device))
    if "kernel:fla" in variants and dev.type != "cuda":
        raise LongrecError("scaling: kernel:fla is flash-linear-attention's CUDA kernel; drop it or use --device cuda")
    configs = {v: variant_config(v, dim, max(lengths)) for v in variants if v not in KERNELS}
    ref = next(
        (
            v
            for v in variants
            if v in configs and "@" not in v and configs[v].mixer == "softmax" and _causal(configs[v])
        ),
        None,
    )
    if ref is None:
        ref = REFERENCE
        configs[ref] = variant_config(ref, dim, max(lengths))
    variants = list(dict.fromkeys([ref, *variants]))  # the reference first, in the tables and the legend
    isolate = dev.type == "cpu" if isolate is None else isolate
    if threads and not isolate:
        torch.set_num_threads(threads)
    common = {
        "level": level,
        "batch": batch,
        "dim": dim,
        "device": device_name(dev),
        "dtype": dtype,
        "threads": threads or torch.get_num_threads(),
        "memory": "cuda_max_allocated" if dev.type == "cuda" else "cpu_peak_rss_growth" if isolate else "none",
    }
    stem = f"scaling-{level}-{dev.type}-{dtype}"
    failed_at: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for N in sorted(set(lengths)):
        for v in variants:
            cell = Cell(v, level, N, batch, dim, device, dtype, reps, time_limit_s, items, threads)
            if v in failed_at:
                res = _result("skipped", note=failed_at[v])
            else:
                res = measure_isolated(cell) if isolate else measure(cell)
                if res["status"] in FAILED:
                    failed_at[v] = f"{res['status']} at N={N}"
            mixer = v if v in KERNELS else configs[v].mixer
            rows.append({"variant": v, "mixer": mixer, "N": N, **common, **res, "ratio_to_softmax": None})
            print(_progress(rows[-1]), file=sys.stderr, flush=True)
        write_csv(rows, Path(out_dir), stem)  # after every N: a sweep stopped from outside keeps what it measured
    ref_ms = {r["N"]: r["ms"] for r in rows if r["variant"] == ref and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["N"] in ref_ms:
            r["ratio_to_softmax"] = r["ms"] / ref_ms[r["N"]]
    write_csv(rows, Path(out_dir), stem)
    plot_scaling(rows, Path(out_dir), stem)
    return rows


def _progress(r: dict[str, Any]) -> str:
    ms = "" if r["ms"] is None else f" {r['ms']:.2f} ms"
    mib = "" if r["peak_mib"] is None else f" {r['peak_mib']:.1f} MiB"
    return f"{r['variant']:>20} N={r['N']:<6} {r['status']}{ms}{mib} {r['note']}".rstrip()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", help="presets or mixers, optionally @BACKEND (default: every preset)")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=list(DEFAULT_LENGTHS), help="sequence lengths N")
    p.add_argument("--batch", type=positive_int, default=8, help="batch size B")
    p.add_argument("--dim", type=positive_int, default=64, help="model dim D")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=DTYPES, default="fp32", help="bf16 = autocast, as in training")
    p.add_argument(
        "--level", choices=LEVELS, default="block", help="the mixer alone, one block, or the whole model with its loss"
    )
    p.add_argument("--reps", type=positive_int, default=3,
                   help="timed runs per cell after one warm-up; the median is reported")
    p.add_argument("--time-limit", type=positive_float, default=120.0,
                   help="seconds per cell before it counts as a timeout")
    p.add_argument("--out", type=Path, default=Path("runs/bench/scaling"), help="directory for the CSV and PNGs")
    p.add_argument("--items", type=positive_int, default=10_000, help="catalogue size at model level")
    p.add_argument("--threads", type=thread_count, default=0, help="torch intra-op threads on CPU (0: torch default)")
    p.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a fresh process per cell (default: on CPU, where it is how memory is measured)",
    )
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: the body of an isolated cell
    args = p.parse_args(argv)
    if args.cell:
        _child(args.cell)
        return
    try:
        rows = run_scaling(
            args.variants,
            args.lengths,
            args.batch,
            args.dim,
            args.device,
            args.dtype,
            args.level,
            args.reps,
            args.time_limit,
            args.out,
            items=args.items,
            threads=args.threads,
            isolate=args.isolate,
        )
    except LongrecError as e:
        p.error(str(e))
    print(markdown_table(rows))
    print(
        f"\nwrote {args.out}/scaling-{args.level}-{torch.device(args.device).type}-{args.dtype}.csv, -time.png, "
        "-memory.png"
    )


if __name__ == "__main__":
    main()
