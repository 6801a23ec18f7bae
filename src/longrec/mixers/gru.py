"""GRU token mixer (GRU4Rec baseline): a torch GRU over the real events; its hidden state is the step state."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from longrec.mixers.base import MIXERS, MixerState, stepped_prefill


@dataclass(frozen=True)
class GRUConfig:
    pass


class GRUMixer(nn.Module):
    causal = True

    def __init__(self, dim: int, heads: int, dropout: float, cfg: GRUConfig | None) -> None:
        super().__init__()
        self.gru = nn.GRU(dim, dim, batch_first=True)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, N, D = x.shape
        lengths = mask.sum(-1)
        shift = (N - lengths)[:, None]
        ar = torch.arange(N, device=x.device)[None]
        # left-padded -> right-padded, so that the GRU starts from h0 at the first real event. The steps past a
        # row's end run over its padding, but an output depends only on the steps before it, so the real outputs
        # are exact, and cost less than packing the rows did (docs/BENCHMARKS.md, "GRU mixer")
        fwd = ((ar + shift) % N)[..., None].expand(B, N, D)
        out, _ = self.gru(x.gather(1, fwd))  # (B, N, D) right-padded
        back = ((ar - shift) % N)[..., None].expand(B, N, D)
        return out.gather(1, back) * mask[..., None]

    def prefill(self, x: Tensor, mask: Tensor) -> tuple[Tensor, MixerState]:
        """forward() plus the hidden state after each row's last real event, stepped event by event."""
        return stepped_prefill(self, x, mask)

    def init_state(self, batch: int, device: torch.device) -> MixerState | None:
        return {"h": torch.zeros(batch, self.gru.hidden_size, device=device, dtype=self.gru.weight_hh_l0.dtype)}  # type: ignore[arg-type]

    def step(self, state: MixerState, x_t: Tensor) -> tuple[Tensor, MixerState]:
        _, h = self.gru(x_t[:, None], state["h"][None].contiguous())
        return h[0], {"h": h[0]}


MIXERS.register("gru", GRUMixer, GRUConfig)
