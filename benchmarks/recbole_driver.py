"""The RecBole side of benchmarks.peer_recbole, run inside RecBole's own venv as
`python -m benchmarks.recbole_driver JOB.json`: build RecBole's SASRec from the job, train it bounded (max_steps) or
full (epochs), validate it on longrec's protocol, and write job['out']. Only the standard library and small longrec
modules at the top: RecBole's venv has numpy < 2 and no longrec install (PYTHONPATH links, see driver_command)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Iterator
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

from benchmarks.peer_recbole import DATASET, PeerConfig
from longrec.bench.harness import peak_rss_mib, rss_mib


def drive(job_file: Path) -> None:
    """Inside the RecBole venv: build RecBole's SASRec from the job, train it bounded or full, write job['out']."""
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    job = json.loads(job_file.read_text())
    peer, rb = PeerConfig(**job["peer"]), dict(job["recbole"])
    mask_history = rb.pop("mask_history")
    torch.set_num_threads(peer.threads)
    sys.argv = sys.argv[:1]  # RecBole's Config reads `--key=value` overrides from the command line
    t0 = time.perf_counter()
    config = Config(model="SASRec", dataset=DATASET, config_dict=rb)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, _ = data_preparation(config, dataset)
    model = SASRec(config, train_data.dataset).to(config["device"])
    trainer = Trainer(config, model)
    out: dict[str, Any] = {"prep_seconds": time.perf_counter() - t0, "rss_after_data_mib": rss_mib(),
                           "train_rows": len(train_data.dataset), "steps_per_epoch": len(train_data),
                           "threads": torch.get_num_threads(), "batch": config["train_batch_size"],
                           "versions": {"recbole": recbole.__version__, "torch": torch.__version__}}
    seen = _seen(train_data.dataset, dataset, config["LIST_SUFFIX"])
    evaluate = partial(_evaluate, model, valid_data, seen, dataset.uid_field, mask_history)
    out |= _bounded(trainer, train_data, peer, evaluate) if peer.max_steps else _full(trainer, train_data, peer,
                                                                                     evaluate, Path(job["log"]))
    out["peak_rss_mib"] = peak_rss_mib()
    Path(job["out"]).write_text(json.dumps(out, indent=1))


def _seen(train: Any, dataset: Any, list_suffix: str) -> Any:
    """[users, items] bool: each user's training events, the history that longrec's evaluation masks."""
    import torch

    tr, uid, iid = train.inter_feat, dataset.uid_field, dataset.iid_field
    seen = torch.zeros(dataset.user_num, dataset.item_num, dtype=torch.bool)
    seen[tr[uid], tr[iid]] = True  # the train rows' targets: every training event but each user's first, ...
    seen[tr[uid], tr[iid + list_suffix][:, 0]] = True  # ... which opens every prefix
    return seen


def _evaluate(model: Any, valid_data: Any, seen: Any, uid: str, mask_history: bool) -> dict[str, float]:
    """Valid NDCG@10 as longrec computes it (history masked, ties against the target), and unmasked (RecBole 1.2.1
    masks no history for sequential models)."""
    import torch

    model.eval()
    sums, n = {"masked": 0.0, "unmasked": 0.0}, 0
    with torch.no_grad():
        for inter, _, _, pos in valid_data:
            scores = model.full_sort_predict(inter.to(model.device)).view(len(pos), -1).float().cpu()  # [B, I+1]
            scores[:, 0] = float("-inf")  # PAD
            for key, s in (("unmasked", scores), ("masked", scores.masked_fill(seen[inter[uid]], float("-inf")))):
                t = s.gather(1, pos[:, None])  # [B, 1]
                higher = (s.scatter(1, pos[:, None], float("nan")) >= t).sum(1)  # the target itself: NaN
                sums[key] += float(torch.where(higher < 10, 1 / torch.log2(higher + 2.0), 0.0).sum())
            n += len(pos)
    return {"ndcg@10": sums["masked" if mask_history else "unmasked"] / n, "ndcg@10_unmasked": sums["unmasked"] / n}


def _bounded(trainer: Any, train_data: Any, peer: PeerConfig, evaluate: Any) -> dict[str, Any]:
    """RecBole's own _train_epoch over the first max_steps batches; rows/s over the steps after the warm-up."""
    marks: list[float] = []  # marks[j]: batch j is loaded; step j = marks[j+1] - marks[j] (train j, load j+1)
    sizes: list[int] = []

    def batches() -> Iterator[Any]:
        for j, inter in enumerate(chain(train_data, [None])):  # None: the epoch ended before max_steps
            marks.append(time.perf_counter())
            if inter is None or j == peer.max_steps or 0 < peer.time_limit < marks[-1] - marks[0]:
                return
            sizes.append(len(inter))
            yield inter

    loss = trainer._train_epoch(batches(), 0)
    w = min(peer.warmup, len(sizes) - 1)
    steps = [b - a for a, b in zip(marks[w:-1], marks[w + 1 :], strict=True)]
    rows_per_s = sum(sizes[w:]) / sum(steps)
    out = {"mode": "bounded", "steps": len(sizes), "warmup": w, "mean_loss": loss / len(sizes),
           "step_seconds_median": statistics.median(steps), "rows_per_s": rows_per_s,
           "epoch_train_seconds_est": len(train_data.dataset) / rows_per_s}
    if peer.valid:
        t0 = time.perf_counter()
        out["valid"] = evaluate()
        out["valid_seconds"] = time.perf_counter() - t0
    return out


def _full(trainer: Any, train_data: Any, peer: PeerConfig, evaluate: Any, log: Path) -> dict[str, Any]:
    """Epochs of RecBole's _train_epoch, each followed by `evaluate`; one JSON line per epoch in `log`."""
    epochs: list[dict[str, Any]] = []
    best, bad = -1.0, 0
    with log.open("w") as f:
        while len(epochs) < trainer.config["epochs"] and bad < trainer.config["stopping_step"] and best < (
                peer.target or 2.0) and not 0 < peer.time_limit <= sum(e["seconds"] for e in epochs):
            t0 = time.perf_counter()
            loss = trainer._train_epoch(train_data, len(epochs))
            t1 = time.perf_counter()
            valid = evaluate()
            epochs.append({"epoch": len(epochs) + 1, "loss": loss / len(train_data),
                           "seconds": time.perf_counter() - t0, "train_seconds": t1 - t0, "valid": valid})
            print(json.dumps(epochs[-1]), file=f, flush=True)
            print(f"epoch {len(epochs)}: valid ndcg@10 {valid['ndcg@10']:.4f}", file=sys.stderr, flush=True)
            best, bad = (valid["ndcg@10"], 0) if valid["ndcg@10"] > best else (best, bad + 1)
    return {"mode": "full", "epochs": epochs}


if __name__ == "__main__":
    drive(Path(sys.argv[1]))
