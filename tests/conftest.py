"""Shared fixtures: the shared data directory, a private cache dir, small deterministic threads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "longrec-cache"
    monkeypatch.setenv("LONGREC_CACHE_DIR", str(cache))
    data_dir = os.environ.get("LONGREC_DATA_DIR") or (str(SHARED_DATA) if SHARED_DATA.is_dir() else "")
    if data_dir:
        monkeypatch.setenv("LONGREC_DATA_DIR", data_dir)


def shared_data_available() -> bool:
    root = Path(os.environ.get("LONGREC_DATA_DIR") or SHARED_DATA)
    return (root / "ml-1m").is_dir()


needs_data = pytest.mark.skipif(not shared_data_available(), reason="../shared/data not found (set LONGREC_DATA_DIR)")


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for a module (serving is measured and tested single-threaded)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
