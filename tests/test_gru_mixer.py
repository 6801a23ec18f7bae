"""The GRU mixer's batched forward (rows right-aligned, one unpacked GRU call) against the plain reference: each
row's real events alone through the same nn.GRU, forward and backward, with left padding of several lengths."""

from __future__ import annotations

import torch

from longrec.mixers.gru import GRUMixer


def test_gru_mixer_equals_each_row_run_alone_forward_and_backward() -> None:
    torch.manual_seed(0)
    B, N, D = 5, 9, 6
    mixer = GRUMixer(D, 1, 0.0, None).double()
    lengths = [9, 1, 4, 7, 2]  # left padding of 0, 8, 5, 2 and 7 columns
    mask = torch.tensor([[i >= N - n for i in range(N)] for n in lengths])
    x = torch.randn(B, N, D, dtype=torch.double, requires_grad=True)
    g = torch.randn(B, N, D, dtype=torch.double)
    out = mixer(x, mask)
    (out * g).sum().backward()
    got_x, got_w = x.grad.clone(), mixer.gru.weight_hh_l0.grad.clone()

    x.grad, mixer.gru.weight_hh_l0.grad = None, None
    ref = torch.zeros(B, N, D, dtype=torch.double)
    for r, n in enumerate(lengths):
        real, _ = mixer.gru(x[r : r + 1, N - n :])  # the real events only, from h0
        ref[r, N - n :] = real[0]
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref)
    assert (out[~mask] == 0).all()  # padding positions give zeros
    torch.testing.assert_close(got_x, x.grad)
    torch.testing.assert_close(got_w, mixer.gru.weight_hh_l0.grad)
    assert got_x[~mask].abs().max() == 0  # nothing flows into the padding
