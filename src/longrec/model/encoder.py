"""SeqEncoder: item (+ position) embedding -> L x Block -> norm; forward over a window or step per event."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from longrec.config import ModelConfig
from longrec.errors import ConfigError
from longrec.mixers import build_mixer
from longrec.mixers.base import MixerState, positions
from longrec.model.block import Block, Dropout
from longrec.model.repeat import RepeatHead
from longrec.model.time import BUCKETS, gap_buckets


class SeqEncoder(nn.Module):
    """items [B,N] int64 (0 = PAD), mask [B,N] bool -> h [B,N,D]; h at a position summarises events up to it
    (causal mixers) or the whole window (global mixers). Items 1..num_items are real; the `extra_tokens` ids
    above them are special input tokens (a mask token, say), embedded but never scored. The output layer is
    the item embedding table (tied) unless cfg.tie_output is false, then a separate [num_items+1, D] table."""

    def __init__(self, num_items: int, cfg: ModelConfig, extra_tokens: int = 0) -> None:
        super().__init__()
        D = cfg.dim
        self.num_items = num_items
        self.max_len = cfg.max_len
        self.item_emb = nn.Embedding(num_items + 1 + extra_tokens, D, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, D) if cfg.pos == "learned" else None
        self.gap_emb = nn.Embedding(BUCKETS, D, padding_idx=0) if cfg.time == "gap" else None  # the time channel
        self.out_emb = None if cfg.tie_output else nn.Embedding(num_items + 1, D, padding_idx=0)
        self.drop = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(build_mixer(cfg.mixer, D, cfg.heads, cfg.dropout, cfg.mixer_args), D, cfg.ffn_mult, cfg.dropout,
                  cfg.norm_first)
            for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(D) if cfg.norm_first else nn.Identity()
        self.apply(_init)
        # after _init: its zeros make it start as a no-op
        self.repeat = RepeatHead(D, cfg.repeat_decays) if cfg.repeat else None

    @property
    def layers(self) -> list[Block]:
        return cast(list[Block], list(self.blocks))

    @property
    def causal(self) -> bool:
        return all(getattr(b.mixer, "causal", False) for b in self.layers)

    @property
    def uses_time(self) -> bool:
        """True when the model reads event timestamps (model.time=gap): forward, prefill and step need them."""
        return self.gap_emb is not None

    def _embed(self, items: Tensor, pos: Tensor, times: Tensor | None = None, prev: Tensor | None = None) -> Tensor:
        x = self.item_emb(items)
        if self.pos_emb is not None:
            # positions past the trained window (streaming) reuse the last learned one
            x = x + self.pos_emb(pos.clamp(max=self.max_len - 1))
        if self.gap_emb is not None:
            if times is None:
                raise ConfigError("model.time=gap: this model reads event timestamps, and none were given (a log "
                                  "without times, or a caller that passed none)")
            t = times if items.dim() == 2 else times[:, None]  # step: [B] -> [B, 1]
            x = x + self.gap_emb(gap_buckets(t, prev).view(items.shape))
        return self.drop(x)

    def forward(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> Tensor:
        """items [B,N], mask [B,N], times [B,N] float64 seconds (needed with the time channel) -> h [B,N,D]
        (zero at pads)."""
        x = self._embed(items, positions(mask), _real(times, mask) if self.uses_time else None)
        for block in self.layers:
            x = block(x, mask)
        return self.norm(x) * mask[..., None]

    def item_table(self) -> Tensor:
        """[num_items+1, D]: rows 0 (PAD) .. num_items; scores are h @ item_table().T with PAD masked."""
        if self.out_emb is not None:
            return self.out_emb.weight
        return self.item_emb.weight[: self.num_items + 1]

    def init_state(self, batch: int, device: torch.device) -> MixerState:
        """Flat state {"pos": [B], "<layer>.<name>": tensor}; raises for global (non-causal) mixers."""
        state: MixerState = {"pos": torch.zeros(batch, dtype=torch.long, device=device)}
        if self.uses_time:
            state["t"] = torch.full((batch,), float("nan"), dtype=torch.float64, device=device)  # the last event's
        for i, block in enumerate(self.layers):
            s = block.mixer.init_state(batch, device)
            if s is None:
                raise ConfigError(f"mixer '{type(block.mixer).__name__}' is global (non-causal) and cannot stream")
            state.update({f"{i}.{k}": v for k, v in s.items()})
        return state

    def prefill(self, items: Tensor, mask: Tensor, times: Tensor | None = None) -> tuple[Tensor, MixerState]:
        """forward() plus the state after each row's last real event, in init_state/step's layout, as if every
        real event had been stepped: items [B,N], mask [B,N], times [B,N] -> (h [B,N,D], state). Each block runs
        its mixer through `prefill` (one batched pass); raises for global (non-causal) mixers."""
        times = _real(times, mask)
        x = self._embed(items, positions(mask), times)
        state: MixerState = {"pos": mask.long().sum(-1)}
        if self.uses_time and times is not None:
            state["t"] = times[:, -1]  # left-padded: the newest event is in the last column (NaN for an empty row)
        for i, block in enumerate(self.layers):
            if not block.mixer.causal:
                raise ConfigError(f"mixer '{type(block.mixer).__name__}' is global (non-causal) and cannot stream")
            x, sub = block.prefill(x, mask)
            state.update({f"{i}.{k}": v for k, v in sub.items()})
        return self.norm(x) * mask[..., None], state

    def step(self, state: MixerState, items: Tensor, times: Tensor | None = None) -> tuple[Tensor, MixerState]:
        """Advance every layer by one event: items [B], times [B] float64 (with the time channel) -> (h [B,D],
        new state)."""
        pos = state["pos"]
        x = self._embed(items, pos, times, state.get("t"))
        new: MixerState = {"pos": pos + 1}
        if self.uses_time and times is not None:
            new["t"] = times.to(torch.float64)
        for i, block in enumerate(self.layers):
            prefix = f"{i}."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            x, sub = block.step(sub, x)
            new.update({prefix + k: v for k, v in sub.items()})
        return self.norm(x), new


def _real(times: Tensor | None, mask: Tensor) -> Tensor | None:
    """times [B,N] as float64 with NaN at pads (a pad never counts as a predecessor)."""
    return None if times is None else times.to(torch.float64).masked_fill(~mask, float("nan"))


def _init(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            nn.init.zeros_(m.weight[m.padding_idx])


def describe(enc: SeqEncoder) -> dict[str, Any]:
    return {"params": sum(p.numel() for p in enc.parameters()), "causal": enc.causal}
