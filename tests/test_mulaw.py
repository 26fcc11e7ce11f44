import math

import pytest
import torch

from arcli.audio.mulaw import mu_law_decode, mu_law_encode

HALF_BIN = 1 / 256  # mu = 255: 256 bins of width 2/256 on the companded axis [-1, 1]


def compand(x: torch.Tensor, mu: int = 255) -> torch.Tensor:
    """F(x), in float64, written out independently of the module under test."""
    return torch.sign(x) * torch.log(1 + mu * x.abs()) / math.log(1 + mu)


def test_encode_hand_computed_values():
    # F(x) = sign(x) ln(1 + 255|x|) / ln 256; code = floor((F + 1) * 128), the top edge F = 1 -> 255.
    #   x = 0.5:   F = ln(128.5) / ln(256) = 4.85593 / 5.54518 = 0.875703 -> 240.09 -> 240
    #   x = -0.5:  F = -0.875703 -> 15.91 -> 15
    #   x = 0.01:  F = ln(3.55) / ln(256) = 1.26695 / 5.54518 = 0.228477 -> 157.25 -> 157
    #   x = 0.001: F = ln(1.255) / ln(256) = 0.227136 / 5.54518 = 0.040961 -> 133.24 -> 133
    #   x = 0: F = 0 -> 128 (the edge between bins 127 and 128); x = -1e-9: F = -4.6e-8 -> 127
    x = torch.tensor([-1.0, -0.5, -1e-9, 0.0, 0.001, 0.01, 0.5, 1.0])
    assert mu_law_encode(x).tolist() == [0, 15, 127, 128, 133, 157, 240, 255]


def test_decode_returns_bin_centres_hand_computed():
    # Code q has companded centre y = (q + 0.5) / 128 - 1, and x = sign(y) (256^|y| - 1) / 255.
    #   q = 128: y = 1/256,     x = (2^(1/32) - 1) / 255 = 0.0218971 / 255 = 8.5871e-5
    #   q = 255: y = 255/256,   x = (256 * 2^(-1/32) - 1) / 255 = 249.5144 / 255 = 0.978488
    #   q = 240: y = 0.8789063, x = (2^7.03125 - 1) / 255 = 129.8028 / 255 = 0.509031
    #   q = 0 and 127 mirror 255 and 128.
    codes = torch.tensor([0, 127, 128, 240, 255])
    expected = torch.tensor([-0.978488, -8.5871e-5, 8.5871e-5, 0.509031, 0.978488])
    decoded = mu_law_decode(codes)
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("mu", [255, 15, 1])
def test_round_trip_every_code(mu):
    codes = torch.arange(mu + 1)
    assert torch.equal(mu_law_encode(mu_law_decode(codes, mu), mu), codes)


def test_encode_picks_the_nearest_centre_unbiased():
    """Catches the off-by-half-a-bin bug: a truncating quantiser whose decoder returns bin edges is
    off by up to a whole bin, and by half a bin on average."""
    x = torch.linspace(-1, 1, 200_001, dtype=torch.float64)
    error = compand(x) - compand(mu_law_decode(mu_law_encode(x)).double())  # companded axis
    assert error.abs().max() <= HALF_BIN + 1e-6
    assert abs(error.mean().item()) < HALF_BIN / 50  # uniform x is not uniform in F, but symmetric


def test_encode_is_monotone_symmetric_and_clips():
    x = torch.linspace(-1, 1, 200_001)  # steps of 1e-5: finer than the narrowest bin (1.7e-4)
    codes = mu_law_encode(x)
    assert codes.dtype == torch.int64 and codes.shape == x.shape
    assert bool((codes[1:] >= codes[:-1]).all()) and codes.min() == 0 and codes.max() == 255
    assert set(codes.tolist()) == set(range(256))  # every level is used
    off_edge = torch.tensor([0.3, 0.05, 0.77, 1e-4])  # not on a bin edge
    assert torch.equal(mu_law_encode(-off_edge), 255 - mu_law_encode(off_edge))
    q = torch.arange(256)
    assert torch.equal(mu_law_decode(255 - q), -mu_law_decode(q))
    assert mu_law_encode(torch.tensor([-7.0, -1.5, 1.5, 7.0])).tolist() == [0, 0, 255, 255]


def test_shapes_and_float64_input():
    x = torch.rand(2, 3, 5, dtype=torch.float64) * 2 - 1
    codes = mu_law_encode(x)
    assert codes.shape == (2, 3, 5)
    assert mu_law_decode(codes).shape == (2, 3, 5)
    assert torch.equal(mu_law_encode(mu_law_decode(codes)), codes)


def test_decode_rejects_bad_codes():
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mu_law_decode(torch.tensor([0, 256]))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        mu_law_decode(torch.tensor([-1]))
    with pytest.raises(TypeError):
        mu_law_decode(torch.tensor([0.5]))
    with pytest.raises(ValueError):
        mu_law_encode(torch.zeros(3), mu=0)
