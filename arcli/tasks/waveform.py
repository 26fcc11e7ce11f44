"""The samples a WaveNet-shaped audio model reads and writes: 8-bit mu-law codes for the paper's
categorical head, 16-bit PCM codes (k / 32768) for the gaussian head (arcli/models/wavenet.py); and
how a gaussian-head WaveNet is sampled, one real value at a time, beside the token engine
(arcli/decoding/continuous.py)."""

from __future__ import annotations

import torch

from arcli.audio.mulaw import mu_law_decode, mu_law_encode
from arcli.decoding.continuous import GaussianSteps, sample_frames
from arcli.errors import OptionError
from arcli.models.wavenet import PCM16_STEP, WaveNet, WaveNetConfig


def encode_samples(audio: torch.Tensor, config: WaveNetConfig) -> torch.Tensor:
    """Audio in [-1, 1] -> the model's codes: 16-bit ones (k / 32768) for a gaussian head, else mu-law."""
    if config.output == "gaussian":
        return torch.round(audio / PCM16_STEP).clamp(-32768, 32767).to(torch.int16)
    mu = config.quantization_channels - 1
    return mu_law_encode(audio, mu).to(torch.uint8 if mu <= 255 else torch.int32)


def decode_samples(codes: torch.Tensor, config: WaveNetConfig) -> torch.Tensor:
    if config.output == "gaussian":
        return codes.float() * PCM16_STEP
    return mu_law_decode(codes, config.quantization_channels - 1)


def check_gaussian_decoding(decoding) -> None:
    """Refuse the token-search options, which mean nothing for real values."""
    if decoding.strategy not in (None, "sample") or decoding.top_k is not None or decoding.top_p is not None:
        raise OptionError("a gaussian-output WaveNet draws real values: of the decoding options it takes --temperature and --seed")


def gaussian_rows(model: WaveNet, strategy, decoding, length: int, condition, rows: int, progress) -> list[torch.Tensor]:
    """16-bit codes of `rows` samples drawn from a gaussian-head WaveNet, one sample at a time
    (the decoding options already passed `check_gaussian_decoding`)."""
    temperature = 1.0 if decoding.temperature is None else decoding.temperature
    audio = sample_frames(GaussianSteps(model), length, rows, condition=condition, seed=strategy.seed, temperature=temperature,
                          progress=progress)  # (rows, length, 1)
    return list(encode_samples(audio[..., 0].float().cpu(), model.config).long())
