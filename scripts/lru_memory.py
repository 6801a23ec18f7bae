"""How far back can a trained LRURec remember? Its |λ| quantiles and half-lives per layer (docs/RESULTS.md, issue 17).

A state channel with |λ| keeps an event's weight |λ|^k after k steps: half-life ln 0.5 / ln |λ| events.

    python scripts/lru_memory.py runs/ml1m/lrurec-200 runs/ml1m/lrurec-cont-800
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from safetensors.torch import load_file


def layer_memory(nu_log: torch.Tensor) -> str:
    r = torch.exp(-torch.exp(nu_log.double()))  # |λ| = exp(−exp(ν)), as in mixers/lru.py
    half_life = math.log(0.5) / torch.log(r)
    q = torch.quantile(r, torch.tensor([0.5, 0.9, 1.0], dtype=torch.float64)).tolist()
    return (f"|λ| median {q[0]:.3f} p90 {q[1]:.3f} max {q[2]:.4f} (half-life {math.log(0.5) / math.log(q[2]):.0f} "
            f"events); half-life > 50 events {(half_life > 50).double().mean():.1%}, > 200 "
            f"{(half_life > 200).double().mean():.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished LRURec run directories (their best.safetensors)")
    for run in p.parse_args().runs:
        print(run)
        for key, v in load_file(run / "best.safetensors").items():
            if key.endswith("nu_log"):
                print(f"  {key.removesuffix('.nu_log')}: {layer_memory(v)}")


if __name__ == "__main__":
    main()
