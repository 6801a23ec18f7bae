"""Property-based fuzz of the CLI's input boundary: generated data files (valid and broken lines, byte-order marks,
wrong column counts, binary junk), out-of-range config values and bad option values, run in-process. Bad input is
exit code 2 with one error line and no traceback, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from longrec.cli import main  # noqa: E402
from longrec.config_ranges import RANGES, Range  # noqa: E402
from longrec.config_rules import MIXER_RANGES  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None)


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh empty working directory for one example (hypothesis runs many examples in one test call)."""
    old = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="longrec-fuzz-") as tmp:
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def run(argv: list[str]) -> tuple[int, list[str]]:
    """main(argv) in-process: (exit code, the non-empty stderr lines)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, [ln for ln in err.getvalue().splitlines() if ln.strip()]


def assert_one_error(code: int, lines: list[str]) -> str:
    """Exit 2, no traceback, exactly one line, an error (argparse's too: no usage block above it); returns it."""
    text = "\n".join(lines)
    assert code == 2 and "Traceback" not in text, text
    assert len(lines) == 1 and "error: " in lines[0], text
    return lines[0]


VALID = st.builds(lambda u, i: f"{u} {i}", st.integers(0, 9), st.integers(1, 30))
BROKEN = st.one_of(
    st.builds(lambda u, i, x: f"{u} {i} {x}", st.integers(0, 9), st.integers(1, 30), st.integers(0, 5)),  # 3 fields
    st.builds(lambda u: f"{u}", st.integers(0, 9)),  # 1 field
    st.sampled_from(["u x", "1 2.5", "1 -", "\t", "1,2", "a b c d"]),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
)
LOG = st.lists(st.one_of(VALID, VALID, BROKEN), min_size=0, max_size=25)
JUNK = st.one_of(st.binary(max_size=64), st.sampled_from([b"PAR1\x00\x01garbage", b"\x1f\x8b\x08\x00", b"PK\x03\x04"]))


@FUZZ
@given(lines=LOG, bom=st.booleans(), junk=st.one_of(st.none(), JUNK),
       name=st.sampled_from(["log.txt", "log.csv", "log.tsv", "log.txt.gz", "log.inter", "log.dat"]))
def test_data_files(lines: list[str], bom: bool, junk: bytes | None, name: str) -> None:
    with workdir() as cwd:
        body = ("\ufeff" if bom else "") + "\n".join(lines) + "\n"
        data = body.encode("utf-8", "surrogatepass") if junk is None else junk + body.encode()
        if name.endswith(".gz"):
            import gzip

            data = gzip.compress(data, mtime=0)
        (cwd / name).write_bytes(data)
        code, err = run(["data", "info", name, "--no-cache"])
        if code != 0:
            assert_one_error(code, err)
        assert sorted(p.name for p in cwd.iterdir()) == [name]  # nothing written beside it


def bad_value(rule: Range) -> st.SearchStrategy[object]:
    """Values outside a RANGES rule: NaN, infinities, just past each end."""
    lo, hi = rule.lo, rule.hi
    out: list[object] = [math.nan, math.inf, -math.inf]
    if lo > -math.inf:
        out += [lo - 1, lo - 0.5] + ([lo] if rule.lo_open else [])
    if hi < math.inf:
        out += [hi + 1, hi * 10 + 1] + ([hi] if rule.hi_open else [])
    return st.sampled_from(out)


def yaml_value(v: object) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ".nan"
    if isinstance(v, float) and math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    return repr(v)


FIELD = st.sampled_from([*sorted(RANGES), "name", "model.mixer_args.attn_dropout", "train.lr", "train.nosuch"])
BAD_NAMES = st.sampled_from(["''", "..", "../../x", "/tmp/x", "a/b", ".", "x\x00y", "-x", "' '"])


@FUZZ
@given(data=st.data(), path=FIELD)
def test_out_of_range_config_values(data: st.DataObject, path: str) -> None:
    if path == "name":
        text = data.draw(BAD_NAMES)
    elif path in RANGES:
        v = data.draw(bad_value(RANGES[path]))
        text = f"[{yaml_value(v)}]" if path == "eval.ks" else yaml_value(v)
    else:  # a mixer's field (finite), a wrong type, an unknown key
        text = data.draw(st.sampled_from([".nan", "-.inf", "abc", "[1, 2]", "{a: 1}"]))
    with workdir() as cwd:  # the data file does not exist: only the config is checked, nothing trains
        code, err = run(["train", "sasrec", f"{path}={text}", "data.name=missing.txt", "--runs-root", "runs"])
        line = assert_one_error(code, err)
        assert f"'{path}'" in line, line
        assert not list(cwd.iterdir())


TOKENS = st.one_of(st.sampled_from(["0", "-1", "70000", "nan", "inf", "1e400", "", "x", "1.5", "99999999999"]),
                   st.integers(-10, 10).map(str))
# (argv before the value, int or float, lowest valid, highest valid)
OPTIONS = st.sampled_from([
    (["serve", "runs/x", "--port"], int, 1, 65535),
    (["plot", "attention", "runs/x", "--user", "1", "--last"], int, 1, math.inf),
    (["eval", "runs/x", "--negatives"], int, 1, math.inf),
    (["data", "info", "x.txt", "--kcore"], int, 0, math.inf),
    (["synth", "out.txt", "--users"], int, 1, math.inf),
    (["synth", "out.txt", "--items"], int, 1, math.inf),
    (["synth", "out.txt", "--recall"], float, 0, 1),
    (["report", "runs/x", "--target"], float, 0, 1),
    (["bench", "scaling", "--reps"], int, 1, math.inf),
    (["bench", "stream-latency", "--threads"], int, 0, 256),
    (["bench", "window-sweep", "--batch-size"], int, 1, math.inf),
])


def valid(value: str, kind: type, lo: float, hi: float) -> bool:
    try:
        v = kind(value)
    except ValueError:
        return False
    return math.isfinite(v) and lo <= v <= hi


@FUZZ
@given(option=OPTIONS, value=TOKENS)
def test_bad_option_values(option: tuple[list[str], type, float, float], value: str) -> None:
    argv, kind, lo, hi = option
    hypothesis.assume(not valid(value, kind, lo, hi))  # a valid value would run the command: out of scope here
    with workdir() as cwd:
        code, err = run([*argv, value])
        assert_one_error(code, err)
        assert not list(cwd.iterdir())


MIXER_PRESET = {"softmax": "sasrec", "efficient": "ea-sasrec", "linear": "lt-sasrec", "linrec": "causal-linrec",
                "rela": "recgrela", "lru": "lrurec", "retention": "retention", "gla": "gla",
                "gated_delta": "gated-delta"}  # a preset that runs each mixer of config_rules.MIXER_RANGES
MIXER_FIELDS = st.sampled_from(sorted((m, f, r) for m, fs in MIXER_RANGES.items() for f, r in fs.items()))


def refused_before_data(argv: list[str], field: str) -> str:
    """`longrec train ARGV` with a data file that does not exist: one error naming `field`, nothing written."""
    with workdir() as cwd:
        code, err = run(["train", *argv, "data.name=missing.txt", "--runs-root", "runs"])
        line = assert_one_error(code, err)
        assert f"'{field}'" in line, line
        assert not list(cwd.iterdir())
    return line


def test_every_ranged_mixer_has_a_preset() -> None:
    assert set(MIXER_RANGES) <= set(MIXER_PRESET)


@FUZZ
@given(data=st.data(), case=MIXER_FIELDS)
def test_out_of_range_mixer_args(data: st.DataObject, case: tuple[str, str, Range]) -> None:
    mixer, name, rule = case
    value = yaml_value(data.draw(bad_value(rule)))
    refused_before_data([MIXER_PRESET[mixer], f"model.mixer_args.{name}={value}"], f"model.mixer_args.{name}")


ORDERED = st.sampled_from([("lrurec", "r_min", "r_max", 0.01, 0.99), ("retention", "exp_min", "exp_max", 1.0, 20.0),
                           ("gated-delta", "dt_min", "dt_max", 1e-4, 1.0)])  # lo <= hi, both inside their range


@FUZZ
@given(case=ORDERED, a=st.floats(0.0, 1.0), b=st.floats(0.0, 1.0))
def test_mixer_args_out_of_order(case: tuple[str, str, str, float, float], a: float, b: float) -> None:
    preset, lo_name, hi_name, lo, hi = case
    small, big = (lo + x * (hi - lo) for x in sorted((a, b)))
    hypothesis.assume(small < big)
    line = refused_before_data([preset, f"model.mixer_args.{lo_name}={big!r}", f"model.mixer_args.{hi_name}={small!r}"],
                               f"model.mixer_args.{lo_name}")
    assert f"must be at most 'model.mixer_args.{hi_name}'" in line, line


@FUZZ
@given(users=st.dictionaries(st.integers(1, 50), st.integers(1, 2), min_size=1, max_size=20))
def test_a_log_with_no_usable_user_is_one_error(users: dict[int, int]) -> None:
    with workdir() as cwd:  # leave-one-out needs 3 events a user; every user here has 1 or 2
        (cwd / "log.txt").write_text("".join(f"{u} {u + t}\n" for u, n in users.items() for t in range(n)))
        code, err = run(["train", "sasrec", "data.name=log.txt", "--runs-root", "runs"])
        assert "no user left to train" in assert_one_error(code, err)
        assert sorted(p.name for p in cwd.iterdir()) == ["log.txt"]


SUBCOMMANDS = st.sampled_from([(), ("train", "sasrec"), ("eval", "runs/x"), ("data", "info", "x.txt"),
                               ("list", "presets"), ("recommend", "runs/x", "--users", "all"), ("serve", "runs/x"),
                               ("report", "runs/x"), ("plot", "attention", "runs/x", "--user", "1"),
                               ("export", "runs/x", "--out", "o")])


@functools.cache
def _options(argv: tuple[str, ...]) -> list[str]:
    """Every option string the top-level parser and the subcommand of `argv` know."""
    from longrec.cli import build_parser

    p = build_parser()
    parsers = [p] + ([p.parse_known_args(list(argv))[0].parser] if argv else [])
    return [o for q in parsers for a in q._actions for o in a.option_strings]


@FUZZ
@given(argv=SUBCOMMANDS, option=st.from_regex(r"--?[a-z][a-z-]{0,10}", fullmatch=True))
def test_an_unknown_option_is_one_line_from_its_subcommand(argv: tuple[str, ...], option: str) -> None:
    hypothesis.assume(not any(o.startswith(option) for o in _options(argv)))  # argparse takes unique prefixes
    with workdir() as cwd:
        code, err = run([*argv, option])
        line = assert_one_error(code, err)
        assert line.startswith(f"longrec {argv[0]}: error: " if argv else "longrec: error: "), line
        assert not list(cwd.iterdir())
