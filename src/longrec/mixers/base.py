"""The TokenMixer contract and the mixer registry."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from longrec.config import from_dict
from longrec.registry import Registry

MixerState = dict[str, Tensor]  # named tensors with batch as the first axis: serialisable per user


@runtime_checkable
class TokenMixer(Protocol):
    """Mixes information across positions. x [B,N,D], mask [B,N] bool (True = real, left-padded).

    Pad outputs are zero and real outputs never depend on pad inputs. Causal mixers (causal=True)
    support init_state/step: one event at a time, x_t [B,D] -> y_t [B,D].
    """

    causal: bool

    def forward(self, x: Tensor, mask: Tensor) -> Tensor: ...

    def init_state(self, batch: int, device: torch.device) -> MixerState | None: ...

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]: ...


MIXERS: Registry[type[nn.Module]] = Registry("mixer")


def build_mixer(name: str, dim: int, heads: int, dropout: float, args: dict[str, Any]) -> nn.Module:
    """Instantiate a registered mixer; `args` is validated against its config dataclass."""
    entry = MIXERS.get(name)
    cfg = from_dict(entry.config, args, "model.mixer_args") if entry.config else None  # type: ignore[type-var]
    return entry.obj(dim, heads, dropout, cfg)  # type: ignore[call-arg]


def positions(mask: Tensor) -> Tensor:
    """[B,N] int64: index of each real event from the first real one (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)
