"""How a batch of users' encoder states advances: one step per event, or a re-encoded window for growing states."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor

from longrec.mixers.base import MixerState
from longrec.model.encoder import SeqEncoder


class StreamMode(enum.Enum):
    STEP = "step"  # constant-size state (linear/recurrent mixers): one SeqEncoder.step per event, O(1) in history
    WINDOW = "window"  # growing state (softmax KV cache): keep the newest max_len events, re-encode them per update
    NONE = "none"  # global (bidirectional) mixers: no per-user state; anonymous item lists only


def stream_mode(model: SeqEncoder) -> StreamMode:
    """STEP when one step leaves the shape of every state tensor unchanged, WINDOW when the state grows."""
    if not model.causal:
        return StreamMode.NONE
    device = next(model.parameters()).device
    with torch.inference_mode():
        state = model.init_state(1, device)
        t = torch.zeros(1, dtype=torch.float64, device=device)  # read only by time-channel models
        _, after = model.step(state, torch.ones(1, dtype=torch.long, device=device), t)
    grows = any(after[k].shape != v.shape for k, v in state.items())
    return StreamMode.WINDOW if grows else StreamMode.STEP


def _right_aligned(rows: Sequence[Sequence[float]], n: int, fill: float, dtype: torch.dtype,
                   device: torch.device) -> Tensor:
    """[B, max(n, longest)] with each row right-aligned after `fill`."""
    n = max([n, *map(len, rows)])
    out = torch.full((len(rows), n), fill, dtype=dtype)
    for b, r in enumerate(rows):
        if r:
            out[b, n - len(r) :] = torch.tensor(r, dtype=dtype)
    return out.to(device)


def left_pad(seqs: list[list[int]], device: torch.device, n: int = 0) -> Tensor:
    """[B, max(n, longest)] int64, each sequence right-aligned after zeros (PAD)."""
    return _right_aligned(seqs, n, 0, torch.long, device)


def left_pad_times(times: list[list[float]] | None, device: torch.device, n: int = 0) -> Tensor | None:
    """[B, max(n, longest)] float64 timestamps, right-aligned after NaN (pads); None passes through."""
    return None if times is None else _right_aligned(times, n, float("nan"), torch.float64, device)


Times = list[list[float]] | None  # each sequence's event timestamps (seconds), for time-channel models


def encode_last(model: SeqEncoder, seqs: list[list[int]], mask_token: int, times: Times = None) -> Tensor:
    """h [B,D] at the last position of each sequence's newest max_len events, exactly as the evaluator builds
    its input (the newest max_len-1 events and the mask token, which has no time, for cloze-trained models)."""
    n = model.max_len - (1 if mask_token else 0)
    device = next(model.parameters()).device
    items = left_pad([s[-n:] + ([mask_token] if mask_token else []) for s in seqs], device)
    t = None if times is None else [x[-n:] + ([float("nan")] if mask_token else []) for x in times]
    return model(items, items > 0, left_pad_times(t, device, items.shape[1]))[:, -1]


class Streamer(Protocol):
    """Batched states: dicts of [B,...] tensors, always with "h" [B,D], the encoder output to rank from after the
    last event (for cloze-trained models, the output at a mask token placed after it)."""

    def empty(self, batch: int) -> MixerState: ...

    def extend(self, state: MixerState, seqs: list[list[int]], times: Times = None) -> MixerState: ...

    def from_history(self, seqs: list[list[int]], times: Times = None) -> MixerState: ...


class StepStreamer:
    """Constant-size encoder state: events advance it by SeqEncoder.step, histories build it by SeqEncoder.prefill."""

    def __init__(self, model: SeqEncoder, mask_token: int) -> None:
        self.model = model
        self.mask_token = mask_token
        self.device = next(model.parameters()).device

    def _with_output(self, state: MixerState, h: Tensor) -> MixerState:
        if self.mask_token:  # the cloze query: stepped for its output only (it has no time), never kept in the state
            nan = torch.full(state["pos"].shape, float("nan"), dtype=torch.float64, device=self.device)
            h = self.model.step(state, torch.full_like(state["pos"], self.mask_token), nan)[0]
        return {**state, "h": h}

    def empty(self, batch: int) -> MixerState:
        state = self.model.init_state(batch, self.device)
        return {**state, "h": torch.zeros(batch, self.model.item_emb.embedding_dim, device=self.device)}

    def extend(self, state: MixerState, seqs: list[list[int]], times: Times = None) -> MixerState:
        """Round r steps the r-th new event of every user that has one: a batch of users shares each step."""
        enc = {k: v for k, v in state.items() if k != "h"}
        h = state["h"].clone()
        for r in range(max(map(len, seqs), default=0)):
            rows = [b for b, s in enumerate(seqs) if len(s) > r]
            items = torch.tensor([seqs[b][r] for b in rows], dtype=torch.long, device=self.device)
            t = None if times is None else torch.tensor([times[b][r] for b in rows], dtype=torch.float64,
                                                        device=self.device)
            if len(rows) == len(seqs):  # every row steps: no gather/scatter (and a growing KV cache may step)
                h, enc = self.model.step(enc, items, t)
                continue
            idx = torch.tensor(rows, device=self.device)
            out, sub = self.model.step({k: v[idx] for k, v in enc.items()}, items, t)
            enc = {k: v.index_copy(0, idx, sub[k]) for k, v in enc.items()}
            h = h.index_copy(0, idx, out)
        return self._with_output(enc, h)

    def from_history(self, seqs: list[list[int]], times: Times = None) -> MixerState:
        items = left_pad(seqs, self.device)
        out, state = self.model.prefill(items, items > 0, left_pad_times(times, self.device, items.shape[1]))
        return self._with_output(state, out[:, -1])


class WindowStreamer:
    """Growing state (softmax attention): the state is the newest max_len events, re-encoded after each update.
    Per event this costs one forward over the window (O(max_len²)), and the result equals offline evaluation
    exactly; a KV cache would grow without bound in the store and attend past the window the model was trained on."""

    def __init__(self, model: SeqEncoder, mask_token: int) -> None:
        self.model = model
        self.mask_token = mask_token
        self.device = next(model.parameters()).device

    def empty(self, batch: int) -> MixerState:
        out = {
            "window": torch.zeros(batch, self.model.max_len, dtype=torch.long, device=self.device),
            "h": torch.zeros(batch, self.model.item_emb.embedding_dim, device=self.device),
        }
        if self.model.uses_time:  # the window's timestamps beside its items
            out["window_t"] = torch.full((batch, self.model.max_len), float("nan"), dtype=torch.float64,
                                         device=self.device)
        return out

    def extend(self, state: MixerState, seqs: list[list[int]], times: Times = None) -> MixerState:
        real = [w > 0 for w in state["window"]]
        kept = [w[m].tolist() for w, m in zip(state["window"], real, strict=True)]
        seqs = [old + new for old, new in zip(kept, seqs, strict=True)]
        if times is not None and "window_t" in state:
            old_t = [w[m].tolist() for w, m in zip(state["window_t"], real, strict=True)]
            times = [old + new for old, new in zip(old_t, times, strict=True)]
        return self.from_history(seqs, times)

    def from_history(self, seqs: list[list[int]], times: Times = None) -> MixerState:
        n = self.model.max_len
        window = left_pad([s[-n:] for s in seqs], self.device, n)
        out = {"window": window, "h": encode_last(self.model, seqs, self.mask_token, times)}
        if self.model.uses_time and times is not None:
            t = left_pad_times([x[-n:] for x in times], self.device, n)
            assert t is not None
            out["window_t"] = t
        return out


STREAMERS: dict[StreamMode, type[StepStreamer] | type[WindowStreamer]] = {
    StreamMode.STEP: StepStreamer,
    StreamMode.WINDOW: WindowStreamer,
}
