"""Config loading (presets, base chains, overrides, errors), checkpoint helpers, and the CLI's error contract:
bad input exits with code 2 and one `longrec: error:` line naming the file, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longrec import cli
from longrec.config import ExperimentConfig, config_from_dict, load_config, preset_names, to_dict
from longrec.data.datasets import DATASETS, load_corpus
from longrec.errors import CheckpointError, ConfigError
from longrec.mixers import MIXERS
from longrec.objectives import build_model
from longrec.train import checkpoint
from longrec.train.checkpoint import (
    atomic_write,
    load_model_weights,
    load_optimizer,
    load_tensors,
    read_json,
    save_optimizer,
    save_tensors,
    write_json,
)
from longrec.train.run import evaluate_run

# ---------------------------------------------------------------- config


def test_every_preset_loads() -> None:
    names = preset_names()
    assert {"sasrec", "bert4rec", "gru4rec"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, ExperimentConfig) and cfg.name == name
        assert config_from_dict(to_dict(cfg)) == cfg  # the saved form rebuilds the same config


def test_preset_values() -> None:
    sas, bert = load_config("sasrec"), load_config("bert4rec")
    assert sas.model.mixer_args == {"causal": True, "attn_dropout": 0.0} and sas.model.ffn_mult == 1
    assert bert.model.mixer_args == {"causal": False} and bert.train.objective == "masked_item"
    assert bert.model.heads == 2 and bert.model.dropout == 0.1
    assert sas.data == bert.data == ExperimentConfig().data  # sections a preset does not name keep defaults


def test_base_chain(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    a = tmp_path / "sub" / "a.yaml"
    a.write_text("base: sasrec\nname: a\nmodel: {dim: 32, mixer_args: {causal: true}}\ntrain: {lr: 0.01}\n")
    b = tmp_path / "sub" / "b.yaml"
    b.write_text("base: a.yaml  # found beside b.yaml\nmodel: {layers: 3}\ntrain: {epochs: 7}\n")
    cfg = load_config(str(b))
    assert cfg.name == "a"  # from a.yaml
    assert (cfg.model.dim, cfg.model.layers, cfg.model.ffn_mult) == (32, 3, 1)  # a, b, sasrec
    assert cfg.model.mixer_args == {"causal": True, "attn_dropout": 0.0}  # merged over sasrec's
    assert load_config(str(b), ["model.mixer=gru"]).model.mixer_args == {}  # another mixer drops them
    assert (cfg.train.lr, cfg.train.epochs, cfg.train.batch_size) == (0.01, 7, 128)
    assert load_config(str(a)).model.layers == 2  # sasrec's
    cwd = os.getcwd()
    try:  # a relative base does not depend on the working directory
        os.chdir(tmp_path)
        assert load_config("sub/b.yaml") == cfg
    finally:
        os.chdir(cwd)


def test_base_cycle_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="'base' chain too deep"):
        load_config(str(tmp_path / "a.yaml"))


def test_overrides_are_coerced_to_the_field_types() -> None:
    cfg = load_config(
        "sasrec",
        [
            "train.lr=1e-3",  # PyYAML reads this as a string
            "train.weight_decay=0",  # int -> float
            "train.epochs=5",
            "train.bf16=true",
            "eval.ks=[1, 10]",
            "eval.metric=recall@10",
            "model.mixer_args={causal: true}",
            "data.name=beauty",
            "seed=7",
        ],
    )
    assert cfg.train.lr == 0.001 and type(cfg.train.lr) is float
    assert cfg.train.weight_decay == 0.0 and type(cfg.train.weight_decay) is float
    assert cfg.train.epochs == 5 and cfg.train.bf16 is True
    assert cfg.eval.ks == (1, 10) and cfg.eval.metric == "recall@10"
    assert cfg.model.mixer_args == {"causal": True, "attn_dropout": 0.0}  # merged into the preset's
    assert cfg.data.name == "beauty" and cfg.seed == 7
    assert load_config("sasrec", ["train.lr=0.5", "train.lr=0.25"]).train.lr == 0.25  # the last one wins


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (["trian.lr=1"], ["unknown key 'trian'", "valid: name, seed, data, model, train, eval"]),
        (["train.lrr=1"], ["unknown key 'train.lrr'", "lr", "batch_size", "objective"]),
        (["model.mixer_args.causal=false", "model.dimm=3"], ["unknown key 'model.dimm'", "dim, layers"]),
        (["train.epochs=abc"], ["'train.epochs' must be int", "'abc'"]),
        (["train.epochs=1.5"], ["'train.epochs' must be int"]),
        (["train.lr=fast"], ["'train.lr' must be float", "'fast'"]),
        (["train.bf16=3"], ["'train.bf16' must be bool"]),
        (["eval.ks=5"], ["'eval.ks' must be a list"]),
        (["model=3"], ["'model' must be a mapping"]),
        (["train.objective=cloze"], ["'train.objective' must be one of next_item, last_item, masked_item", "'cloze'"]),
        (["data.split=random"], ["'data.split' must be one of loo, temporal"]),
        (["eval.sampled=all"], ["'eval.sampled' must be one of none, uniform, popularity"]),
        (["model.dim=0"], ["'model.dim' must be positive"]),
        (["train.bucket=-1"], ["'train.bucket' must be >= 0, got -1"]),
        (["train.cuts=-2"], ["'train.cuts' must be >= 0, got -2"]),
        (["model.dim=10", "model.heads=3"], ["'model.dim' (10) must be divisible by 'model.heads' (3)"]),
        (["model.dropout=1.0"], ["'model.dropout' must be in [0, 1)"]),
        (["eval.metric=ndcg@7"], ["'eval.metric'", "ndcg@7"]),
        (["eval.metric=auc@10"], ["'eval.metric'"]),
        (["train.lr"], ["override 'train.lr' must look like key.sub=value"]),
    ],
)
def test_bad_overrides(overrides: list[str], words: list[str]) -> None:
    with pytest.raises(ConfigError) as e:
        load_config("sasrec", overrides)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_errors_in_a_config_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("base: sasrec\ntrain: {lr: 0.1, epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: unknown key 'train\.epoch' \(valid: objective, "):
        load_config(str(path))
    path.write_text("model: {dim: big}\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: 'model\.dim' must be int, got 'big'"):
        load_config(str(path))
    path.write_text("model: {dim: [1, 2\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: invalid YAML") as e:
        load_config(str(path))
    assert "\n" not in str(e.value)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=r"no such file .*absent\.yaml"):
        load_config(str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match=r"'sasrek' is neither a YAML file nor a preset \(presets: .*sasrec"):
        load_config("sasrek")


# ---------------------------------------------------------------- checkpoint helpers


def test_tensors_roundtrip(tmp_path: Path) -> None:
    tensors = {
        "w": torch.randn(3, 4),
        "t": torch.randn(4, 3).T,  # non-contiguous
        "i": torch.arange(5),
        "b": torch.randn(2, 2).to(torch.bfloat16),
        "m": torch.tensor([True, False]),
    }
    path = tmp_path / "x.safetensors"
    save_tensors(path, tensors)
    back = load_tensors(path)
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_optimizer_state_roundtrip(tmp_path: Path) -> None:
    def model_and_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
        return m, torch.optim.AdamW(m.parameters(), lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)

    def step(m: torch.nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
        opt.zero_grad()
        m(x).pow(2).mean().backward()
        opt.step()

    m1, o1 = model_and_opt()
    for s in range(3):
        step(m1, o1, s)
    save_tensors(tmp_path / "w.safetensors", m1.state_dict())
    save_optimizer(tmp_path / "opt.safetensors", o1)

    m2, o2 = model_and_opt()
    load_model_weights(m2, tmp_path / "w.safetensors")
    load_optimizer(tmp_path / "opt.safetensors", o2)
    s1, s2 = o1.state_dict(), o2.state_dict()
    assert s1["param_groups"][0]["betas"] == tuple(s2["param_groups"][0]["betas"])
    for pid, st in s1["state"].items():
        for k, v in st.items():
            assert torch.equal(torch.as_tensor(s2["state"][pid][k]), torch.as_tensor(v)), (pid, k)
    step(m1, o1, 9)
    step(m2, o2, 9)  # the resumed optimizer takes exactly the same step
    for p1, p2 in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(p1, p2)


def test_optimizer_state_that_does_not_fit_is_a_checkpoint_error(tmp_path: Path) -> None:
    small = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(small.parameters())
    small(torch.ones(1, 2)).sum().backward()
    opt.step()
    path = tmp_path / "optim.safetensors"
    save_optimizer(path, opt)
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match=r"optim\.safetensors: optimizer state does not fit"):
        load_optimizer(path, torch.optim.AdamW(other.parameters()))
    path.with_suffix(".json").write_text("{}")  # valid JSON of the wrong shape: its schema names the field
    with pytest.raises(CheckpointError, match=r"optim\.json: field \w+ is missing"):
        load_optimizer(path, torch.optim.AdamW(small.parameters()))


def test_truncated_or_missing_checkpoint_files(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"w": torch.randn(64, 64)})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file") as e:
        load_tensors(path)
    assert str(path) in str(e.value)
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match=str(path)):
        load_tensors(path)
    with pytest.raises(CheckpointError, match="missing"):
        load_tensors(tmp_path / "absent.safetensors")
    bad = tmp_path / "model.json"
    bad.write_text('{"config": {')
    with pytest.raises(CheckpointError, match=r"model\.json: corrupt JSON"):
        read_json(bad)
    with pytest.raises(CheckpointError, match="missing"):
        read_json(tmp_path / "absent.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(CheckpointError, match=r"dir\.json: cannot read"):
        read_json(tmp_path / "dir.json")


def test_weights_that_do_not_fit_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_tensors(path, torch.nn.Linear(4, 3).state_dict())
    with pytest.raises(CheckpointError, match=r"w\.safetensors: weights do not fit"):
        load_model_weights(torch.nn.Linear(4, 5), path)


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.json"
    write_json(path, {"ok": 1})
    assert read_json(path) == {"ok": 1}

    def boom(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, "x" * 100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    assert read_json(path) == {"ok": 1}  # the old content is intact
    monkeypatch.undo()
    atomic_write(tmp_path / "new" / "data.bin", b"\x00\x01")  # creates the folder
    assert (tmp_path / "new" / "data.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["data.bin"]


# ---------------------------------------------------------------- CLI


def longrec(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "longrec", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def error_line(rc: int, stderr: str) -> str:
    """The single `longrec: error:` line of a failed command (exit 2, no traceback)."""
    assert rc == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("longrec: error: ")]
    assert len(lines) == 1, stderr
    assert stderr.strip() == lines[0], stderr  # nothing else on stderr
    return lines[0]


@pytest.mark.parametrize("what", ["mixers", "presets", "datasets"])
def test_cli_list_prints_one_name_a_line(what: str) -> None:
    expected = {"mixers": MIXERS.names, "presets": preset_names, "datasets": DATASETS.names}[what]()
    p = longrec("list", what)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == expected and len(expected) >= 2
    assert all(name and " " not in name for name in expected)


def test_cli_malformed_data_file(tmp_path: Path) -> None:
    bad = tmp_path / "log.txt"
    bad.write_text("1 2\n1 2 3\n")
    p = longrec("data", "info", str(bad), "--format", "pairs")
    assert f"{bad}:2: expected 2 fields" in error_line(p.returncode, p.stderr)
    assert p.stdout == ""


def test_cli_unknown_config_key_in_a_file(tmp_path: Path) -> None:
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("base: sasrec\ntrian: {lr: 0.1}\n")
    p = longrec("train", str(cfg), "--runs-root", str(tmp_path / "runs"))
    line = error_line(p.returncode, p.stderr)
    assert str(cfg) in line and "unknown key 'trian'" in line and "valid: name, seed, data" in line
    assert not (tmp_path / "runs").exists()


def test_cli_eval_of_a_missing_run_dir(tmp_path: Path) -> None:
    p = longrec("eval", str(tmp_path / "no-such-run"))
    assert f"{tmp_path / 'no-such-run'}: no such run directory" in error_line(p.returncode, p.stderr)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run of a tiny SASRec on a tiny log, written the way fit() writes it (no training)."""
    log = tmp_path / "log.txt"
    log.write_text("".join(f"{u} {(u * 7 + t) % 12 + 1}\n" for u in range(1, 9) for t in range(6)))
    cfg = load_config("sasrec", [f"data.name={log}", "model.dim=8", "model.layers=1", "model.max_len=5", "name=t"])
    corpus = load_corpus(str(log))
    run = tmp_path / "run"
    write_json(run / "model.json", {"format": 1, "num_items": corpus.num_items, "config": to_dict(cfg)})
    write_json(run / "id_maps.json", {"items": corpus.item_ids.tolist(), "users": corpus.user_ids.tolist()})
    torch.manual_seed(0)
    save_tensors(run / "best.safetensors", build_model(corpus.num_items, cfg.model, cfg.train).state_dict())
    return run


def test_cli_eval_of_a_truncated_checkpoint(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate_run(run_dir)["users"] == 8  # intact, the run evaluates
    capsys.readouterr()
    weights = run_dir / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    p = longrec("eval", str(run_dir))
    line = error_line(p.returncode, p.stderr)
    assert str(weights) in line and "corrupt or not a safetensors file" in line


def test_cli_eval_of_a_corrupt_model_json_in_process(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_dir / "model.json").write_text('{"format": 1, "num_items": ')
    assert cli.main(["eval", str(run_dir)]) == 2
    line = error_line(2, capsys.readouterr().err)
    assert f"{run_dir / 'model.json'}: corrupt JSON" in line


def test_cli_errors_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the same contract through cli.main, for inputs that need no separate interpreter
    assert cli.main(["train", "sasrec", "train.lrr=0.1", "--runs-root", str(tmp_path)]) == 2
    assert "unknown key 'train.lrr'" in error_line(2, capsys.readouterr().err)
    bad = tmp_path / "log.csv"
    bad.write_bytes(b"user,item\n1,2\n1,\xff\n")
    assert cli.main(["data", "prepare", str(bad)]) == 2
    assert f"{bad}:3: not valid utf-8" in error_line(2, capsys.readouterr().err)
    assert cli.main(["data", "info", str(bad.with_name("absent.txt"))]) == 2
    assert "absent.txt: no such file, and not a named dataset" in error_line(2, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [bad]  # nothing written by the failed commands
