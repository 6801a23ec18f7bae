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

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor: ...

    def init_state(self, batch: int, device: torch.device) -> MixerState | None: ...

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]: ...


MIXERS: Registry[type[nn.Module]] = Registry("mixer")


def build_mixer(name: str, dim: int, heads: int, dropout: float, args: dict[str, Any]) -> nn.Module:
    """Instantiate a registered mixer; `args` is validated against its config dataclass."""
    entry = MIXERS.get(name)
    cfg = from_dict(entry.config, args, "model.mixer_args") if entry.config else None  # type: ignore[type-var]
    return entry.obj(dim, heads, dropout, cfg)  # type: ignore[call-arg]


def prefill(mixer: TokenMixer, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
    """Outputs of a left-padded window and the state after its last event, as if every real event had been
    stepped. Uses the mixer's own `prefill` when it has one (KV caches, chunked ops with a final state);
    otherwise steps position by position, keeping a row's state unchanged at its pads (fixed-size states only).
    x [B,N,D], mask [B,N] -> (y [B,N,D], state)."""
    own = getattr(mixer, "prefill", None)
    if own is not None:
        return own(x, mask)  # type: ignore[no-any-return]
    B, N, _ = x.shape
    state = mixer.init_state(B, x.device)
    if state is None:
        raise ValueError(f"{type(mixer).__name__} is global (non-causal): it has no state to prefill")
    ys = []
    for t in range(N):
        y, new = mixer.step(state, x[:, t])
        m = mask[:, t]
        state = {k: torch.where(m.view(-1, *[1] * (v.dim() - 1)), v, state[k]) for k, v in new.items()}
        ys.append(y * m[:, None])
    return torch.stack(ys, dim=1), state


def positions(mask: Tensor) -> Tensor:
    """[B,N] int64: index of each real event from the first real one (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)
