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
between runs (a run is never interrupted in-process); isolated cells are killed after 2 x limit + 60 s. Ratios
divide by sasrec's time (causal softmax), always measured first.

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

from longrec.argtypes import positive_int
from longrec.bench import harness
from longrec.bench.scaling_cell import (
    DTYPES,
    KERNELS,
    LEVELS,
    REFERENCE,
    Cell,
    causal,
    measure,
    measure_isolated,
    result,
    variant_config,
)
from longrec.config import load_config, preset_names
from longrec.errors import LongrecError
from longrec.mixers.base import mixer_config
from longrec.plots import loglog_by_variant

DEFAULT_LENGTHS = tuple(2**k for k in range(7, 15))  # 128 .. 16384
FAILED = ("oom", "timeout", "error")  # statuses after which a variant's larger N are skipped
COLUMNS = tuple(
    "variant mixer level N batch dim device dtype threads status ms peak_mib ratio_to_softmax memory note".split()
)


def default_variants(device: str) -> list[str]:
    """Every preset; on CUDA also `PRESET@fla` for presets whose causal mixer has an op backend."""
    names = preset_names()
    if not device.startswith("cuda"):
        return names
    fla = [p for p in names if hasattr(mixer_config((m := load_config(p).model).mixer, m.mixer_args), "backend")
           and causal(m)]
    return names + [f"{p}@fla" for p in fla]


def run_scaling(
    presets_or_mixers: Sequence[str] | None = None,
    lengths: Sequence[int] = DEFAULT_LENGTHS,
    spec: Cell | None = None,
    out_dir: Path | str = Path("runs/bench/scaling"),
    isolate: bool | None = None,
) -> list[dict[str, Any]]:
    """Measure sasrec and every variant (default: every preset, plus `@fla` variants on CUDA) at every N, the other
    fields of each cell as in spec (default Cell's); write `scaling-LEVEL-DEVICE-DTYPE.csv` and `...-time.png` /
    `...-memory.png` in out_dir; return the rows. isolate: a fresh process per cell (default on CPU, where it is the
    only way to measure memory)."""
    spec = spec or Cell("")
    if spec.level not in LEVELS or spec.dtype not in DTYPES or spec.reps < 1 or min(lengths) < 1:
        raise LongrecError(f"scaling: need level in {LEVELS}, dtype in {DTYPES}, reps >= 1, lengths >= 1")
    dev = torch.device(spec.device)
    variants = list(presets_or_mixers or default_variants(spec.device))
    if "kernel:fla" in variants and dev.type != "cuda":
        raise LongrecError("scaling: kernel:fla is flash-linear-attention's CUDA kernel; drop it or use --device cuda")
    variants = list(dict.fromkeys([REFERENCE, *variants]))  # the reference first, in the tables and the legend
    mixers = {v: v if v in KERNELS else variant_config(v, spec.dim, max(lengths)).mixer for v in variants}
    isolate = dev.type == "cpu" if isolate is None else isolate
    if spec.threads and not isolate:
        torch.set_num_threads(spec.threads)
    memory = "cuda_max_allocated" if dev.type == "cuda" else "cpu_peak_rss_growth" if isolate else "none"
    common = {"level": spec.level, "batch": spec.batch, "dim": spec.dim, "device": harness.device_name(dev),
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
            rows.append({"variant": v, "mixer": mixers[v], "N": N, **common, **res, "ratio_to_softmax": None})
            ms = "" if res["ms"] is None else f" {res['ms']:.2f} ms"
            mib = "" if res["peak_mib"] is None else f" {res['peak_mib']:.1f} MiB"
            print(f"{v:>20} N={N:<6} {res['status']}{ms}{mib} {res['note']}".rstrip(), file=sys.stderr, flush=True)
        harness.write_csv(out / f"{stem}.csv", rows, COLUMNS)  # a sweep stopped from outside keeps what it has
    _finish(rows, out, stem)
    return rows


def _finish(rows: list[dict[str, Any]], out: Path, stem: str) -> None:
    """The ratios to the reference at each N, then the CSV and the time and memory plots (log-log, vs N)."""
    ref_ms = {r["N"]: r["ms"] for r in rows if r["variant"] == REFERENCE and r["status"] == "ok"}
    for r in rows:
        if r["status"] == "ok" and r["N"] in ref_ms:
            r["ratio_to_softmax"] = r["ms"] / ref_ms[r["N"]]
    harness.write_csv(out / f"{stem}.csv", rows, COLUMNS)
    fails = {r["variant"]: r for r in reversed(rows) if r["status"] in FAILED}  # the first failure of each
    labels = {v: f"{v} ({r['status']} at {r['N']})" for v, r in fails.items()}
    for name, panels in (("time", [("ms", "ms (median)", ""), ("ratio_to_softmax", "time / causal softmax", "")]),
                         ("memory", [("peak_mib", f"peak MiB ({rows[0]['memory']})", "")])):
        loglog_by_variant(out / f"{stem}-{name}.png", rows, ("N", "sequence length N"), panels, _title(rows[0]), labels)


def _title(r0: dict[str, Any]) -> str:
    return ", ".join([f"{r0['level']} forward+backward", r0["device"], r0["dtype"], f"B={r0['batch']}",
                     f"D={r0['dim']}", f"threads={r0['threads']}"])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Variants x N tables of time and memory. CPU shows time only as the ratio to causal softmax (same run);
    CUDA shows median ms with the ratio."""
    cpu = rows[0]["device"].startswith("cpu")

    def fmt_time(r: dict[str, Any]) -> str:
        if r["status"] != "ok":
            return str(r["status"])
        ratio = "" if r["ratio_to_softmax"] is None else f"{r['ratio_to_softmax']:.2f}x"
        return ratio if cpu else f"{r['ms']:.2f} ({ratio})" if ratio else f"{r['ms']:.2f}"

    def fmt_mem(r: dict[str, Any]) -> str:
        return r["status"] if r["status"] != "ok" else "" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"

    out = [_title(rows[0])]
    lengths = [f"N={n}" for n in sorted({r["N"] for r in rows})]
    for what, fmt in (("time / causal softmax" if cpu else "ms (x causal softmax)", fmt_time),
                      (f"peak MiB ({rows[0]['memory']})", fmt_mem)):
        table = {v: {what: v} for v in dict.fromkeys(r["variant"] for r in rows)}
        for r in rows:
            table[r["variant"]][f"N={r['N']}"] = fmt(r)
        out += ["", harness.markdown(list(table.values()), [what, *lengths])]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", help="presets or mixers, optionally @BACKEND (default: every preset)")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=list(DEFAULT_LENGTHS), help="sequence lengths N")
    harness.add_options(p, Cell)
    p.set_defaults(device="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="a fresh process per cell (default: on CPU, where it is how memory is measured)")
    p.add_argument("--out", type=Path, default=Path("runs/bench/scaling"), help="directory for the CSV and PNGs")
    args = p.parse_args(argv)
    spec = harness.options(Cell, args, variant="")
    try:
        rows = run_scaling(args.variants, args.lengths, spec, args.out, args.isolate)
    except LongrecError as e:
        p.error(str(e))
    print(markdown_table(rows))
    print(f"\nwrote {args.out}/scaling-{spec.level}-{torch.device(spec.device).type}-{spec.dtype}.csv, -time.png, "
          "-memory.png")


if __name__ == "__main__":
    main()
