"""Run directories: each JSON file checked against its shape when read, resume's checks, and a directory that
stands alone (its own corpus copy: evaluated and served with the log removed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from longrec.cli import main
from longrec.config import load_config
from longrec.errors import CheckpointError
from longrec.train.loop import fit
from longrec.train.report import table
from longrec.train.run import evaluate_run, load_run
from tests_helpers import synthetic_log


def tiny(log: Path, *extra: str) -> list[str]:
    return [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.batch_size=32", "train.lr=0.01",
            "model.dropout=0.0", "train.patience=50", "eval.batch_size=64", "train.epochs=1", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("rundir")
    log = synthetic_log(root / "walk.txt")
    fit(load_config("gru4rec", tiny(log)), root / "run")
    return log, root / "run"


@pytest.fixture()
def run(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(trained[1], tmp_path / "run")
    return tmp_path / "run"


def _edit(path: Path, **changes: object) -> None:
    obj = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            del obj[k]
        else:
            obj[k] = v
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize(("name", "change", "message"), [
    ("model.json", {"num_items": "12"}, "model.json: field num_items must be int, got str"),
    ("model.json", {"config": None}, "model.json: field config is missing"),
    ("id_maps.json", {"items": {"a": 1}}, "id_maps.json: field items must be list, got dict"),
    ("data.json", {"corpus_sha256": None}, "data.json: field corpus_sha256 is missing"),
])
def test_a_run_file_of_the_wrong_shape_is_one_error_naming_file_and_field(run: Path, name: str, change: dict,
                                                                          message: str) -> None:
    _edit(run / name, **change)
    with pytest.raises(CheckpointError, match=message):
        evaluate_run(run)


def test_results_json_of_the_wrong_shape_and_a_json_list_are_named(run: Path, capsys: pytest.CaptureFixture) -> None:
    _edit(run / "results.json", training={"epochs": 1})
    with pytest.raises(CheckpointError, match="results.json: field training.seconds_to_best is missing"):
        table([run])
    (run / "model.json").write_text("[1, 2]")
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"longrec: error: {run}/model.json: the file must be a JSON object, got list"]


def test_resume_refuses_a_trainer_json_without_epoch(trained: tuple[Path, Path], run: Path) -> None:
    _edit(run / "trainer.json", epoch=None)
    with pytest.raises(CheckpointError, match="trainer.json: field epoch is missing"):
        fit(load_config("gru4rec", tiny(trained[0], "train.epochs=2")), run, resume=True)


@pytest.mark.parametrize("damage", ["shape", "nan"])
def test_resume_refuses_an_optimizer_state_of_the_wrong_shape_or_with_nans(trained: tuple[Path, Path], run: Path,
                                                                           damage: str) -> None:
    tensors = load_file(run / "optim.safetensors")
    key = next(k for k in tensors if k.endswith("exp_avg"))
    tensors[key] = tensors[key][:1] if damage == "shape" else tensors[key] * float("nan")
    save_file(tensors, run / "optim.safetensors")
    message = "has shape" if damage == "shape" else "NaN or infinite"
    with pytest.raises(CheckpointError, match=f"optim.safetensors: tensor {key} .*{message}"):
        fit(load_config("gru4rec", tiny(trained[0], "train.epochs=2")), run, resume=True)


def test_resume_refuses_an_optimizer_sidecar_of_the_wrong_shape(trained: tuple[Path, Path], run: Path) -> None:
    _edit(run / "optim.json", scalars=[1, 2])
    with pytest.raises(CheckpointError, match="optim.json: field scalars must be dict, got list"):
        fit(load_config("gru4rec", tiny(trained[0], "train.epochs=2")), run, resume=True)


def test_resume_of_a_run_stopped_in_its_first_epoch_starts_it_again(trained: tuple[Path, Path], run: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    for name in ("trainer.json", "last.safetensors", "best.safetensors", "optim.safetensors", "optim.json",
                 "results.json"):
        (run / name).unlink()  # as Ctrl-C during epoch 1 leaves it
    res = fit(load_config("gru4rec", tiny(trained[0])), run, resume=True)
    assert "no epoch of this run finished; starting it again from epoch 1" in capsys.readouterr().err
    assert res["training"]["epochs"] == 1 and len((run / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(CheckpointError, match="no run to resume there"):
        fit(load_config("gru4rec", tiny(trained[0])), run.parent / "nothing", resume=True)


def test_a_copied_run_directory_evaluates_and_serves_without_its_log(trained: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    root = tmp_path / "elsewhere"
    root.mkdir()
    log = synthetic_log(root / "walk.txt")
    fit(load_config("gru4rec", tiny(log)), root / "run")
    before = evaluate_run(root / "run")["metrics"]
    data = json.loads((root / "run" / "data.json").read_text())
    assert data["source"] == str(log.resolve()) and len(data["source_sha256"]) == 64
    shutil.copytree(root / "run", tmp_path / "copy")
    shutil.rmtree(root)
    assert evaluate_run(tmp_path / "copy")["metrics"] == before
    pytest.importorskip("fastapi")
    from longrec.serve.recommender import Recommender

    rec = Recommender.load(tmp_path / "copy")
    try:
        assert len(rec.recommend("1", k=5)) == 5
    finally:
        rec.close()


def test_a_run_without_a_corpus_copy_still_reads_its_log(trained: tuple[Path, Path], run: Path) -> None:
    before = evaluate_run(run)["metrics"]
    (run / "data.json").unlink()
    (run / "corpus.npz").unlink()
    assert evaluate_run(run)["metrics"] == before
    _, _, splits = load_run(run)
    assert splits.corpus.num_users == 120


def test_a_copied_run_resumes_from_its_own_corpus_without_its_log(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "orig"
    root.mkdir()
    log = synthetic_log(root / "walk.txt")
    fit(load_config("gru4rec", tiny(log)), root / "run")
    log.write_text(log.read_text() + "1 1\n")  # the log changed since the run started: noted, the copy is used
    fit(load_config("gru4rec", tiny(log, "train.epochs=2")), root / "run", resume=True)
    assert f"data: {log.resolve()} changed since the run started" in capsys.readouterr().err
    shutil.copytree(root / "run", tmp_path / "copy")
    shutil.rmtree(root)  # the log and the original run are gone
    res = fit(load_config("gru4rec", tiny(log, "train.epochs=3")), tmp_path / "copy", resume=True)
    assert res["training"]["epochs"] == 3 and len((tmp_path / "copy" / "metrics.jsonl").read_text().splitlines()) == 3
    assert "changed since" not in capsys.readouterr().err


def test_a_data_mmap_run_says_that_it_needs_its_log(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = synthetic_log(tmp_path / "walk.txt")
    fit(load_config("gru4rec", tiny(log, "data.mmap=true")), tmp_path / "run")
    assert not (tmp_path / "run" / "corpus.npz").exists()  # memory-mapped corpora are not copied
    log.unlink()
    for argv in (["eval", str(tmp_path / "run")], ["recommend", str(tmp_path / "run"), "--history", "1"]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "a data.mmap run keeps no copy of its corpus and needs its log" in err[0], err
