"""The parser of `longrec`'s command line: one function per subcommand (cli.py dispatches on its name)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from longrec import argtypes

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

RUN_DIR_HELP = "a run directory (longrec train --run-dir)"
BENCHES = {"scaling": "scaling", "stream-latency": "stream_latency", "loadtest": "loadtest",
           "window-sweep": "window_sweep"}  # longrec.bench's modules but harness and scaling_cell
DESCRIPTION = "Command line: `longrec data|synth|list|train|tune|eval|recommend|export|report|plot|bench|serve ...`"


def build_parser() -> argparse.ArgumentParser:
    """`longrec` and its subcommands; args.command names the one given, args.parser is its parser."""
    from longrec import __version__

    p = argparse.ArgumentParser(prog="longrec", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"longrec {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in ADDERS.values():  # the order of `longrec --help`
        add(sub)
    for sp in sub.choices.values():  # an unrecognised argument is reported by the subcommand it was given to
        sp.set_defaults(parser=sp)
    return p


def _data(sub: Subparsers) -> None:
    d = sub.add_parser("data", help="prepare a dataset and print its statistics")
    d.add_argument("action", choices=["prepare", "info"], help="prepare: build the cached corpus; info: print stats")
    d.add_argument("dataset", help="a named dataset (longrec list datasets) or a path to a log file")
    d.add_argument("--format", default="auto", help="auto|pairs|lines|recbole|grouplens|csv|tsv|parquet, or a named "
                   "dataset's format: user-problem-skill-correct|gowalla-tsv|user-item-minute|jodie|lastfm-1k|kuairand|"
                   "movielens-csv")
    d.add_argument("--user-col", default="user", help="user column (csv/tsv/parquet)")
    d.add_argument("--item-col", default="item", help="item column (csv/tsv/parquet)")
    d.add_argument("--time-col", default="", help="timestamp column (csv/tsv/parquet); empty = file order")
    d.add_argument("--dedup", action="store_true", help="drop repeated (user, item) pairs")
    d.add_argument("--kcore", type=argtypes.non_negative_int, default=0, help="iterative k-core filter (0 = off)")
    d.add_argument("--no-cache", action="store_true", help="neither read nor write the corpus cache")


def _synth(sub: Subparsers) -> None:
    sy = sub.add_parser("synth", help="write a seeded synthetic log of long histories (docs/BENCHMARKS.md)")
    sy.add_argument("out", help="pairs file to write (.gz to compress); OUT.json gets the parameters")
    sy.add_argument("rest", nargs=argparse.REMAINDER, help="the generator's options (longrec synth OUT --help)")


def _list(sub: Subparsers) -> None:
    ls = sub.add_parser("list", help="print registered mixers, presets or datasets, one a line")
    ls.add_argument("what", choices=["mixers", "presets", "datasets"], help="what to list")


def _train(sub: Subparsers) -> None:
    t = sub.add_parser("train", help="train a model and evaluate it on the test split")
    t.add_argument("config", help="a preset name (longrec list presets) or a YAML file")
    t.add_argument("overrides", nargs="*", help="config overrides such as train.lr=0.001 model.layers=2")
    t.add_argument("--run-dir", default="", help="where to write the run (default: RUNS_ROOT/<name>-<dataset>)")
    t.add_argument("--runs-root", default="runs", help="parent of run directories")
    t.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last epoch")
    t.add_argument("--distributed", action="store_true",
                   help="DDP over the processes of torchrun (implied when RANK, WORLD_SIZE, LOCAL_RANK are set)")


def _tune(sub: Subparsers) -> None:
    tu = sub.add_parser("tune", help="search a config's hyperparameters on the validation split (Optuna)",
                        description="TPE sampling (seeded), median pruning on the validation curve, the study in an "
                        "RDB storage: an interrupted tune resumes when run again, and several processes (or "
                        "machines, with a shared --storage) may work on one study. Each trial is a run directory "
                        "OUT/trials/NNN trained with eval.test=false and its own seed; the test split is not "
                        "evaluated. Writes OUT/trials.md and OUT/best.yaml (a config longrec train accepts).")
    tu.add_argument("config", help="a preset name (longrec list presets) or a YAML file: what every trial starts from")
    tu.add_argument("overrides", nargs="*", help="config overrides for every trial, such as data.name=ml-100k")
    tu.add_argument("--space", required=True, help="search space YAML: dotted config keys to distributions, e.g. "
                    "'train.lr: {log_uniform: [1e-4, 1e-2]}' (uniform, log_uniform, int, choice)")
    tu.add_argument("--trials", type=argtypes.positive_int, required=True,
                    help="finished (complete or pruned) trials the study ends with, counting earlier runs and other "
                    "workers")
    tu.add_argument("--time-budget-min", type=argtypes.non_negative_float, default=0.0,
                    help="start no trial after this many minutes (the running one finishes); 0 = none")
    tu.add_argument("--storage", default="", help="the study's RDB URL, e.g. sqlite:///study.db or "
                    "postgresql://host/db (default sqlite:///OUT/study.db)")
    tu.add_argument("--study", default="", help="the study's name in the storage (default the config's name)")
    tu.add_argument("--out", default="", help="directory of the trials, trials.md and best.yaml "
                    "(default runs/tune/<name>-<dataset>)")
    tu.add_argument("--final", action="store_true",
                    help="then train best.yaml once into OUT/final, the test split evaluated at its end")
    tu.add_argument("--prune-startup", type=argtypes.non_negative_int, default=4,
                    help="complete trials before any trial is pruned")
    tu.add_argument("--prune-warmup", type=argtypes.non_negative_int, default=10,
                    help="epochs each trial trains before it may be pruned")


def _eval(sub: Subparsers) -> None:
    e = sub.add_parser("eval", help="evaluate a finished run's best checkpoint")
    e.add_argument("run_dir", help=RUN_DIR_HELP)
    e.add_argument("--split", choices=["test", "valid"], default="test")
    e.add_argument("--no-mask-history", action="store_true", help="rank the user's earlier items too")
    e.add_argument("--sampled", choices=["none", "uniform", "popularity"], default="none",
                   help="sampled ranking against N negatives (labelled as such; default full ranking)")
    e.add_argument("--negatives", type=argtypes.positive_int, default=100,
                   help="negatives per user for sampled ranking")


def _recommend(sub: Subparsers) -> None:
    rc = sub.add_parser("recommend", help="top-k recommendations of a run for its users or a new item list",
                        description="Batched top-k with external ids, scored by the run's model or counted baseline, "
                        "the catalogue in chunks of eval.item_chunk items. The user's earlier items are excluded "
                        "unless --keep-history is given or the run was trained with eval.mask_history=false (then "
                        "they are kept). Files are written atomically: a temporary file renamed at the end.")
    rc.add_argument("run_dir", help=RUN_DIR_HELP)
    who = rc.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="all, or a file of external user ids, one a line")
    who.add_argument("--history", nargs="+", metavar="ITEM",
                     help="a new user's items, external ids oldest first; prints rank, item, score lines")
    rc.add_argument("--k", type=int, default=10, help="items per user")
    rc.add_argument("--out", default="", help="PATH.parquet, PATH.csv or PATH.jsonl: columns user, rank, item, score")
    rc.add_argument("--keep-history", action="store_true", help="recommend items the user already has too")
    rc.add_argument("--as-of", choices=["now", "test"], default="now",
                    help="now: from each user's whole history; test: from the test split's input, as longrec eval "
                    "ranks it (its users only)")
    rc.add_argument("--batch-size", type=int, default=0, help="users per batch (default the run's eval.batch_size)")


def _export(sub: Subparsers) -> None:
    ex = sub.add_parser("export", help="export a run's encoder (and its step function when causal) for inference",
                        description="Writes encoder.onnx (items, mask -> h at the newest position; with the time "
                        "channel also a times input, with the repeat head also the repeat_item and repeat_bias "
                        "outputs), step.onnx for causal models (items [+ times] and state in -> h, state out), "
                        "item_table.npy (scores = h @ table.T, row 0 PAD) and export.json (inputs, outputs, state "
                        "names); checks each against torch with onnxruntime.")
    ex.add_argument("run_dir", help=RUN_DIR_HELP)
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="export format (choices: onnx)")
    ex.add_argument("--out", required=True, help="directory to write")


def _report(sub: Subparsers) -> None:
    r = sub.add_parser("report", help="print a markdown table of finished runs (for docs/RESULTS.md)")
    r.add_argument("run_dirs", nargs="+", help="finished run directories, one row each")
    r.add_argument("--target", type=argtypes.fraction, default=None,
                   help="add a column: minutes of training + validation until the valid metric first reached this "
                        "value (e.g. 0.15), from each run's metrics.jsonl")


def _plot(sub: Subparsers) -> None:
    pl = sub.add_parser("plot", help="plot a run's attention weights for one user (softmax and LinRec)")
    pl.add_argument("what", choices=["attention"], help="what to plot")
    pl.add_argument("run_dir", help=RUN_DIR_HELP)
    pl.add_argument("--user", required=True, help="raw user id as in the dataset")
    pl.add_argument("--last", type=argtypes.positive_int, default=30,
                    help="plot the newest LAST events of the test history")
    pl.add_argument("--out", default="", help="PNG path (default RUN_DIR/attention-user-U.png)")


def _bench(sub: Subparsers) -> None:
    b = sub.add_parser("bench", help="benchmarks that print tables and write CSV/PNG (see docs/BENCHMARKS.md)",
                       epilog="Studies and peer comparisons (large catalogue, large log, LRU scan vs loop, RecBole) "
                       "are not installed: `python -m benchmarks.NAME --help` from a checkout of the repository.")
    b.add_argument("which", choices=list(BENCHES),
                   help="scaling: mixers vs N; stream-latency: per-event update time vs history length; loadtest: "
                   "HTTP throughput and kill -9 durability of `longrec serve RUN_DIR`; window-sweep: accuracy of runs "
                   "at several history windows N with paired CIs")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options (--help lists them)")


def _serve(sub: Subparsers) -> None:
    sv = sub.add_parser("serve", help="serve a run over HTTP: streamed per-user state, top-k recommendations")
    sv.add_argument("run_dir", help=RUN_DIR_HELP)
    sv.add_argument("--store", default="", help="sqlite:///state.db, a path, or redis://host:port/db[?prefix=NAME] "
                    "(the redis extra); default RUN_DIR/serve-state.db")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=argtypes.port, default=8000, help="TCP port (default 8000)")
    sv.add_argument("--prefill", action="store_true",
                    help="before serving, store the state of every user of the run's corpus (whole histories)")
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                    help="uvicorn's log level (warning: no access log)")
    sv.add_argument("--workers", type=argtypes.positive_int, default=1,
                    help="server processes on the port, sharing the store (compare-and-set writes); default 1")
    sv.add_argument("--threads", type=argtypes.int_in(1, argtypes.MAX_THREADS), default=1,
                    help="torch threads per worker (default 1)")
    sv.add_argument("--max-batch", type=argtypes.positive_int, default=512,
                    help="events applied per micro-batch: one state update and one store commit (default 512)")
    sv.add_argument("--batch-wait-ms", type=argtypes.non_negative_float, default=0.0,
                    help="how long a micro-batch waits for more requests; 0 (default): those already queued")
    sv.add_argument("--cache-mib", type=argtypes.non_negative_float, default=256.0,
                    help="hot user states kept in memory per worker, in MiB (default 256; 0: none)")


ADDERS = {"data": _data, "synth": _synth, "list": _list, "train": _train, "tune": _tune, "eval": _eval,
          "recommend": _recommend, "export": _export, "report": _report, "plot": _plot, "bench": _bench,
          "serve": _serve}
