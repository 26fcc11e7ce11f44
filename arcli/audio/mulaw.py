"""mu-law companding and 8-bit quantisation of audio (ITU-T G.711, as used by WaveNet).

    F(x) = sign(x) * ln(1 + mu * |x|) / ln(1 + mu),   x in [-1, 1]

F(x) in [-1, 1] is cut into `mu + 1` bins of equal width 2 / (mu + 1); `mu_law_encode` gives each
sample the index of its bin (equivalently: of the nearest bin centre) and `mu_law_decode` returns
the bin centre mapped back through F^-1, so `mu_law_encode(mu_law_decode(q)) == q` for every q.
The usual bug -- truncating to an index and decoding to the bin's lower edge -- biases every decoded
sample by half a bin; tests/test_mulaw.py checks for it.
"""

import math

import torch
from torch import Tensor


def mu_law_encode(x: Tensor, mu: int = 255) -> Tensor:
    """Audio (any shape, float, clipped to [-1, 1]) -> integer codes of the same shape in [0, mu]."""
    if mu < 1:
        raise ValueError(f"mu must be a positive integer, got {mu}")
    x = x.clamp(-1.0, 1.0)
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)  # in [-1, 1]
    # Bin k covers [-1 + k * w, -1 + (k + 1) * w) with w = 2 / (mu + 1): floor(.) is the bin index,
    # i.e. rounding to the nearest centre. F(1) = 1 lands on the upper edge of the last bin.
    codes = torch.floor((companded + 1.0) * ((mu + 1) / 2.0))
    return codes.clamp(0, mu).long()


def mu_law_decode(codes: Tensor, mu: int = 255) -> Tensor:
    """Integer codes in [0, mu] (any shape) -> audio of the same shape at the bin centres, float32
    in (-1, 1)."""
    if mu < 1:
        raise ValueError(f"mu must be a positive integer, got {mu}")
    if codes.is_floating_point() or codes.is_complex():
        raise TypeError(f"mu-law codes must be an integer tensor, got {codes.dtype}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > mu):
        raise ValueError(f"mu-law codes must lie in [0, {mu}]")
    centre = (codes.to(torch.float32) + 0.5) * (2.0 / (mu + 1)) - 1.0  # companded, in (-1, 1)
    return torch.sign(centre) * torch.expm1(centre.abs() * math.log1p(mu)) / mu
