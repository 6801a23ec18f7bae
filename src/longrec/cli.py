"""Command line: `longrec data|synth|list|train|tune|eval|recommend|export|report|plot|bench|serve ...`: what each
subcommand does, and main (the parser is longrec.cli_parser)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

from longrec.cli_parser import BENCHES, build_parser
from longrec.errors import LongrecError


def _data(args: argparse.Namespace) -> None:
    from longrec.data.datasets import load_corpus
    from longrec.data.readers import Columns

    corpus = load_corpus(args.dataset, args.format, Columns(args.user_col, args.item_col, args.time_col),
                         args.dedup, args.kcore, use_cache=not args.no_cache)
    s = corpus.stats()
    print(f"dataset       {args.dataset}")
    print(f"users         {s['users']:,}")
    print(f"items         {s['items']:,}")
    print(f"interactions  {s['interactions']:,}")
    print(f"density       {s['density']:.5f}")
    print(f"length        mean {s['len_mean']:.2f}  median {s['len_median']:g}  min {s['len_min']}  max {s['len_max']}")
    print(f"repeats       {100 * s['repeat_any']:.2f}% of events repeat an earlier item of the user, "
          f"{100 * s['repeat_prev']:.2f}% the previous one")
    print(f"timestamps    {'yes' if corpus.times is not None else 'no'}")
    if "time_min" in s:
        print(f"span          {_span(s['time_min'], s['time_max'])}")


def _span(t0: float, t1: float) -> str:
    """First and last time: as UTC dates when they are unix times, else as seconds. Times before 1973 are a
    log's own clock (Foursquare NYC counts from its first check-in): as dates they would read 1970."""
    days = f"({(t1 - t0) / 86400:.1f} days)"
    if t0 < 1e8:
        return f"{t0:,.0f} s .. {t1:,.0f} s {days}"
    iso = [datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for t in (t0, t1)]
    return f"{iso[0]} .. {iso[1]} {days}"


def _list(args: argparse.Namespace) -> None:
    if args.what == "mixers":  # only this listing needs torch
        from longrec.mixers import MIXERS

        print("\n".join(MIXERS.names()))
        return
    from longrec.config import preset_names
    from longrec.data.datasets import DATASETS

    print("\n".join(preset_names() if args.what == "presets" else DATASETS.names()))


def _train(args: argparse.Namespace) -> None:
    from longrec.config import load_config, run_name
    from longrec.train.loop import fit

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs_root) / run_name(cfg)
    fit(cfg, run_dir, resume=args.resume, distributed=args.distributed)


def _tune(args: argparse.Namespace) -> None:
    import importlib.util

    from longrec.config import load_config, run_name

    if importlib.util.find_spec("optuna") is None:
        raise LongrecError("longrec tune needs optuna (pip install 'longrec[tune]')")
    from longrec.tune import TuneOptions, tune

    out = Path(args.out) if args.out else Path("runs") / "tune" / run_name(load_config(args.config, args.overrides))
    tune(args.config, args.overrides, Path(args.space),
         TuneOptions(args.trials, out, args.storage, args.study, args.time_budget_min, args.final,
                     args.prune_startup, args.prune_warmup))


def _eval(args: argparse.Namespace) -> None:
    from longrec.train.run import evaluate_run

    evaluate_run(Path(args.run_dir), split=args.split, mask_history=not args.no_mask_history,
                 sampled=args.sampled, negatives=args.negatives)


def _report(args: argparse.Namespace) -> None:
    from longrec.train.report import table

    print(table([Path(d) for d in args.run_dirs], args.target))


def _plot(args: argparse.Namespace) -> None:
    from longrec.plots import plot_attention

    out = plot_attention(Path(args.run_dir), args.user, args.last, Path(args.out) if args.out else None)
    print(out)


def _bench(args: argparse.Namespace) -> None:
    import importlib

    argv0, sys.argv[0] = sys.argv[0], f"longrec bench {args.which}"  # its usage line names the subcommand
    try:
        importlib.import_module(f"longrec.bench.{BENCHES[args.which]}").main(args.rest)  # only the chosen one's imports
    finally:
        sys.argv[0] = argv0


def _recommend(args: argparse.Namespace) -> None:
    from longrec.recommend import Request, recommend_history, recommend_users

    req = Request(args.k, True if args.keep_history else None, args.as_of, args.batch_size)
    if args.history:
        rows = recommend_history(Path(args.run_dir), args.history, req)
        print("\n".join(f"{rank}\t{item}\t{score:.6g}" for rank, item, score in rows))
        return
    if not args.out:
        raise LongrecError("recommend --users needs --out PATH.parquet|.csv|.jsonl")
    res = recommend_users(Path(args.run_dir), args.users, Path(args.out), req)
    print(f"{args.out}: {res['rows']:,} rows, {res['users']:,} users, history {res['history']}, "
          f"{res['seconds']:.1f} s, peak RSS {res['peak_memory']['cpu_rss_mib']:.0f} MiB", file=sys.stderr)


def _export(args: argparse.Namespace) -> None:
    from longrec.export import export_onnx

    for path in export_onnx(Path(args.run_dir), Path(args.out)):
        print(path)


def _synth(args: argparse.Namespace) -> None:
    from longrec.data.synthetic import main as synth_main

    synth_main([args.out, *args.rest])


def _serve(args: argparse.Namespace) -> None:
    try:
        import fastapi  # noqa: F401
        import httptools  # noqa: F401
        import orjson  # noqa: F401
        import uvicorn  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError as e:
        raise LongrecError(f"serving needs the serve extra: pip install 'longrec[serve]' ({e})") from None
    from longrec.serve.process import ServeOptions, serve_main

    serve_main(ServeOptions(
        str(args.run_dir), str(args.store or Path(args.run_dir) / "serve-state.db"), args.host, args.port,
        args.prefill, args.log_level, args.workers, args.threads, args.max_batch, args.batch_wait_ms, args.cache_mib,
    ))


HANDLERS = {"data": _data, "synth": _synth, "list": _list, "train": _train, "tune": _tune, "eval": _eval,
            "recommend": _recommend, "export": _export, "report": _report, "plot": _plot, "bench": _bench,
            "serve": _serve}
__all__ = ["BENCHES", "HANDLERS", "build_parser", "main"]


def _one_line_error(self: argparse.ArgumentParser, message: str) -> None:
    self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


@contextlib.contextmanager
def one_line_parser_errors() -> Iterator[None]:
    """While the CLI runs, an argparse error (of its own parsers, and of the bench and synth parsers it hands
    arguments to) is the one line `PROG: error: MESSAGE` and exit code 2, without the usage block argparse prints
    above it (--help shows that)."""
    error = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = _one_line_error  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.error = error  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    with one_line_parser_errors():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        HANDLERS[args.command](args)
    except LongrecError as e:
        print(f"longrec: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("longrec: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
