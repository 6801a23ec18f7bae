"""The TokenMixer contract and the mixer registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from longrec.config import from_dict
from longrec.errors import ConfigError
from longrec.ops.backend import Backend
from longrec.registry import Registry

MixerState = dict[str, Tensor]  # named tensors with batch as the first axis: serialisable per user


@runtime_checkable
class TokenMixer(Protocol):
    """Mixes information across positions. x [B,N,D], mask [B,N] bool (True = real, left-padded).

    Pad outputs are zero and real outputs never depend on pad inputs. Causal mixers (causal=True)
    support init_state/prefill/step: a window at once, then one event at a time, x_t [B,D] -> y_t [B,D].
    """

    causal: bool

    def forward(self, x: Tensor, mask: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor, mask: Tensor) -> Tensor: ...

    def init_state(self, batch: int, device: torch.device) -> MixerState | None: ...

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() of a left-padded window and the state after each row's last real event, as if every real
        event had been stepped: x [B,N,D], mask [B,N] -> (y [B,N,D], state). Global mixers raise ValueError.
        A mixer without a batched form can return stepped_prefill(self, x, mask)."""
        ...

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]: ...


MIXERS: Registry[type[nn.Module]] = Registry("mixer")


class StatefulOpMixer(nn.Module):
    """forward, prefill and step of a causal mixer written once over its `_run(x, mask, state, final)`: x [B,N,D],
    mask [B,N], state (init_state's layout) or None = empty -> (y [B,N,D] zero at pads, the state after the window;
    complete when `final`). step runs the same computation with N = 1 (retention, gla, gated_delta)."""

    causal = True
    # the mixer_args `longrec export` builds with: the ops' TorchScript loops, which trace into one ONNX Loop over
    # positions, where the chunked paths' Python loops over chunks would freeze the traced length
    export_args: ClassVar[dict[str, str]] = {"backend": "script"}

    def _run(self, x: Tensor, mask: Tensor, state: MixerState | None, final: bool) -> tuple[Tensor, MixerState]:
        raise NotImplementedError

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x [B,N,D], mask [B,N] -> y [B,N,D], zero at pads."""
        return self._run(x, mask, None, False)[0]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() plus the state after the window."""
        return self._run(x, mask, None, True)

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        """x_t [B,D] -> (y_t [B,D], state): one update through the same op with N = 1."""
        real = torch.ones(x_t.shape[0], 1, dtype=torch.bool, device=x_t.device)
        y, new = self._run(x_t[:, None], real, state, True)
        return y[:, 0], new


def op_backend(name: str, supported: Sequence[Backend]) -> Backend:
    """The op backend named in a mixer config (`naive`, the loop's old name, reads as `loop`); a name outside
    `supported` is a ConfigError listing them."""
    try:
        backend: Backend | None = Backend(name)
    except ValueError:
        backend = None
    if backend is None or backend not in supported:
        valid = ", ".join(b.value for b in supported)
        raise ConfigError(f"config: 'model.mixer_args.backend' must be one of {valid}, got {name!r}")
    return backend


def mixer_config(name: str, args: dict[str, Any]) -> Any:
    """The registered mixer's typed arguments built from `args` (None for a mixer without any); unknown keys and
    wrong types are ConfigErrors."""
    entry = MIXERS.get(name)
    return from_dict(entry.config, args, "model.mixer_args") if entry.config else None  # type: ignore[type-var]


def build_mixer(name: str, dim: int, heads: int, dropout: float, args: dict[str, Any]) -> nn.Module:
    """Instantiate a registered mixer; `args` is validated against its config dataclass."""
    return MIXERS.get(name).obj(dim, heads, dropout, mixer_config(name, args))  # type: ignore[call-arg]


def stepped_prefill(mixer: TokenMixer, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
    """TokenMixer.prefill by stepping position by position, a row's state unchanged at its pads: for mixers
    without a batched prefill (fixed-size states only). x [B,N,D], mask [B,N] -> (y [B,N,D], state)."""
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
