"""The long-history generator: seeded, well-formed, readable by the data pipeline, and long context helps."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from longrec.data.datasets import load_corpus
from longrec.data.synthetic import SynthConfig, context_gain, generate, write_log

SMALL = SynthConfig(users=12, items=600, clusters=30, interests=10, min_len=300, max_len=3000, seed=3)


def test_seeded_and_in_range():
    a, b = generate(SMALL), generate(SMALL)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = generate(SynthConfig(**{**SMALL.__dict__, "seed": 4}))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    for seq in a:
        assert SMALL.min_len <= len(seq) <= SMALL.max_len
        assert seq.min() >= 1 and seq.max() <= SMALL.items
        # a user only ever touches their own `interests` topics
        assert len(np.unique((seq - 1) // (SMALL.items // SMALL.clusters))) <= SMALL.interests


def test_long_context_helps():
    cfg = SynthConfig(users=30, min_len=4000, max_len=6000, seed=0)
    gain = context_gain(generate(cfg), cfg, windows=(200, 4000))
    assert gain[4000] > gain[200] + 0.03, gain


def test_written_log_is_stable_and_readable(tmp_path):
    p1, p2 = write_log(tmp_path / "a" / "s.txt.gz", SMALL), write_log(tmp_path / "b" / "s.txt.gz", SMALL)
    assert p1.read_bytes() == p2.read_bytes()
    assert json.loads((tmp_path / "a" / "s.txt.gz.json").read_text())["seed"] == 3
    with gzip.open(p1, "rt") as f:
        first = f.readline().split()
    assert first[0] == "1"
    corpus = load_corpus(str(p1), use_cache=False)
    lens = [len(s) for s in generate(SMALL)]
    assert corpus.stats()["users"] == SMALL.users and corpus.stats()["interactions"] == sum(lens)


def test_bad_parameters():
    with pytest.raises(ValueError, match="multiple of clusters"):
        SynthConfig(items=101, clusters=10)
    with pytest.raises(ValueError, match="min_len"):
        SynthConfig(min_len=10, max_len=5)


def test_cli_writes_the_log_and_reports_bad_options(tmp_path, capsys):
    from longrec.cli import main

    out = tmp_path / "s.txt"
    assert main(["synth", str(out), "--users", "3", "--min-len", "20", "--max-len", "40", "--seed", "1"]) == 0
    assert len(out.read_text().splitlines()) == sum(len(s) for s in generate(
        SynthConfig(users=3, min_len=20, max_len=40, seed=1)))
    with pytest.raises(SystemExit) as e:
        main(["synth", str(out), "--items", "101"])
    assert e.value.code == 2 and "multiple of clusters" in capsys.readouterr().err
