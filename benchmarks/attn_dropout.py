"""What dropout on the attention weights costs a softmax-attention training step on CPU, side by side.

Two measurements, each as the minimum over --reps timed runs after one warm-up, both settings interleaved in one
process so that the ratio compares like with like:
  sdpa   forward + backward of scaled_dot_product_attention on [B, H, N, d] with dropout_p 0 and --p (the key-padding
         mask of a left-padded batch given explicitly, as SoftmaxMixer does);
  step   one training step (forward, loss, backward; no optimiser step) of CONFIG's model on its own first training
         batches, with model.mixer_args.attn_dropout 0 and --p, the same initial weights in both.

    python -m benchmarks.attn_dropout configs/ml-1m-bert4rec.yaml --threads 1   # from the repository root
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.timing import best_of
from longrec.config import ExperimentConfig, load_config
from longrec.data.loader import Batch
from longrec.objectives import build_model
from longrec.train.batch_loss import batch_loss
from longrec.train.loop import epoch_batches
from longrec.train.losses import make_loss
from longrec.train.rundir import load_data


def sdpa_cell(B: int, H: int, N: int, d: int, p: float) -> Callable[[], None]:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, N, d, generator=g, requires_grad=True) for _ in range(3))
    lengths = torch.randint(1, N + 1, (B,), generator=g)
    real = torch.arange(N)[None, :] >= N - lengths[:, None]  # left-padded rows, as the loader builds them
    allowed = real[:, None, None, :] | torch.eye(N, dtype=torch.bool)

    def run() -> None:
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        y.sum().backward()

    return run


def step_cell(cfg: ExperimentConfig, p: float, batches: list[Batch],
              num_items: int) -> tuple[nn.Module, Callable[[], None]]:
    """The model (CONFIG's, with attention dropout p, seeded by cfg.seed) and one training step of it."""
    args = {**cfg.model.mixer_args, "attn_dropout": p}
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mixer_args=args))
    torch.manual_seed(cfg.seed)  # the same initial weights for every p
    model = build_model(num_items, cfg.model, cfg.train).train()
    loss_fn = make_loss(cfg.train, num_items, lambda: torch.ones(num_items + 1))
    state = {"i": 0}

    def run() -> None:
        b = batches[state["i"] % len(batches)]
        state["i"] += 1
        model.zero_grad(set_to_none=True)
        batch_loss(model, model, b, loss_fn).backward()

    return model, run


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", help="a softmax-attention config: a preset name or YAML (configs/ml-1m-bert4rec.yaml)")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value (as for longrec train)")
    ap.add_argument("--p", type=float, default=0.1, help="the attention dropout compared with 0")
    ap.add_argument("--batches", type=int, default=4, help="training batches of the config cycled through")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per cell; the minimum is reported")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    splits = load_data(cfg, quiet=True)
    it = epoch_batches(cfg, splits, np.random.default_rng(cfg.seed))
    batches = [next(it) for _ in range(args.batches)]
    B, N = batches[0].items.shape
    H, D = cfg.model.heads, cfg.model.dim
    print(f"{cfg.name}: CPU, {args.threads} thread(s), min of {args.reps}; batch B {B}, N {N}, {H} heads, "
          f"head dim {D // H}; {cfg.model.layers} layers, {splits.corpus.num_items} items, loss {cfg.train.loss}")
    print(f"{'cell':<6} {'p=0 ms':>9} {f'p={args.p} ms':>11} {'ratio':>7}")
    sd = best_of({"0": sdpa_cell(B, H, N, D // H, 0.0), "p": sdpa_cell(B, H, N, D // H, args.p)}, args.reps)
    print(f"{'sdpa':<6} {1e3 * sd['0']:>9.1f} {1e3 * sd['p']:>11.1f} {sd['p'] / sd['0']:>7.2f}", flush=True)
    num = splits.corpus.num_items
    st = best_of({"0": step_cell(cfg, 0.0, batches, num)[1], "p": step_cell(cfg, args.p, batches, num)[1]}, args.reps)
    print(f"{'step':<6} {1e3 * st['0']:>9.1f} {1e3 * st['p']:>11.1f} {st['p'] / st['0']:>7.2f}")


if __name__ == "__main__":
    main()
