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
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from longrec.argtypes import positive_float, positive_int, thread_count
from longrec.bench.harness import device_name
from longrec.bench.scaling_cell import (
    KERNELS,
    REFERENCE,
    Cell,
    causal,
    measure,
    measure_isolated,
    mixer_args,
    result,
    variant_config,
)
from longrec.bench.scaling_report import FAILED, markdown_table, plot_scaling, write_csv
from longrec.config import ModelConfig, load_config, preset_names
from longrec.errors import LongrecError

DEFAULT_LENGTHS = tuple(2**k for k in range(7, 15))  # 128 .. 16384
LEVELS = ("mixer", "block", "model")
DTYPES = ("fp32", "bf16")


def default_variants(device: str) -> list[str]:
    """Every preset; on CUDA also `PRESET@fla` for presets whose causal mixer has an op backend."""
    names = preset_names()
    if not device.startswith("cuda"):
        return names
    return names + [f"{p}@fla" for p in names if _has_fla(load_config(p).model)]


def _has_fla(cfg: ModelConfig) -> bool:
    return hasattr(mixer_args(cfg), "backend") and causal(cfg)


def _reference(variants: list[str], configs: dict[str, ModelConfig], dim: int, max_len: int) -> str:
    """The first variant that is plain causal softmax, else sasrec (added to configs): the ratios' denominator."""
    ref = next((v for v in variants if v in configs and "@" not in v and configs[v].mixer == "softmax"
                and causal(configs[v])), REFERENCE)
    if ref not in configs:
        configs[ref] = variant_config(ref, dim, max_len)
    return ref


def run_scaling(
    presets_or_mixers: Sequence[str] | None = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    spec: Cell | None = None,
    out_dir: Path | str = Path("runs/bench/scaling"),
    isolate: bool | None = None,
) -> list[dict[str, Any]]:
    """Measure every variant (default: every preset, plus `@fla` variants on CUDA) at every N, the other fields of
    each cell as in spec (default Cell's); write `scaling-LEVEL-DEVICE-DTYPE.csv` and `...-time.png` /
    `...-memory.png` in out_dir; return the rows. The causal softmax reference (sasrec) is added when no variant is
    one. isolate: a fresh process per cell (default on CPU, where it is the only way to measure memory)."""
    spec = spec or Cell("")
    if spec.level not in LEVELS or spec.dtype not in DTYPES or spec.reps < 1 or min(lengths) < 1:
        raise LongrecError(f"scaling: need level in {LEVELS}, dtype in {DTYPES}, reps >= 1, lengths >= 1")
    dev = torch.device(spec.device)
    variants = list(presets_or_mixers or default_variants(spec.device))
    if "kernel:fla" in variants and dev.type != "cuda":
        raise LongrecError("scaling: kernel:fla is flash-linear-attention's CUDA kernel; drop it or use --device cuda")
    configs = {v: variant_config(v, spec.dim, max(lengths)) for v in variants if v not in KERNELS}
    ref = _reference(variants, configs, spec.dim, max(lengths))
    variants = list(dict.fromkeys([ref, *variants]))  # the reference first, in the tables and the legend
    isolate = dev.type == "cpu" if isolate is None else isolate
    if spec.threads and not isolate:
        torch.set_num_threads(spec.threads)
    memory = "cuda_max_allocated" if dev.type == "cuda" else "cpu_peak_rss_growth" if isolate else "none"
    common = {"level": spec.level, "batch": spec.batch, "dim": spec.dim, "device": device_name(dev),
              "dtype": spec.dtype, "threads": spec.threads or torch.get_num_threads(), "memory": memory}
    out, stem = Path(out_dir), f"scaling-{spec.level}-{dev.type}-{spec.dtype}"
    failed_at: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    for N in sorted(set(lengths)):
        for v in variants:
            if v in failed_at:
                res = result("skipped", note=failed_at[v])
            else:
                res = (measure_isolated if isolate else measure)(replace(spec, variant=v, N=N))
                if res["status"] in FAILED:
                    failed_at[v] = f"{res['status']} at N={N}"
            mixer = v if v in KERNELS else configs[v].mixer
            rows.append({"variant": v, "mixer": mixer, "N": N, **common, **res, "ratio_to_softmax": None})
            print(_progress(rows[-1]), file=sys.stderr, flush=True)
        write_csv(rows, out, stem)  # after every N: a sweep stopped from outside keeps what it measured
    ref_ms = {r["N"]: r["ms"] for r in rows if r["variant"] == ref and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["N"] in ref_ms:
            r["ratio_to_softmax"] = r["ms"] / ref_ms[r["N"]]
    write_csv(rows, out, stem)
    plot_scaling(rows, out, stem)
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
    p.add_argument("--level", choices=LEVELS, default="block", help="the mixer alone, one block, or the model and loss")
    p.add_argument("--reps", type=positive_int, default=3,
                   help="timed runs per cell after one warm-up; the median is reported")
    p.add_argument("--time-limit", type=positive_float, default=120.0,
                   help="seconds per cell before it counts as a timeout")
    p.add_argument("--out", type=Path, default=Path("runs/bench/scaling"), help="directory for the CSV and PNGs")
    p.add_argument("--items", type=positive_int, default=10_000, help="catalogue size at model level")
    p.add_argument("--threads", type=thread_count, default=0, help="torch intra-op threads on CPU (0: torch default)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="a fresh process per cell (default: on CPU, where it is how memory is measured)")
    args = p.parse_args(argv)
    spec = Cell("", args.level, 0, args.batch, args.dim, args.device, args.dtype, args.reps, args.time_limit,
                args.items, args.threads)
    try:
        rows = run_scaling(args.variants, args.lengths, spec, args.out, args.isolate)
    except LongrecError as e:
        p.error(str(e))
    print(markdown_table(rows))
    stem = f"scaling-{args.level}-{torch.device(args.device).type}-{args.dtype}"
    print(f"\nwrote {args.out}/{stem}.csv, -time.png, -memory.png")


if __name__ == "__main__":
    main()
