"""Give a trained LRURec a slow memory: set its slowest state channels to a chosen |λ| (ML-1M experiment, issue 17).

LRURec's |λ| barely moves from its initial ring [0.8, 0.99] during training (docs/RESULTS.md), so no channel keeps
an event for more than about 60 steps and a window longer than ~200 events cannot change its output. This writes a
copy of a run's best weights where, in every LRU layer, the `--share` of channels with the largest |λ| get
|λ| = --radius (phase unchanged) and the matching input normalisation γ = √(1 − |λ|²); train it on with
`train.init=OUT` at a long window.

    python scripts/lru_slow_channels.py runs/ml1m/lrurec-200 runs/ml1m/lrurec-slow.safetensors --radius 0.999
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def slow_channels(weights: dict[str, torch.Tensor], radius: float, share: float) -> dict[str, torch.Tensor]:
    out = dict(weights)
    for key, nu_log in weights.items():
        if not key.endswith("nu_log"):
            continue
        r = torch.exp(-torch.exp(nu_log))
        pick = torch.topk(r, max(1, round(share * len(r)))).indices  # the slowest channels
        nu = nu_log.clone()
        nu[pick] = math.log(-math.log(radius))
        gamma = weights[key.replace("nu_log", "gamma_log")].clone()
        gamma[pick] = 0.5 * math.log1p(-radius**2)
        out[key], out[key.replace("nu_log", "gamma_log")] = nu, gamma
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished LRURec run directory")
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p.add_argument("--radius", type=float, default=0.999, help="the slow channels' |λ| (half-life ln 0.5 / ln |λ|)")
    p.add_argument("--share", type=float, default=0.25, help="share of each layer's channels made slow")
    a = p.parse_args()
    if not 0.0 < a.radius < 1.0 or not 0.0 < a.share <= 1.0:
        p.error("--radius must be in (0, 1) and --share in (0, 1]")
    save_file(slow_channels(load_file(a.run / "best.safetensors"), a.radius, a.share), a.out)
    print(f"wrote {a.out}: {a.share:.0%} of each layer's channels at |λ| = {a.radius} "
          f"(half-life {math.log(0.5) / math.log(a.radius):.0f} events)")


if __name__ == "__main__":
    main()
