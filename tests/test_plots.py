"""Attention weights behind `longrec plot attention`: they reproduce the mixers' outputs; the PNG is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from longrec.config import load_config
from longrec.mixers import build_mixer
from longrec.plots import plot_attention
from longrec.train.loop import fit
from tests_helpers import synthetic_log


@pytest.mark.parametrize("args", [{"causal": True}, {"causal": False}, {"causal": False, "norm": "token"}])
@pytest.mark.parametrize("name", ["softmax", "linrec"])
def test_weights_times_values_is_the_mixer_output(name: str, args: dict) -> None:
    if name == "softmax" and "norm" in args:
        return
    torch.manual_seed(0)
    m = build_mixer(name, 8, 2, 0.0, args).double().eval()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    w = m.attention_weights(x, mask)  # (B, H, N, N)
    v = m.qkv(x).view(2, 6, 3, 2, 4)[:, :, 2].transpose(1, 2)  # (B, H, N, d)
    y = m.out((w @ v).transpose(1, 2).reshape(2, 6, 8)) * mask[..., None]
    torch.testing.assert_close(y, m(x, mask))
    if name == "softmax":
        torch.testing.assert_close(w.sum(-1)[mask[:, None].expand(-1, 2, -1)], torch.ones(2 * 10, dtype=x.dtype))


@pytest.mark.parametrize("preset", ["sasrec", "linrec-sasrec"])
def test_plot_attention_writes_a_png(tmp_path: Path, preset: str) -> None:
    log = synthetic_log(tmp_path / "walk.txt", users=30)
    cfg = load_config(preset, [f"data.name={log}", "model.dim=16", "model.max_len=12", "train.epochs=1"])
    fit(cfg, tmp_path / "run")
    out = plot_attention(tmp_path / "run", "3", last=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
