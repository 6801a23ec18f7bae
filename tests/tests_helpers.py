"""Small data builders shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_log(path: Path, users: int = 120, length: int = 16, items: int = 40, seed: int = 0) -> Path:
    """Each user walks the catalogue in steps of +1 from a random start: the next item is predictable."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as f:
        for u in range(1, users + 1):
            start = int(rng.integers(0, items))
            for t in range(length):
                f.write(f"{u} {(start + t) % items + 1}\n")
    return path
