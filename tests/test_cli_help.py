"""The CLI's own text: --version, a help line for every positional argument, usage lines naming the subcommand."""

from __future__ import annotations

import argparse

import pytest

import longrec
from longrec.cli import build_parser, main


def _subparsers(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"longrec {longrec.__version__}"


def test_every_positional_argument_has_help_and_every_usage_names_its_subcommand() -> None:
    for name, sub in _subparsers(build_parser()).items():
        assert sub.format_usage().startswith(f"usage: longrec {name} "), name
        for a in sub._actions:
            if not a.option_strings:
                assert a.help, f"longrec {name}: positional {a.dest} has no help"


@pytest.mark.parametrize("which", ["scaling", "stream-latency", "loadtest", "window-sweep"])
def test_a_bench_usage_line_names_its_subcommand(which: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["bench", which, "--help"])
    assert capsys.readouterr().out.startswith(f"usage: longrec bench {which} ")


def test_export_format_lists_its_choices(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["export", "RUN", "--format", "tflite", "--out", "x"])
    assert "(choose from 'onnx')" in capsys.readouterr().err


def test_every_subcommand_of_the_parser_has_a_handler_and_no_handler_lacks_one() -> None:
    from longrec.cli import HANDLERS
    from longrec.cli_parser import ADDERS

    assert list(HANDLERS) == list(ADDERS)  # cli dispatches on args.command: the two tables name the same commands
