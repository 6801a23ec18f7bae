"""Peer comparison (issue 6): RecBole 1.2.1's SASRec against longrec's SASRec on ML-1M, on the same machine.

RecBole is an optional peer, never a dependency: `--setup` installs it into a venv of its own (numpy < 2, pandas < 3,
ray for its quick_start), and its own trainer runs there in a subprocess (benchmarks.recbole_driver, which at the
top imports only the standard library and small longrec modules). Validation NDCG@10 is computed on
longrec's protocol (history masked), which RecBole 1.2.1 does not apply to sequential models. longrec's side is read
from a finished (or running) `longrec train` run directory.

    python -m benchmarks.peer_recbole --setup   # from the repository root, as every command below
    python -m benchmarks.peer_recbole --max-steps 40 --threads 1 --longrec-run runs/ml-1m-sasrec  # bounded
    python -m benchmarks.peer_recbole --epochs 200 --longrec-run runs/ml-1m-sasrec                # full
    python -m benchmarks.peer_recbole --report-only --longrec-run runs/ml-1m-sasrec  # reprint, RecBole not rerun
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import benchmarks
import longrec
from longrec.config import ExperimentConfig, load_config
from longrec.errors import ConfigError, DataError
from longrec.train.report import read_epochs, time_to

PIP_STEPS = (
    ["torch==2.13.0"],  # first and pinned: the CPU wheel on local disk; a loose pin pulls a multi-GB CUDA build
    # recbole 1.2.1 fails under numpy 2, its fillna(inplace=True) does nothing under pandas 3 (copy-on-write), and
    # its quick_start imports ray (<= 2.6.3), which imports pkg_resources, gone from setuptools 81 on
    ["recbole==1.2.1", "numpy<2", "pandas<3", "ray", "setuptools<81"],
)
DATASET = "ml-1m"  # RecBole's dataset name: the atomic file is DATA_DIR/ml-1m/ml-1m.inter


@dataclass(frozen=True)
class PeerConfig:
    batch: int = field(default=128, metadata={"help": "RecBole rows per step (128 = longrec's batch; RecBole's: 2048)"})
    threads: int = field(default=1, metadata={"help": "torch intra-op threads of the RecBole process"})
    max_steps: int = field(default=0, metadata={"help": "bounded mode: stop after this many steps; 0 = full mode"})
    warmup: int = field(default=3, metadata={"help": "bounded mode: first steps run but not timed"})
    epochs: int = field(default=0, metadata={"help": "full mode: epochs (0 = the config's), each then validated"})
    time_limit: float = field(default=0.0, metadata={"help": "seconds of training, checked between steps/epochs"})
    valid: bool = field(default=False, metadata={"help": "bounded mode: also time one validation pass"})
    target: float = field(default=0.0, metadata={"help": "full mode: stop at this valid NDCG@10 (default: the "
                                                          "--longrec-run's best); 'time to' uses it"})
    gpu: bool = field(default=False, metadata={"help": "let RecBole use a GPU (its use_gpu)"})


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(user, item) tokens of a SASRec-style `user item` file (.gz too); file order is each user's time order."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        rows = [line.split() for line in f]
    bad = next((n for n, r in enumerate(rows, 1) if len(r) == 1), None)
    if bad or not any(rows):
        raise DataError(f"{path}:{bad}: expected 'user item'" if bad else f"{path}: no interactions")
    return [(r[0], r[1]) for r in rows if r]


def write_inter(pairs: list[tuple[str, str]], out: Path) -> Path:
    """RecBole atomic file with timestamp = the line's position, so RecBole's sort by (user, time) keeps file order."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        f.write("user_id:token\titem_id:token\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{t}\n" for t, (u, i) in enumerate(pairs))
    return out


def epoch_sizes(pairs: list[tuple[str, str]], max_len: int) -> dict[str, int]:
    """Rows and targets of one training epoch under leave-one-out (train = s[:-2], k = len(s) - 2 events).

    RecBole: one row per prefix s[:j] -> s[j], j = 1 .. k-1, one target each. longrec: one row per user with
    k >= 2, whose last min(k - 1, max_len) positions are targets."""
    ks = [n - 2 for n in Counter(u for u, _ in pairs).values()]
    return {"users": len(ks), "recbole_rows": sum(max(k - 1, 0) for k in ks),
            "longrec_rows": sum(k >= 2 for k in ks), "longrec_targets": sum(min(k - 1, max_len) for k in ks if k >= 2)}


def recbole_config(cfg: ExperimentConfig, peer: PeerConfig, data_dir: Path) -> dict[str, Any]:
    """RecBole settings equal to longrec's config `cfg`; ConfigError where RecBole's SASRec has no equivalent."""
    m, t = cfg.model, cfg.train
    unsupported = [key for key, bad in (
        ("model.mixer", m.mixer != "softmax"), ("model.mixer_args.causal", not m.mixer_args.get("causal")),
        ("model.pos", m.pos != "learned"), ("model.ffn_mult", m.ffn_mult < 1), ("train.loss", t.loss != "ce"),
        ("train.objective", t.objective != "next_item"), ("eval.sampled", cfg.eval.sampled != "none")) if bad]
    if unsupported:
        raise ConfigError(f"{cfg.name}: RecBole's SASRec has no equivalent of {', '.join(unsupported)}")
    return {
        "data_path": str(data_dir.resolve()), "checkpoint_dir": "saved", "seed": cfg.seed, "reproducibility": True,
        "use_gpu": peer.gpu, "worker": 0, "show_progress": False,
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]}, "TIME_FIELD": "timestamp",
        "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",  # the file is already 5-core
        "MAX_ITEM_LIST_LENGTH": m.max_len, "n_layers": m.layers, "n_heads": m.heads, "hidden_size": m.dim,
        "inner_size": m.ffn_mult * m.dim, "hidden_dropout_prob": m.dropout, "hidden_act": "gelu",
        "attn_dropout_prob": float(m.mixer_args.get("attn_dropout", 0.0)), "loss_type": "CE",
        "train_neg_sample_args": None,  # CE over the whole catalogue: no sampled negatives
        "learner": "adamw", "learning_rate": t.lr, "weight_decay": t.weight_decay,
        "clip_grad_norm": {"max_norm": t.grad_clip} if t.grad_clip > 0 else None,
        "train_batch_size": peer.batch, "eval_batch_size": cfg.eval.batch_size,
        "epochs": peer.epochs or t.epochs, "stopping_step": t.patience, "eval_step": 1,
        # leave-one-out: per user the last row is test, the one before valid; rows sorted by time ("TO")
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "metrics": ["NDCG", "Recall", "MRR"], "topk": [10], "valid_metric": "NDCG@10",
        "mask_history": cfg.eval.mask_history,  # not a RecBole key: read by the driver's own evaluation
    }


def driver_command(venv: Path, job: Path, threads: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the driver subprocess (benchmarks.recbole_driver); longrec and benchmarks reach it
    through a PYTHONPATH of two links."""
    shim = job.parent / "pythonpath"
    shim.mkdir(parents=True, exist_ok=True)
    for package in (longrec, benchmarks):  # only these two, never this venv's numpy 2
        link = shim / package.__name__
        if not link.exists():
            link.symlink_to(Path(str(package.__file__)).resolve().parent)
    env = {**os.environ, "PYTHONPATH": str(shim.resolve()), "OMP_NUM_THREADS": str(threads)}
    py = venv.absolute() / "bin" / "python"  # not resolve(): a venv's python is a symlink that must stay one
    return [str(py), "-m", "benchmarks.recbole_driver", str(job.resolve())], env


def setup(venv: Path) -> None:
    """Create `venv` (if missing) and install RecBole 1.2.1 and its pins into it."""
    py = venv / "bin" / "python"
    steps = [] if py.exists() else [[sys.executable, "-m", "venv", str(venv)]]
    steps += [[str(py), "-m", "pip", "install", *pkgs] for pkgs in PIP_STEPS]
    steps.append([str(py), "-c", "import recbole.quick_start, numpy; print(recbole.__version__, numpy.__version__)"])
    for argv in steps:
        print("+", " ".join(argv), flush=True)
        subprocess.run(argv, check=True)


def longrec_side(run: Path) -> dict[str, Any]:
    """Per-epoch valid NDCG@10 and seconds of a longrec run directory, with its device and peak RSS if finished."""
    res = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    cfg = load_config(str(run / "config.yaml"))
    return {"run": str(run), "finished": bool(res), "batch": cfg.train.batch_size,
            "device": res.get("device", f"{cfg.train.device}, train.threads={cfg.train.threads}"),
            "peak_rss_mib": res.get("peak_memory", {}).get("cpu_rss_mib"), "epochs": read_epochs(run)}


def _curve(epochs: list[dict[str, Any]], rows: int, targets: int, target: float | None) -> dict[str, str]:
    """Table cells of a side measured epoch by epoch ({epoch, seconds, valid: {ndcg@10}} records)."""
    sec = statistics.median(e["seconds"] for e in epochs)
    best = max(epochs, key=lambda e: e["valid"]["ndcg@10"])
    reached = time_to(epochs, target) if target is not None else None
    return {"rate": f"{rows / sec:,.1f} ({targets / sec:,.0f})", "epoch": f"{sec:,.1f} s (median, incl. validation)",
            "best": f"{best['valid']['ndcg@10']:.4f} (epoch {best['epoch']} of {len(epochs)})",
            "to": "–" if target is None else "not reached" if reached is None else f"{reached / 60:.1f} min"}


def table(peer: dict[str, Any], ours: dict[str, Any] | None, sizes: dict[str, int], target: float | None) -> str:
    """Markdown table, longrec beside RecBole; '–' where a figure was not measured."""
    cols: list[dict[str, str]] = [{}, {}]
    if ours and ours["epochs"]:
        rss = ours["peak_rss_mib"]
        cols[0] = {"dev": ours["device"], "batch": f"{ours['batch']} sequences",
                   "rows": f"{sizes['longrec_rows']:,} ({sizes['longrec_targets']:,})",
                   "rss": "– (run unfinished)" if rss is None else f"{rss:,.0f}"}
        cols[0] |= _curve(ours["epochs"], sizes["longrec_rows"], sizes["longrec_targets"], target)
    n = peer["train_rows"]
    cols[1] = {"dev": f"cpu, {peer['threads']} thread(s)", "batch": f"{peer['batch']} prefix rows",
               "rows": f"{n:,} ({n:,})", "rss": f"{peer['peak_rss_mib']:,.0f}"}
    if peer["mode"] == "full":
        cols[1] |= _curve(peer["epochs"], n, n, target)
    else:
        est = peer["epoch_train_seconds_est"] + peer.get("valid_seconds", 0.0)
        cols[1] |= {"rate": f"{peer['rows_per_s']:,.1f} (same)", "best": "– (bounded run)", "to": "– (bounded run)",
                    "epoch": f"{est / 3600:.2f} h, extrapolated from {peer['steps'] - peer['warmup']} timed steps"
                    + (" + one validation" if "valid_seconds" in peer else " (training only)")}
    names = {"dev": "device", "batch": "batch", "rows": "training rows (targets) per epoch",
             "rate": "rows/s (targets/s)", "epoch": "time per epoch", "rss": "peak RSS MiB",
             "best": "best valid NDCG@10", "to": f"time to valid NDCG@10 ≥ {target or 0:.4f}"}
    lines = ["| | longrec SASRec | RecBole 1.2.1 SASRec |", "|---|---|---|"]
    return "\n".join(lines + [f"| {n} | {cols[0].get(k, '–')} | {cols[1].get(k, '–')} |" for k, n in names.items()])


def compare(args: argparse.Namespace) -> str:
    """Convert the data, run RecBole in its venv, read the longrec run; the report, also saved as JSON in --work."""
    if not (args.venv / "bin" / "python").exists():
        raise SystemExit(f"{args.venv}: no RecBole venv; run `python -m benchmarks.peer_recbole --setup` first")
    cfg = load_config(args.config)
    ours = longrec_side(args.longrec_run) if args.longrec_run else None
    target = args.target or (max((e["valid"]["ndcg@10"] for e in ours["epochs"]), default=None) if ours else None)
    peer = PeerConfig(**{f.name: getattr(args, f.name) for f in fields(PeerConfig)} | {"target": target or 0.0})
    if args.data is None:
        from longrec.data.datasets import resolve

        args.data = resolve(cfg.data.name, fetch=False)[0]
    pairs = read_pairs(args.data)
    write_inter(pairs, args.work / "data" / DATASET / f"{DATASET}.inter")
    sizes = epoch_sizes(pairs, cfg.model.max_len)
    job, out = args.work / "job.json", (args.work / "result.json").resolve()
    job.write_text(json.dumps({"peer": asdict(peer), "recbole": recbole_config(cfg, peer, args.work / "data"),
                               "out": str(out), "log": str((args.work / "epochs.jsonl").resolve())}, indent=1))
    t0 = time.perf_counter()
    cmd, env = driver_command(args.venv, job, peer.threads)
    subprocess.run(cmd, cwd=args.work, env=env, check=True)
    res = json.loads(out.read_text()) | {"wall_seconds": time.perf_counter() - t0}
    report = {"recbole": res, "longrec": ours, "sizes": sizes, "target": target, "config": args.config}
    (args.work / "peer-recbole.json").write_text(json.dumps(report, indent=1))
    head = (f"RecBole subprocess {res['wall_seconds']:.0f} s, of which data preparation {res['prep_seconds']:.0f} s"
            f" (RSS after it {res['rss_after_data_mib']:,.0f} MiB)")
    if res["mode"] == "bounded":
        head += (f"; {res['steps']} steps, the first {res['warmup']} untimed, median step"
                 f" {res['step_seconds_median']:.2f} s; {res['steps_per_epoch']:,} steps per epoch")
    hint = "" if ours else f"no --longrec-run; make one: longrec train {args.config} --run-dir runs/ml-1m-sasrec\n"
    return f"{hint}{head}\n\n{table(res, ours, sizes, target)}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setup", action="store_true", help="create --venv and install RecBole 1.2.1 into it, then exit")
    p.add_argument("--venv", type=Path, default=Path("runs/peer/recbole-venv"), help="RecBole's own venv")
    p.add_argument("--work", type=Path, default=Path("runs/peer/recbole"), help="atomic file, job, results")
    p.add_argument("--config", default="configs/ml-1m-sasrec.yaml", help="the longrec config that RecBole mirrors")
    p.add_argument("--data", type=Path, help="SASRec 'user item' file (.gz too); default: the config's dataset")
    p.add_argument("--longrec-run", type=Path, help="longrec run directory (metrics.jsonl) to compare against")
    p.add_argument("--report-only", action="store_true", help="reprint the table of --work's last measurement")
    for f in fields(PeerConfig):
        kw = {"action": "store_true"} if f.type == "bool" else {"type": type(f.default), "default": f.default}
        p.add_argument("--" + f.name.replace("_", "-"), help=f.metadata["help"], **kw)
    args = p.parse_args(argv)
    if args.setup:
        setup(args.venv)
    elif args.report_only:  # the last measurement, against the longrec run as it is now
        old = json.loads((args.work / "peer-recbole.json").read_text())
        ours = longrec_side(args.longrec_run) if args.longrec_run else old["longrec"]
        target = args.target or (max(e["valid"]["ndcg@10"] for e in ours["epochs"]) if ours else None)
        print(table(old["recbole"], ours, old["sizes"], target))
    else:
        print(compare(args))


if __name__ == "__main__":
    main()
