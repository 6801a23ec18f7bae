"""Bad input at the boundary: option values refused by the parser, data-dependent config checks before the run
directory is written, and the default run directory named for the config and its dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from longrec.cli import main
from longrec.config import load_config, run_name


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["serve", "runs/x", "--port", "70000"],
    ["plot", "attention", "runs/x", "--user", "1", "--last", "0"],
    ["eval", "runs/x", "--negatives", "0"],
    ["data", "info", "x.txt", "--kcore", "-1"],
    ["report", "runs/x", "--target", "nan"],
    ["synth", "OUT", "--users", "0"],
    ["synth", "OUT", "--zipf", "inf"],
    ["synth", "OUT", "--period", "5", "2"],
    ["bench", "scaling", "--lengths", "0"],
    ["bench", "stream-latency", "--threads", "100000"],
    ["bench", "loadtest", "runs/x", "--kill-at", "2"],
    ["bench", "window-sweep", "--batch-size", "0"],
])
def test_bad_option_values_are_parser_errors(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if "error:" in ln]) == 1, err
    assert not list(tmp_path.iterdir())  # synth wrote nothing


def write_log(path: Path, users: int, events: int, items: int = 20) -> Path:
    path.write_text("".join(f"{u} {(u * 7 + t) % items + 1}\n" for u in range(users) for t in range(events)))
    return path


@pytest.mark.parametrize("events", [1, 2])
def test_training_with_no_usable_user_is_one_error_and_no_run(events: int, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "short.txt", 5, events)
    code, err = run_cli(["train", "sasrec", f"data.name={log}", "--runs-root", str(tmp_path / "runs")], capsys)
    assert code == 2 and "no user left to train" in err.splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_sampled_negatives_beyond_the_catalogue_are_refused_before_the_run(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "ok.txt", 10, 6, items=20)
    code, err = run_cli(["train", "sasrec", f"data.name={log}", "eval.sampled=uniform", "eval.negatives=20",
                         "--runs-root", str(tmp_path / "runs")], capsys)
    assert code == 2 and "'eval.negatives' (20) must be below the number of items" in err
    assert not (tmp_path / "runs").exists()


def test_the_default_run_dir_names_the_dataset() -> None:
    assert run_name(load_config("sasrec")) == "sasrec-ml-1m"
    assert run_name(load_config("sasrec", ["data.name=beauty"])) == "sasrec-beauty"
    assert run_name(load_config("sasrec", ["data.name=/data/my log.txt.gz"])) == "sasrec-my_log"
    assert run_name(load_config("configs/ml-1m-sasrec.yaml")) == load_config("configs/ml-1m-sasrec.yaml").name


def test_sqlite_urls_read_as_sqlalchemy_and_need_their_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from longrec.errors import ConfigError
    from longrec.serve.store_url import sqlite_path

    monkeypatch.chdir(tmp_path)
    assert sqlite_path("sqlite:///state.db") == Path("state.db")  # 3 slashes: relative to the working directory
    assert sqlite_path(f"sqlite:///{tmp_path}/s.db") == tmp_path / "s.db"  # 4 slashes: absolute
    assert sqlite_path("sqlite:s.db") == sqlite_path("s.db") == Path("s.db")
    for url, words in [("sqlite:///no/such/dir/s.db", "directory no/such/dir does not exist"),
                       ("sqlite://host/s.db", "has no host"), ("sqlite:///:memory:", "give a file path")]:
        with pytest.raises(ConfigError, match=words):
            sqlite_path(url)
    assert not (tmp_path / "no").exists()


def test_popularity_negatives_beyond_the_items_seen_in_training_are_refused_not_looped(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path / "ok.txt", 10, 6, items=40)  # items 1..15 are ever seen in training
    code, err = run_cli(["train", "sasrec", f"data.name={log}", "eval.sampled=popularity", "eval.negatives=30",
                         "--runs-root", str(tmp_path / "runs")], capsys)
    assert code == 2 and "fewer than 30 items left to sample negatives from" in err.splitlines()[-1]
    assert not (tmp_path / "runs").exists()
